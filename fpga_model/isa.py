"""The accelerator's instruction set (paper App. A, Fig. 5; docs/accelerator.md) and its ROM word encoding.

Paper ISA (complete list as the paper gives it):
    LDV  rd, @addr            load a vector from DRAM                       Load/Store unit
    SV   rs, @addr            store a vector to DRAM                        Load/Store unit
    ADD  SUB  MUL  DIV        rd, ra, rb   element-wise ("row-wise")        Row-wise unit
    EXP  SIG                  rd, ra       element-wise exp / sigmoid       Row-wise unit
    NORM rd, ra               rd = ra / sqrt(mean(ra^2) + eps)              RMS unit
    TMATMUL rd, ra, @addr     rd = W @ ra, W ternary, streamed from DRAM    Ternary MatMul unit

Our extensions (marked EXT below, and in the docs), each needed to run the real model (E2/E4/E6 in docs/equations.md):
    QUANT rd, ra              E2 per-vector int8 absmax quantization; rd holds int8 codes q and its
                              scale s (the paper's ISA has no max-reduction or quantization op).
    #imm operand              ADD/SUB/MUL/DIV accept one scalar immediate instead of a register,
                              e.g. `SUB r2, #1.0, r3` computes 1 - f without a ones vector in DRAM.
    TMATMUL scaling           TMATMUL of quantized codes writes acc * beta / s (E4 integer form);
                              beta sits in the matrix header in DRAM, s travels with the register.
SiLU is not an instruction: the compiler emits SIG + MUL, as the paper's ISA forces.

Address operands: `@name` / `@0x40` are relative to the layer base the host sets before each launch
(one block program serves every layer), `@@name` / `@@0x40` are absolute (shared buffers).

ROM word (64 bits):  [63:59] opcode  [58:56] rd  [55:53] ra  [52:50] rb  [49] imm-in-ra
                     [48] imm-in-rb  [47] absolute address  [31:0] address or float32 immediate bits.
"""
import struct
from dataclasses import dataclass
from typing import Optional

NUM_REGISTERS = 8          # paper: 8 vector registers, each its own SRAM with 1 read + 1 write port

# ----------------------------------------------------------------------------
# opcodes: name -> (code, functional unit, operand signature, paper or ours)
#   signature letters: d = destination register, s = source register, v = register or #immediate,
#                      a = DRAM address

ROWWISE, RMS, LOADSTORE, TMATMUL_UNIT = "rowwise", "rms", "loadstore", "tmatmul"
UNITS = (ROWWISE, RMS, LOADSTORE, TMATMUL_UNIT)

OPCODES = {
    "LDV":     (0x01, LOADSTORE,    "da",  "paper"),
    "SV":      (0x02, LOADSTORE,    "sa",  "paper"),
    "ADD":     (0x03, ROWWISE,      "dvv", "paper"),
    "SUB":     (0x04, ROWWISE,      "dvv", "paper"),
    "MUL":     (0x05, ROWWISE,      "dvv", "paper"),
    "DIV":     (0x06, ROWWISE,      "dvv", "paper"),
    "EXP":     (0x07, ROWWISE,      "ds",  "paper"),
    "SIG":     (0x08, ROWWISE,      "ds",  "paper"),
    "NORM":    (0x09, RMS,          "ds",  "paper"),
    "TMATMUL": (0x0A, TMATMUL_UNIT, "dsa", "paper"),
    "QUANT":   (0x0B, RMS,          "ds",  "ours (EXT): E2 absmax int8 quantization; reuses the RMS unit's reduction tree"),
}
OPCODE_BY_CODE = {code: name for name, (code, *_rest) in OPCODES.items()}


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction. Register fields are indices 0..7 or None; an immediate replaces a source."""
    op: str
    rd: Optional[int] = None          # destination register (LDV, row-wise, NORM, QUANT, TMATMUL)
    ra: Optional[int] = None          # first source register (SV's source lives here)
    rb: Optional[int] = None          # second source register
    imm: Optional[float] = None       # scalar immediate (EXT), in place of ra or rb
    imm_slot: Optional[str] = None    # "ra" or "rb": which source the immediate replaces
    addr: Optional[int] = None        # DRAM byte address (relative to the layer base unless absolute)
    absolute: bool = False
    line: int = 0                     # source line (for error messages and traces)
    text: str = ""                    # source text

    @property
    def unit(self):
        return OPCODES[self.op][1]

    def reads(self):
        """Registers this instruction reads (each needs that register's read port)."""
        return tuple(r for r in (self.ra, self.rb) if r is not None)

    def writes(self):
        """Registers this instruction writes (each needs that register's write port)."""
        return () if self.rd is None else (self.rd,)

    def uses_dram(self):
        return self.addr is not None


# ----------------------------------------------------------------------------
# 64-bit ROM words

def _f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _bits_f32(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def encode(ins: Instruction) -> int:
    code = OPCODES[ins.op][0]
    word = code << 59
    word |= (ins.rd or 0) << 56
    word |= (ins.ra or 0) << 53
    word |= (ins.rb or 0) << 50
    if ins.imm is not None:
        word |= 1 << (49 if ins.imm_slot == "ra" else 48)
        word |= _f32_bits(ins.imm)
    if ins.addr is not None:
        word |= int(ins.absolute) << 47
        word |= ins.addr & 0xFFFFFFFF
    return word


def decode(word: int) -> Instruction:
    """Inverse of encode (registers that the opcode does not use come back as None)."""
    name = OPCODE_BY_CODE[word >> 59]
    sig = OPCODES[name][2]
    rd, ra, rb = (word >> 56) & 7, (word >> 53) & 7, (word >> 50) & 7
    imm_ra, imm_rb = (word >> 49) & 1, (word >> 48) & 1
    low = word & 0xFFFFFFFF
    fields = dict(op=name)
    if sig[0] == "d":
        fields["rd"] = rd
    if sig == "sa":
        fields["ra"] = ra
    if sig in ("ds", "dsa"):
        fields["ra"] = ra
    if sig == "dvv":
        fields["ra"] = None if imm_ra else ra
        fields["rb"] = None if imm_rb else rb
        if imm_ra or imm_rb:
            fields["imm"], fields["imm_slot"] = _bits_f32(low), ("ra" if imm_ra else "rb")
    if "a" in sig:
        fields["addr"], fields["absolute"] = low, bool((word >> 47) & 1)
    return Instruction(**fields)
