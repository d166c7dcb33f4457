"""Assembler: valid programs assemble to ROM words that decode back; bad programs are refused with
the line number and the reason (unknown opcode, bad register, out-of-range address, ROM overflow...)."""
import numpy as np
import pytest

from fpga_model.assembler import AssemblyError, assemble
from fpga_model.isa import decode

SYMS_REL = {"w": 0, "g": 64}
SYMS_ABS = {"x": 0}
GOOD = """\
; a small valid program
.entry block
LDV     r0, @@x
NORM    r1, r0
LDV     r2, @g
MUL     r1, r1, r2
SUB     r3, #1.0, r1
QUANT   r4, r1
TMATMUL r5, r4, @w
SV      r5, @@0x0
"""


def asm(src, **kw):
    return assemble(src, SYMS_REL, SYMS_ABS, region_bytes=4096, capacity=1 << 20, **kw)


def test_valid_program_roundtrips_through_rom_words():
    p = asm(GOOD)
    assert len(p) == 8 and p.entries == {"block": (0, 8)}
    assert p.rom.dtype == np.uint64
    for word, ins in zip(p.rom, p.instructions):
        back = decode(int(word))
        assert (back.op, back.rd, back.ra, back.rb, back.imm, back.addr, back.absolute) == \
               (ins.op, ins.rd, ins.ra, ins.rb, ins.imm, ins.addr, ins.absolute)
    sub = p.instructions[4]
    assert (sub.op, sub.rd, sub.imm, sub.imm_slot, sub.rb) == ("SUB", 3, 1.0, "ra", 1)
    assert p.instructions[6].addr == 0 and not p.instructions[6].absolute
    assert p.instructions[2].addr == 64


@pytest.mark.parametrize("line, reason", [
    ("FOO r1, r2", "unknown opcode"),
    ("ADD r8, r1, r2", "bad register"),
    ("ADD r1, rx, r2", "bad register"),
    ("LDV r1, @0x2000", "out of range"),                 # beyond the 4096-byte layer region
    ("LDV r1, @@0x200000", "out of range"),              # beyond the 1 MiB DRAM
    ("LDV r1, @0x41", "not 64-byte aligned"),
    ("LDV r1, @nosuch", "unknown layer-relative symbol"),
    ("ADD r1, r2", "takes 3 operands"),
    ("ADD r1, #1, #2", "at most one immediate"),
    ("SUB r1, #one, r2", "bad immediate"),
    (".org 5", "bad directive"),
])
def test_bad_line_is_refused_with_its_line_number(line, reason):
    src = GOOD + line + "\n"
    bad_line_no = GOOD.count("\n") + 1
    with pytest.raises(AssemblyError) as e:
        asm(src)
    assert e.value.line_no == bad_line_no
    assert reason in str(e.value)
    assert f"line {bad_line_no}" in str(e.value)


def test_rom_overflow_names_the_first_line_that_does_not_fit():
    src = "\n".join(["NORM r1, r0"] * 5)
    assert len(asm(src, rom_depth=5)) == 5                      # exactly full is fine
    with pytest.raises(AssemblyError) as e:
        asm(src + "\nNORM r2, r1", rom_depth=5)
    assert e.value.line_no == 6 and "ROM overflow" in str(e.value)


def test_duplicate_entry_and_empty_program_are_refused():
    with pytest.raises(AssemblyError, match="defined twice"):
        asm(".entry a\nNORM r1, r0\n.entry a\nNORM r1, r0")
    with pytest.raises(AssemblyError, match="empty program"):
        asm("; nothing\n")
    with pytest.raises(TypeError):
        assemble(b"NORM r1, r0")
