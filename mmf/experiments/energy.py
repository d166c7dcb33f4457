"""Energy per generated token, estimated two ways, from operation counts (mmf/experiments/flops.py).

1. Arithmetic: inference operations per token x energy per operation, from
   M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V:
       8-bit integer add 0.03 pJ   16-bit float add 0.4 pJ   16-bit float multiply 1.1 pJ
       32-bit float add  0.9 pJ    32-bit float multiply 3.7 pJ
   Ternary/binary products are int8 additions (the accumulator is wider, a 32-bit add is 0.1 pJ in the
   same table: the int8 figure is the optimistic end); float products are counted at fp16 (the
   paper's GPU baselines run in 16-bit) with an fp32 variant beside it.
2. Memory: bytes read per token x DRAM energy per byte. The same paper gives 1.3-2.6 nJ per 64-bit
   DRAM access, i.e. 162.5-325 pJ per byte; both ends are reported. Bytes: every weight matrix once
   per token at batch 1 (2-bit ternary codes, 1-bit binary signs, fp16 floats) plus one embedding row,
   plus the carried state (a Transformer reads its whole fp16 KV cache every token; the MLGRU reads and
   writes an L x D fp16 state).

Elementwise work (norms, gates, softmax, quantizers) is left out of (1), as in flops.py. Beside both,
the FPGA cycle model's J/token where it applies (MatMul-free LM with ternary weights): its simulated
time per token x the paper's measured active board power (fpga_model/paper_data.py), i.e. a whole
board's energy, not the arithmetic's.
"""
from __future__ import annotations

from mmf.experiments.flops import inference_ops

PJ = 1e-12
HOROWITZ_45NM_PJ = {"int8_add": 0.03, "fp16_add": 0.4, "fp16_mul": 1.1, "fp32_add": 0.9, "fp32_mul": 3.7}
DRAM_PJ_PER_BYTE = (1300.0 / 8, 2600.0 / 8)       # Horowitz ISSCC 2014: 1.3-2.6 nJ per 64-bit access

# the released MatMul-free models' shapes (Zhu et al. 2024; fpga_model/paper_data.py RELEASED)
RELEASED_SHAPES = {"370M": dict(hidden_size=1024, num_layers=24, vocab_size=32000),
                   "1.3B": dict(hidden_size=2048, num_layers=24, vocab_size=32000),
                   "2.7B": dict(hidden_size=2560, num_layers=32, vocab_size=32000)}


def energy_per_token(config, context: int) -> dict:
    """Joules per generated token at `context` tokens of context: arithmetic at fp16 and fp32 float
    precision, memory at both ends of the DRAM range, and the byte and operation counts used."""
    ops = inference_ops(config, context)
    e = HOROWITZ_45NM_PJ
    arith16 = ops.int_add * e["int8_add"] + ops.float_add * e["fp16_add"] + ops.float_mul * e["fp16_mul"]
    arith32 = ops.int_add * e["int8_add"] + ops.float_add * e["fp32_add"] + ops.float_mul * e["fp32_mul"]
    nbytes = ops.weight_bytes + ops.state_bytes
    return {"int_add": ops.int_add, "float_add": ops.float_add, "float_mul": ops.float_mul,
            "weight_bytes": ops.weight_bytes, "state_bytes": ops.state_bytes,
            "arith_j_fp16": arith16 * PJ, "arith_j_fp32": arith32 * PJ,
            "memory_j_low": nbytes * DRAM_PJ_PER_BYTE[0] * PJ, "memory_j_high": nbytes * DRAM_PJ_PER_BYTE[1] * PJ}


def fpga_energy_per_token(config, ddr_bits: int = 512) -> float | None:
    """The FPGA cycle model's J/token (timing-only run of one token x the paper's board power for the
    nearest measured width, at that width's clock), or None where the model does not apply (anything
    but the MatMul-free LM with ternary weights and the official output gate). ddr_bits=512 is the
    paper's burst projection, 8 its measured configuration."""
    if type(config).arch != "mmfree" or config.weights != "ternary" or config.output_gate != "official":
        return None
    from fpga_model.accelerator import Accelerator
    from fpga_model.hardware import Hardware
    from fpga_model.paper_data import TABLE5, board_power_w
    d = config.hidden_size
    clock = TABLE5[min(TABLE5, key=lambda k: abs(k - d))]["clock_mhz"]
    _, report = Accelerator(config, None, Hardware(clock_mhz=clock, ddr_bits=ddr_bits)).step()
    return report.energy_j(board_power_w(d)[0])
