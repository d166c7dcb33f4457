"""The accelerator's knobs: clock, DRAM access width, cores, lanes, and every unit latency.

Only the two constants in memory.CALIBRATED are fitted to the paper. Everything here is an
architectural choice with a documented default; the paper states none of these latencies (it
states the structure: LUT squaring, a pairwise averaging tree and a divide in the RMS unit; an SRAM
FIFO feeding a ternary-add stage in the TMATMUL unit). The measured 8-bit design is insensitive to
them (TMATMUL streaming is >99% of its cycles); the 512-bit projection is not, see paper.py.
"""
from dataclasses import dataclass, field
from typing import Optional

from .memory import DDR4, _check_clock, _check_cores


@dataclass(frozen=True)
class Hardware:
    clock_mhz: float = 60.0            # core clock (Table 5: 60 / 54 / 52 MHz at d = 512 / 1024 / 2048)
    ddr_bits: int = 8                  # useful bits per DRAM access: 8 measured, 512 in the burst projection
    cores: int = 1                     # cores on the board (they share the 4 DDR4 channels)
    vector_lanes: int = 64             # elements per cycle in the row-wise and RMS units (assumption)
    tmatmul_lanes: Optional[int] = None  # ternary weights per cycle in the add stage; None = one access's worth
    rom_depth: int = 1024              # instruction ROM words
    rms_eps: float = 1e-6              # the RMS unit's epsilon (E1/E4, docs/equations.md)
    # latencies in core cycles (pipeline depth after the last element enters the unit)
    issue: int = 1                     # PC -> ROM -> register router: one instruction per cycle at most
    add_latency: int = 2               # ADD / SUB
    mul_latency: int = 3               # MUL, and the TMATMUL writeback scaling by beta / s
    div_latency: int = 12              # DIV, the RMS unit's final divide, QUANT's 127 / max
    lut_latency: int = 3               # EXP, SIG and the RMS unit's squaring lookup table
    sqrt_latency: int = 8              # RMS unit: square root of the mean square
    tree_stage: int = 1                # one level of the pairwise averaging / max tree
    fifo_fill: int = 4                 # TMATMUL: DRAM FIFO + ternary adder tree before the first sum leaves
    ls_latency: int = 2                # Load/Store: register-file write/read pipeline around DRAM data
    ddr: DDR4 = field(default_factory=DDR4)

    def __post_init__(self):
        _check_clock(self.clock_mhz)
        _check_cores(self.cores)
        if isinstance(self.ddr_bits, bool) or not isinstance(self.ddr_bits, int) or self.ddr_bits < 8 \
                or self.ddr_bits & (self.ddr_bits - 1):
            raise ValueError(f"ddr_bits must be a power of two >= 8 (8 measured, 512 projected), got {self.ddr_bits!r}")
        for name in ("vector_lanes", "rom_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Hardware.{name} must be an int >= 1, got {v!r}")
        if self.tmatmul_lanes is not None and (not isinstance(self.tmatmul_lanes, int) or self.tmatmul_lanes < 1):
            raise ValueError(f"Hardware.tmatmul_lanes must be None or an int >= 1, got {self.tmatmul_lanes!r}")

    @property
    def access_bytes(self):
        return self.ddr_bits // 8

    @property
    def weights_per_cycle(self):
        """The ternary-add stage's width: by default it keeps pace with one access (4 weights per byte)."""
        return self.tmatmul_lanes or 4 * self.access_bytes

    @property
    def access_cycles(self):
        return self.ddr.access_cycles(self.clock_mhz, self.ddr_bits, self.cores)
