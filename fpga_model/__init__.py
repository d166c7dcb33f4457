"""fpga_model: a cycle-approximate model of the paper's FPGA accelerator (App. A; docs/accelerator.md) that runs
real mmf models and reproduces the paper's Tables 4 and 5.

    isa.py        instructions (paper ISA + our marked extensions), 64-bit ROM words
    assembler.py  text assembly -> instruction ROM, errors with line numbers
    ternary.py    the 2-bit ternary weight code in DRAM
    dram.py       the DRAM image: headers, regions, layer-relative addressing
    memory.py     DDR4 timing (access round trip, arbitration, host MMIO) and the calibrated constants
    hardware.py   clock, widths, lanes, unit latencies
    units.py      the four functional units: values and cycles
    core.py       PC + stall rule, register ports, out-of-order completion; timing and execution
    compiler.py   mmf model -> block/head programs + DRAM image
    simulate.py   simulate_block(d, clock_mhz, ddr_bits=8, cores=1)
    accelerator.py per-token driver: host steps, layers, head, greedy generation, token reports
    cpu_reference.py  the CPU integer path (E4 integer form) the accelerator must match
    report.py     busy/stall breakdowns
    sweep.py      design-space sweep + roofs (python -m fpga_model.sweep)
    plots.py      unit timeline, Table 5 bars, roofline
    paper_data.py the paper's Table 4/5 numbers and projections (inputs, never used to count cycles)
    paper.py      python -m fpga_model.paper: paper vs model vs error
    __main__.py   python -m fpga_model --checkpoint ... --prompt ...: accelerator vs CPU tokens + report
"""
from .assembler import AssemblyError, assemble
from .core import SimulationError
from .hardware import Hardware
from .memory import CALIBRATED, DDR4
from .simulate import BlockResult, simulate_block

__all__ = ["assemble", "AssemblyError", "SimulationError", "Hardware", "DDR4", "CALIBRATED",
           "simulate_block", "BlockResult"]
