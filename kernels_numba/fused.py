"""Fused row kernels: RMSNorm + int8 activation quantization in one pass (E1 + E2), the RMSNorm
backward (E1), and the cross-entropy (E11) forward/backward, all over rows of a 2-D array; and the
gate nonlinearities of E6/E8 in one elementwise pass.

Why fuse: the NumPy reference makes ~10 full passes over the activations for norm + quant
(square, mean, sqrt, scale, gain, abs, max, scale, round, clip, divide), each allocating a temporary.
Here one row is read once, kept in cache, and written once. The floating-point operations are the
reference's, in the reference's order (no fastmath), so results agree to the last bit except for
the summation order of the row mean (accumulated in float64 here).

Shapes: x (M, K) float32 or float64 C-contiguous, g (K,), per-row outputs (M,).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .expf import exp_native, sigmoid32

ACT_QMAX = 127.0
ACT_EPS = 1e-5


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) of two floats as LLVM's maxnum, which loops vectorize (a running max written with
    Python's max or an if does not: measured 10x slower over a row). The same value as max() for
    every non-NaN input; a NaN operand is ignored instead of propagated."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(sig.return_type)
        name = "llvm.maxnum.f32" if ty == ir.FloatType() else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty]), name)
        return builder.call(fn, args)
    return a(a, b), codegen


# ----------------------------------------------------------------------------
# E1 + E2 forward: xn = x * rstd * g, s = 127 / max(|xn|, 1e-5), q = clip(round(xn * s), -128, 127)

@njit(fastmath=True, cache=True)
def _sum_squares(x, m):
    """float64 sum of squares of row m of the 2-D x; fastmath (reassociation) lets it vectorize: only
    the summation order changes, which float64 accumulation makes invisible at float32 precision.
    (The row is indexed in place: passing the view x[m] instead measured 15x slower.)"""
    ss = 0.0
    for k in range(x.shape[1]):
        ss += np.float64(x[m, k]) * np.float64(x[m, k])
    return ss


@njit(inline="always")
def _row_rstd(x, m, K, c, rstd):
    """rstd[m] = 1 / sqrt(mean(x[m]^2) + eps) in x's dtype. c = (eps, 127, 1e-5, 1) in x's dtype."""
    rstd[m] = _sum_squares(x, m) / K                                                 # stored -> rounded to x's dtype, like np.mean
    rstd[m] = c[3] / np.sqrt(rstd[m] + c[0])
    return rstd[m]


def constants(dtype, eps):
    """(eps, 127, 1e-5, 1) in the model's dtype, so the kernels compute in that dtype like NumPy does."""
    return np.array([eps, ACT_QMAX, ACT_EPS, 1.0], dtype)


# finite-math flags only: no reassociation, no reciprocals, so every value is the same as without them,
# but the row max and the elementwise loops may vectorize
SAFE_FAST = {"nnan", "ninf", "nsz"}


@njit(parallel=True, fastmath=SAFE_FAST, cache=True)
def norm_quant_kernel(x, g, c, q, s, rstd, xq):
    """Fills s (M,) scales, rstd (M,), and whichever of q (M, K) int8 codes / xq (M, K) = q / s has
    rows (the other may be passed with 0 rows: the float path needs only x~, the integer path q)."""
    M, K = x.shape
    want_q, want_xq = q.shape[0] == M, xq.shape[0] == M
    for m in prange(M):
        r = _row_rstd(x, m, K, c, rstd)
        absmax = c[2]                                                # max(|xn|, 1e-5) as a running max
        for k in range(K):
            absmax = maxnum(absmax, abs(x[m, k] * r * g[k]))
        s[m] = c[1] / absmax
        sm = s[m]
        if want_q:
            for k in range(K):
                q[m, k] = np.int8(min(max(np.rint(x[m, k] * r * g[k] * sm), -128.0), 127.0))
        if want_xq:
            for k in range(K):
                xq[m, k] = min(max(np.rint(x[m, k] * r * g[k] * sm), -128.0), 127.0) / sm


def norm_quant(x2, g, eps, want_q=True, want_xq=True):
    """x2 (M, K) -> (q int8 (M, K) or None, s (M,), rstd (M,), xq (M, K) or None)."""
    M, K = x2.shape
    q = np.empty((M if want_q else 0, K), np.int8)
    s = np.empty(M, x2.dtype)
    rstd = np.empty(M, x2.dtype)
    xq = np.empty((M if want_xq else 0, K), x2.dtype)
    norm_quant_kernel(x2, g, constants(x2.dtype, eps), q, s, rstd, xq)
    return (q if want_q else None), s, rstd, (xq if want_xq else None)


@njit(parallel=True, fastmath=SAFE_FAST, cache=True)
def requant_kernel(x, g, rstd, s, xq):
    """The fused BitLinear backward's recompute: xq = clip(round(x * rstd * g * s)) / s from the
    stored x, rstd and s (the forward's own statistics, so the result is the forward's x~ exactly)."""
    M, K = x.shape
    for m in prange(M):
        r = rstd[m]
        sm = s[m]
        for k in range(K):
            code = min(max(np.rint(x[m, k] * r * g[k] * sm), -128.0), 127.0)
            xq[m, k] = code / sm


# ----------------------------------------------------------------------------
# E1 plain RMSNorm forward and backward

@njit(parallel=True, cache=True)
def rmsnorm_kernel(x, g, c, y, rstd):
    M, K = x.shape
    for m in prange(M):
        r = _row_rstd(x, m, K, c, rstd)
        for k in range(K):
            y[m, k] = x[m, k] * r * g[k]


ROWS_PER_CHUNK = 64


@njit(parallel=True, fastmath=True, cache=True)
def rmsnorm_backward_kernel(dy, x, g, rstd, dx, dg_partial, add):
    """dx = rstd * (dxhat - xhat * mean(dxhat * xhat)) with xhat = x * rstd, dxhat = dy * g, and the
    gain gradient dg = sum_m dy * xhat accumulated per chunk of rows (dg_partial (chunks, K), summed
    by the caller) so that threads never write the same element. fastmath: the backward only needs
    float rounding-level agreement, and it lets the row reductions vectorize. If add has M rows,
    dx = add + (the above) instead: a gradient joining another (a residual, a shared input) without a
    separate pass; dx may be add itself."""
    M, K = x.shape
    n_chunks = dg_partial.shape[0]
    has_add = add.shape[0] == M
    for c in prange(n_chunks):
        for k in range(K):
            dg_partial[c, k] = 0.0
        for m in range(c * ROWS_PER_CHUNK, min(M, (c + 1) * ROWS_PER_CHUNK)):
            r = rstd[m]
            acc = 0.0
            for k in range(K):
                acc += np.float64(dy[m, k] * g[k]) * np.float64(x[m, k] * r)
            mean = acc / K
            for k in range(K):
                xhat = x[m, k] * r
                v = r * (dy[m, k] * g[k] - xhat * mean)
                dx[m, k] = add[m, k] + v if has_add else v
                dg_partial[c, k] += np.float64(dy[m, k] * xhat)


def rmsnorm_backward_rows(dy2, x2, g, rstd, add=None, out=None):
    """(M, K) arrays -> dx (M, K), dg (K,). add (M, K): return add + dx instead (written into out,
    which may be add itself; a new array if out is None)."""
    M, K = x2.shape
    dx = np.empty_like(x2) if out is None else out
    dg_partial = np.empty((-(-M // ROWS_PER_CHUNK), K), np.float64)
    rmsnorm_backward_kernel(dy2, x2, g, rstd, dx, dg_partial, x2[:0] if add is None else add)
    return dx, dg_partial.sum(axis=0).astype(x2.dtype)


# ----------------------------------------------------------------------------
# E11 cross-entropy: logsumexp per row in one pass; the backward writes softmax - onehot directly

@njit(parallel=True, fastmath=True, cache=True)
def cross_entropy_kernel(logits, targets, lse, nll):
    """lse = max + log(sum exp(z - max)), the sum in float64. The exp is expf.py's (within 1 ulp) for
    float32 logits; fastmath lets the float64 sum vectorize (its order changes, invisibly at float32)."""
    N, V = logits.shape
    for n in prange(N):
        mx = logits[n, 0]
        for v in range(V):
            mx = maxnum(mx, logits[n, v])
        acc = 0.0
        for v in range(V):
            acc += np.float64(exp_native(logits[n, v] - mx))
        lse[n] = mx + np.log(acc)
        nll[n] = lse[n] - logits[n, targets[n]]


@njit(parallel=True, cache=True)
def cross_entropy_backward_kernel(logits, targets, lse, dlogits):
    N, V = logits.shape
    inv_n = logits.dtype.type(1.0 / N)
    for n in prange(N):
        for v in range(V):
            dlogits[n, v] = exp_native(logits[n, v] - lse[n]) * inv_n
        dlogits[n, targets[n]] -= inv_n


# ----------------------------------------------------------------------------
# E6/E8 gate nonlinearities, elementwise over a flat float32 array, on expf.py's vectorizable exp
# (NumPy makes 4-6 passes with a temporary each; this is one pass, parallel and vectorized)

@njit(parallel=True, error_model="numpy", cache=True)
def sigmoid_kernel(z, out):
    for k in prange(z.shape[0]):
        out[k] = sigmoid32(z[k])


@njit(parallel=True, error_model="numpy", cache=True)
def silu_kernel(z, out):
    """silu(z) = z sigmoid(z)"""
    for k in prange(z.shape[0]):
        out[k] = z[k] * sigmoid32(z[k])


@njit(parallel=True, error_model="numpy", cache=True)
def silu_grad_kernel(z, out):
    """silu'(z) = s (1 + z (1 - s)), s = sigmoid(z) (mmf.layers.activations.silu_grad)"""
    one = np.float32(1.0)
    for k in prange(z.shape[0]):
        s = sigmoid32(z[k])
        out[k] = s * (one + z[k] * (one - s))


def gate(z, kernel):
    """z float32 (any shape) -> kernel applied elementwise, the same shape."""
    flat = np.ascontiguousarray(z).reshape(-1)
    out = np.empty_like(flat)
    kernel(flat, out)
    return out.reshape(z.shape)


# ----------------------------------------------------------------------------
# E3 ternary weights W~ = clip(round(W / beta), -1, 1) * beta in one pass (NumPy makes six, with an
# int8 and a float copy); beta itself stays NumPy's mean, so the codes are the reference's exactly

@njit(parallel=True, cache=True)
def ternary_weight_kernel(W, inv_beta, beta, Wq):
    """W (N, K) -> Wq (N, K) = clip(rint(W * inv_beta), -1, 1) * beta, in W's dtype (inv_beta, beta too)."""
    N, K = W.shape
    for n in prange(N):
        for k in range(K):
            Wq[n, k] = min(max(np.rint(W[n, k] * inv_beta), -1.0), 1.0) * beta


# ----------------------------------------------------------------------------
# E10 embedding gradient: dE[ids[n]] += dx[n], a scatter-add

@njit(parallel=True, cache=True)
def embedding_backward_kernel(ids, dx, dE):
    """ids (N,) int64, dx (N, D), dE (V, D) zeroed. Threads split the D columns, and every thread
    adds the rows in token order: no two threads write one element, and each element receives its
    additions in np.add.at's order, so the result is the reference's bit for bit."""
    N, D = dx.shape
    n_blocks = (D + 31) // 32
    for blk in prange(n_blocks):
        lo, hi = blk * 32, min(D, (blk + 1) * 32)
        for n in range(N):
            row = ids[n]
            for d in range(lo, hi):
                dE[row, d] += dx[n, d]
