"""`simulate_block`: cycles and time of one E9 block at width d on one core (the paper's Table 5 unit).

Compiles the real block program for a model of width d (GLU width by the E8 rule unless given),
lays its weights out in DRAM for the access width, and runs the core's scoreboard over it. Nothing
is interpolated from the paper's tables: a width the paper never built (d = 768) goes through the
same program and the same DDR4 model.
"""
from dataclasses import dataclass

from mmf.models.config import glu_intermediate_size

from .compiler import compile_block_layout
from .core import Core, Trace
from .hardware import Hardware
from .report import unit_breakdown


@dataclass
class BlockResult:
    d: int
    intermediate_size: int
    hw: Hardware
    trace: Trace
    program: object

    @property
    def cycles(self):
        return self.trace.cycles

    @property
    def milliseconds(self):
        return self.cycles / (self.hw.clock_mhz * 1e3)

    @property
    def dram_beats(self):
        return sum(e.beats for e in self.trace.events)

    @property
    def tmatmul_share(self):
        """Fraction of the block's cycles during which the TMATMUL unit is busy."""
        return unit_breakdown(self.trace)["tmatmul"]["busy"] / self.cycles

    def breakdown(self):
        return unit_breakdown(self.trace)

    def __repr__(self):
        return (f"BlockResult(d={self.d}, I={self.intermediate_size}, clock={self.hw.clock_mhz} MHz, "
                f"ddr_bits={self.hw.ddr_bits}, cores={self.hw.cores}: {self.cycles} cycles, "
                f"{self.milliseconds:.3f} ms)")


def simulate_block(d, clock_mhz, ddr_bits=8, cores=1, intermediate_size=None, **hardware):
    """One block at width d on one core of a `cores`-core board.

    d                  model width (hidden_size); intermediate_size None -> E8 rule
    clock_mhz          core clock
    ddr_bits           useful bits per DRAM access (8 = the measured design, 512 = the burst projection)
    cores              cores sharing the board's 4 DDR4 channels (contention, memory.py)
    **hardware         any other Hardware field (vector_lanes, tmatmul_lanes, latencies, ddr=DDR4(...))
    Returns a BlockResult with .cycles, .milliseconds, .trace, .breakdown()."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int (the model width), got {d!r}")
    I = glu_intermediate_size(d) if intermediate_size is None else intermediate_size
    if isinstance(I, bool) or not isinstance(I, int) or I < 1:
        raise ValueError(f"intermediate_size must be None or a positive int, got {intermediate_size!r}")
    hw = Hardware(clock_mhz=clock_mhz, ddr_bits=ddr_bits, cores=cores, **hardware)
    compiled = compile_block_layout(d, I, hw.access_bytes, hw.rom_depth)
    core = Core(compiled.program, compiled.image, hw, execute=False)
    trace = core.run("block", layer=0)
    return BlockResult(d, I, hw, trace, compiled.program)
