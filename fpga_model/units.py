"""The four functional units: what each instruction computes (on real values) and how many cycles it
takes (paper Fig. 5; docs/accelerator.md). Values are NumPy vectors in the model's dtype; a quantized register
holds int8 codes q and their scale s (E2).

    Row-wise   ADD SUB MUL DIV EXP SIG      vector_lanes elements per cycle + a pipeline latency
    RMS        NORM: LUT square -> pairwise averaging tree -> sqrt -> divide every element
               QUANT (ours): |x| -> max tree -> s = 127/max -> multiply, round, clip (E2)
    Load/Store LDV SV                       header + payload through the DRAM interface
    TMATMUL    copy the input codes in, stream the ternary rows DRAM -> SRAM FIFO -> ternary add,
               write acc * beta / s per output row (E4 integer form)
"""
import math

import numpy as np

from mmf.layers.activations import sigmoid
from mmf.layers.quant import activation_quant_int

from .dram import HEADER_BYTES
from .ternary import row_bytes


def _passes(n, lanes):
    return -(-n // lanes)


def _levels(n):
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


# ----------------------------------------------------------------------------
# cycles

def rowwise_cycles(op, n, hw):
    latency = {"ADD": hw.add_latency, "SUB": hw.add_latency, "MUL": hw.mul_latency,
               "DIV": hw.div_latency, "EXP": hw.lut_latency, "SIG": hw.lut_latency}[op]
    return _passes(n, hw.vector_lanes) + latency


def norm_cycles(n, hw):
    square = _passes(n, hw.vector_lanes) + hw.lut_latency             # stage 1: copy + LUT square
    tree = _levels(n) * hw.tree_stage + hw.sqrt_latency               # stage 2: averaging tree, sqrt
    divide = _passes(n, hw.vector_lanes) + hw.div_latency             # stage 3: divide every element
    return square + tree + divide


def quant_cycles(n, hw):
    absmax = _passes(n, hw.vector_lanes) + _levels(n) * hw.tree_stage  # |x| into the max tree
    scale = hw.div_latency                                               # s = 127 / max
    codes = _passes(n, hw.vector_lanes) + hw.mul_latency                 # round(x * s), clip
    return absmax + scale + codes


def transfer_beats(nbytes, hw):
    return -(-nbytes // hw.access_bytes)


def load_store_cycles(n, hw, load):
    """LDV reads the 16-byte header then n float32 elements; SV writes the payload only."""
    nbytes = 4 * n + (HEADER_BYTES if load else 0)
    return transfer_beats(nbytes, hw) * hw.access_cycles + hw.ls_latency


def tmatmul_cycles(rows, cols, hw):
    """Returns (total cycles, cycles the source register's read port is held, DRAM beats)."""
    copy_in = _passes(cols, hw.vector_lanes)                           # input codes -> the unit's buffer
    beats = transfer_beats(HEADER_BYTES, hw) + rows * row_bytes(cols, hw.access_bytes) // hw.access_bytes
    stream = beats * hw.access_cycles                                  # DRAM -> SRAM FIFO
    adds = rows * _passes(cols, hw.weights_per_cycle)                  # FIFO -> ternary add stage
    total = copy_in + max(stream, adds) + hw.fifo_fill + hw.mul_latency
    return total, copy_in, beats


# ----------------------------------------------------------------------------
# values

def rowwise_value(op, a, b, dtype):
    if op in ("EXP", "SIG"):
        return (np.exp(a) if op == "EXP" else sigmoid(a)).astype(dtype, copy=False)
    a = a if isinstance(a, np.ndarray) else dtype.type(a)             # immediates become dtype scalars
    b = b if isinstance(b, np.ndarray) else dtype.type(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide}[op](a, b)
    return np.asarray(out, dtype=dtype)


def tree_mean(v):
    """Mean by repeatedly averaging neighbouring pairs (the paper's RMS unit, stage 2).

    A length that is not a power of two is zero-padded to one, and the result is rescaled by
    padded/n once at the end (one extra multiply)."""
    n = v.shape[0]
    size = 1 << max(0, (n - 1).bit_length())
    work = np.zeros(size, dtype=v.dtype)
    work[:n] = v
    while work.shape[0] > 1:
        work = (work[0::2] + work[1::2]) * v.dtype.type(0.5)
    return work[0] * v.dtype.type(size / n)


def norm_value(x, eps):
    """E1 without the gain: x * 1/sqrt(mean(x^2) + eps) (the compiler multiplies by the gain after)."""
    rstd = x.dtype.type(1.0) / np.sqrt(tree_mean(x * x) + x.dtype.type(eps))
    return x * rstd


def quant_value(x):
    """E2: (q int8, s) for one vector; identical to mmf.layers.quant.activation_quant_int (max is order-free)."""
    q, s = activation_quant_int(x[None, :])
    return q[0], s[0, 0]


def tmatmul_value(Wt, q, s, beta, dtype):
    """E4 integer form: acc = sum of +-q (exact; done as a float64 product of small integers, which is
    exact below 2^53), then y = acc * (beta / s)."""
    acc = Wt.astype(np.float64) @ q.astype(np.float64)                # (rows,) exact integers
    return acc.astype(dtype) * (dtype.type(beta) / s)
