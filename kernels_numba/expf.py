"""A float32 exp (and the sigmoid built on it) that Numba can vectorize.

Numba calls the C library's scalar `expf` for `np.exp` on a float32 (there is no vector math library
here), about 6-10 ns per call: the gate nonlinearities of one 370M-shape decoding step (~190k of
them, E6/E8) cost ~1.2 ms that way, more than a fifth of the step. This exp is the classic one:

    exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]

with ln 2 split in two constants so r is exact, exp(r) a degree-7 polynomial (Cephes' expf
coefficients), and 2^n written straight into a float32's exponent bits. Every step is plain
arithmetic, so LLVM vectorizes loops that call it. Measured against NumPy's float32 exp over
[-87, 88]: within 2 units in the last place (tests/test_kernels_expf.py).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

LOG2E = np.float32(1.44269504088896341)
LN2_HI = np.float32(0.693359375)                 # ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits
LN2_LO = np.float32(-2.12194440e-4)
P0, P1, P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
P3, P4, P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
X_MIN, X_MAX = np.float32(-87.0), np.float32(88.0)    # 2^n stays a normal float32 (n in [-126, 127])


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer `bits` (a reinterpretation,
    no conversion; Numba widens int32 arithmetic to int64, hence the truncation)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen


@njit(inline="always")
def exp32(x):
    """exp(x) for a float32 x, clamped to [-87, 88] (exp(-87) = 1.6e-38, exp(88) = 1.7e38)."""
    x = min(max(x, X_MIN), X_MAX)
    n = np.floor(x * LOG2E + np.float32(0.5))
    r = x - n * LN2_HI - n * LN2_LO                                  # exact reduction to |r| <= ln2/2
    p = (((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5) * r * r + r + np.float32(1.0)
    return p * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))   # times 2^n (int32: vectorizes wider)


@njit(inline="always")
def sigmoid32(z):
    """1 / (1 + exp(-z)) in float32 (E6 forget gate, and inside SiLU)."""
    one = np.float32(1.0)
    return one / (one + exp32(-z))


def exp_native(x):
    """exp in x's own precision: exp32 for a float32 (vectorizable), np.exp for anything else
    (float64 keeps the library's full precision). Usable inside Numba-compiled code only."""
    raise NotImplementedError("exp_native is for Numba-compiled code")


@overload(exp_native)
def _exp_native(x):
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: np.exp(x)


@njit(cache=True)
def exp_array(x, out):
    """out = exp32(x) elementwise (1-D float32): what the tests compare against NumPy's exp."""
    for k in range(x.shape[0]):
        out[k] = exp32(x[k])
