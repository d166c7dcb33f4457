"""Text assembly -> instruction ROM, refusing bad programs with the line number and the reason.

Format, one instruction per line; `;` starts a comment; case-insensitive mnemonics:

    .entry block                 ; a named entry point: the host starts the core here
    LDV     r0, @@x              ; @@ = absolute address (shared region), by symbol or number
    NORM    r1, r0
    LDV     r2, @attn_norm       ; @  = relative to the layer base the host sets before a launch
    MUL     r1, r1, r2
    SUB     r3, #1.0, r2         ; #imm: a scalar immediate (our extension) in place of one source
    TMATMUL r4, r3, @attn.f_proj
    SV      r0, @@0x40           ; numeric addresses (decimal or 0x..) must be 64-byte aligned

A section runs from its `.entry` to the next one (or the end); instructions before the first
`.entry` form the section "main". The ROM is the concatenation of the sections; `rom_depth` is its
capacity in 64-bit words.
"""
import re
from dataclasses import dataclass, field

import numpy as np

from .dram import ALIGN, DEFAULT_CAPACITY
from .isa import NUM_REGISTERS, OPCODES, Instruction, encode

DEFAULT_ROM_DEPTH = 1024


class AssemblyError(ValueError):
    """A program the assembler refuses; names the line and the reason."""

    def __init__(self, line_no, reason, text=""):
        self.line_no, self.reason, self.text = line_no, reason, text
        where = f"line {line_no}" + (f" ({text.strip()!r})" if text.strip() else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class Program:
    """An assembled program: the ROM words, the decoded instructions and the entry points."""
    rom: np.ndarray                                   # (n,) uint64 ROM words
    instructions: list                                # decoded Instruction per ROM word
    entries: dict = field(default_factory=dict)       # name -> (first, end) ROM indices
    source: str = ""

    def section(self, entry):
        if entry not in self.entries:
            raise ValueError(f"program has no entry point {entry!r}; it has {sorted(self.entries)}")
        first, end = self.entries[entry]
        return self.instructions[first:end]

    def __len__(self):
        return len(self.instructions)


_REG = re.compile(r"^r(\d+)$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]*$")


def _register(tok, line_no, text):
    m = _REG.match(tok)
    if not m:
        raise AssemblyError(line_no, f"bad register {tok!r}: registers are r0..r{NUM_REGISTERS - 1}", text)
    r = int(m.group(1))
    if r >= NUM_REGISTERS:
        raise AssemblyError(line_no, f"bad register {tok!r}: the register file has only "
                                     f"{NUM_REGISTERS} registers (r0..r{NUM_REGISTERS - 1})", text)
    return r


def _immediate(tok, line_no, text):
    try:
        value = float(tok[1:])
    except ValueError:
        raise AssemblyError(line_no, f"bad immediate {tok!r}: write #<number>, e.g. #1.0", text) from None
    if not np.isfinite(value) or abs(value) > 3.4e38:
        raise AssemblyError(line_no, f"immediate {tok!r} is not a finite float32", text)
    return value


def _address(tok, symbols_rel, symbols_abs, region_bytes, capacity, line_no, text):
    absolute = tok.startswith("@@")
    body = tok[2:] if absolute else tok[1:]
    if not tok.startswith("@") or not body:
        raise AssemblyError(line_no, f"bad address {tok!r}: write @name, @0x40 (layer-relative) or @@name (absolute)", text)
    table = symbols_abs if absolute else symbols_rel
    limit = capacity if absolute else region_bytes
    space = "absolute" if absolute else "layer-relative"
    if re.match(r"^(0x[0-9a-fA-F]+|\d+)$", body):
        addr = int(body, 0)
        if addr % ALIGN:
            raise AssemblyError(line_no, f"address {tok} is not {ALIGN}-byte aligned (every DRAM object is)", text)
    elif _NAME.match(body):
        if body not in table:
            known = ", ".join(sorted(table)[:6]) or "none defined"
            raise AssemblyError(line_no, f"unknown {space} symbol {body!r} (known: {known}...)", text)
        addr = table[body]
    else:
        raise AssemblyError(line_no, f"bad address {tok!r}", text)
    if limit is not None and not (0 <= addr < limit):
        raise AssemblyError(line_no, f"address {tok} = {addr} is out of range for the {space} space "
                                     f"(0..{limit - 1})", text)
    if addr >= 1 << 32:
        raise AssemblyError(line_no, f"address {tok} = {addr} does not fit the 32-bit address field", text)
    return addr, absolute


def parse_line(text, line_no, symbols_rel, symbols_abs, region_bytes, capacity):
    """One source line -> Instruction, ('entry', name) or None for blank/comment lines."""
    code = text.split(";", 1)[0].strip()
    if not code:
        return None
    if code.startswith("."):
        parts = code.split()
        if parts[0].lower() != ".entry" or len(parts) != 2 or not _NAME.match(parts[1]):
            raise AssemblyError(line_no, "bad directive: the only directive is `.entry <name>`", text)
        return ("entry", parts[1])
    mnemonic, _, rest = code.partition(" ")
    op = mnemonic.upper()
    if op not in OPCODES:
        raise AssemblyError(line_no, f"unknown opcode {mnemonic!r}; the ISA has {', '.join(OPCODES)}", text)
    sig = OPCODES[op][2]
    toks = [t.strip() for t in rest.split(",")] if rest.strip() else []
    if len(toks) != len(sig) or any(not t for t in toks):
        raise AssemblyError(line_no, f"{op} takes {len(sig)} operands ({_describe(sig)}), got {len(toks)}", text)
    fields = dict(op=op, line=line_no, text=text.strip())
    sources = []
    for letter, tok in zip(sig, toks):
        if letter == "d":
            fields["rd"] = _register(tok, line_no, text)
        elif letter == "s":
            sources.append(_register(tok, line_no, text))
        elif letter == "v":
            sources.append(_immediate(tok, line_no, text) if tok.startswith("#") else _register(tok, line_no, text))
        elif letter == "a":
            fields["addr"], fields["absolute"] = _address(tok, symbols_rel, symbols_abs, region_bytes,
                                                          capacity, line_no, text)
    for slot, value in zip(("ra", "rb"), sources):
        if isinstance(value, float):
            if "imm" in fields:
                raise AssemblyError(line_no, f"{op} may take at most one immediate operand", text)
            fields["imm"], fields["imm_slot"] = value, slot
        else:
            fields[slot] = value
    return Instruction(**fields)


def _describe(sig):
    names = {"d": "destination register", "s": "source register", "v": "register or #immediate",
             "a": "@address"}
    return ", ".join(names[c] for c in sig)


def assemble(source, symbols_rel=None, symbols_abs=None, region_bytes=None, capacity=DEFAULT_CAPACITY,
             rom_depth=DEFAULT_ROM_DEPTH):
    """Assemble `source` text into a Program. Raises AssemblyError (a ValueError) on the first bad line.

    symbols_rel / symbols_abs  name -> byte address (layer-relative / absolute), e.g. DramImage.symbols()
    region_bytes               size of one layer region (relative addresses must fall inside it)
    capacity                   DRAM bytes (absolute addresses must fall inside it)
    rom_depth                  instruction ROM capacity in words
    """
    if not isinstance(source, str):
        raise TypeError(f"assemble() needs the program text as a str, got {type(source).__name__}")
    if not isinstance(rom_depth, int) or rom_depth <= 0:
        raise ValueError(f"rom_depth must be a positive int, got {rom_depth!r}")
    symbols_rel, symbols_abs = symbols_rel or {}, symbols_abs or {}
    instructions, entries, current = [], {}, None
    for line_no, text in enumerate(source.splitlines(), start=1):
        item = parse_line(text, line_no, symbols_rel, symbols_abs, region_bytes, capacity)
        if item is None:
            continue
        if isinstance(item, tuple):
            name = item[1]
            if name in entries:
                raise AssemblyError(line_no, f"entry point {name!r} is defined twice", text)
            if current is not None:
                entries[current] = (entries[current][0], len(instructions))
            entries[name], current = (len(instructions), len(instructions)), name
            continue
        if len(instructions) >= rom_depth:
            raise AssemblyError(line_no, f"ROM overflow: the program needs more than the ROM's "
                                         f"{rom_depth} words", text)
        if current is None:
            entries["main"], current = (0, 0), "main"
        instructions.append(item)
    if current is not None:
        entries[current] = (entries[current][0], len(instructions))
    if not instructions:
        raise AssemblyError(0, "empty program: no instructions")
    rom = np.array([encode(i) for i in instructions], dtype=np.uint64)
    return Program(rom=rom, instructions=instructions, entries=entries, source=source)
