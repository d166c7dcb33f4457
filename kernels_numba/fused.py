"""Fused row kernels: RMSNorm + int8 activation quantization in one pass (E1 + E2), the RMSNorm
backward (E1), and the cross-entropy (E11) forward/backward, all over rows of a 2-D array.

Why fuse: the NumPy reference makes ~10 full passes over the activations for norm + quant
(square, mean, sqrt, scale, gain, abs, max, scale, round, clip, divide), each allocating a temporary.
Here one row is read once, kept in cache, and written once. The floating-point operations are the
reference's, in the reference's order (no fastmath), so results agree to the last bit except for
the summation order of the row mean (accumulated in float64 here).

Shapes: x (M, K) float32 or float64 C-contiguous, g (K,), per-row outputs (M,).
"""
import numpy as np
from numba import njit, prange

ACT_QMAX = 127.0
ACT_EPS = 1e-5


# ----------------------------------------------------------------------------
# E1 + E2 forward: xn = x * rstd * g, s = 127 / max(|xn|, 1e-5), q = clip(round(xn * s), -128, 127)

@njit(inline="always")
def _row_rstd(x, m, K, c, rstd):
    """rstd[m] = 1 / sqrt(mean(x[m]^2) + eps) in x's dtype. c = (eps, 127, 1e-5, 1) in x's dtype."""
    ss = 0.0                                                         # float64 accumulator
    for k in range(K):
        v = np.float64(x[m, k])
        ss += v * v
    rstd[m] = ss / K                                                 # stored -> rounded to x's dtype, like np.mean
    rstd[m] = c[3] / np.sqrt(rstd[m] + c[0])
    return rstd[m]


def constants(dtype, eps):
    """(eps, 127, 1e-5, 1) in the model's dtype, so the kernels compute in that dtype like NumPy does."""
    return np.array([eps, ACT_QMAX, ACT_EPS, 1.0], dtype)


@njit(parallel=True, cache=True)
def norm_quant_kernel(x, g, c, q, s, rstd, xq):
    """Fills q (M, K) int8 codes, s (M,) scales, rstd (M,) and, if xq has rows, xq (M, K) = q / s."""
    M, K = x.shape
    want_xq = xq.shape[0] == M
    for m in prange(M):
        r = _row_rstd(x, m, K, c, rstd)
        absmax = c[2]                                                # max(|xn|, 1e-5) as a running max
        for k in range(K):
            v = abs(x[m, k] * r * g[k])
            if v > absmax:
                absmax = v
        s[m] = c[1] / absmax
        sm = s[m]
        for k in range(K):
            code = min(max(np.rint(x[m, k] * r * g[k] * sm), -128.0), 127.0)
            q[m, k] = np.int8(code)
            if want_xq:
                xq[m, k] = code / sm


def norm_quant(x2, g, eps, want_xq=True):
    """x2 (M, K) -> (q int8 (M, K), s (M,), rstd (M,), xq (M, K) or None)."""
    M, K = x2.shape
    q = np.empty((M, K), np.int8)
    s = np.empty(M, x2.dtype)
    rstd = np.empty(M, x2.dtype)
    xq = np.empty((M, K) if want_xq else (0, K), x2.dtype)
    norm_quant_kernel(x2, g, constants(x2.dtype, eps), q, s, rstd, xq)
    return q, s, rstd, (xq if want_xq else None)


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)
def rmsnorm_backward_kernel(dy, x, g, rstd, dx):
    """dx = rstd * (dxhat - xhat * mean(dxhat * xhat)), xhat = x * rstd, dxhat = dy * g."""
    M, K = x.shape
    for m in prange(M):
        r = rstd[m]
        acc = 0.0
        for k in range(K):
            acc += np.float64(dy[m, k] * g[k]) * np.float64(x[m, k] * r)
        mean = acc / K
        for k in range(K):
            dx[m, k] = r * (dy[m, k] * g[k] - x[m, k] * r * mean)       # float64 mean: rounding-level differences


@njit(parallel=True, cache=True)
def rmsnorm_dgain_kernel(dy, x, rstd, dg):
    """dg[k] = sum_m dy[m, k] * x[m, k] * rstd[m], parallel over columns (no write conflicts)."""
    M, K = x.shape
    for k in prange(K):
        acc = 0.0
        for m in range(M):
            acc += np.float64(dy[m, k] * (x[m, k] * rstd[m]))
        dg[k] = acc


# ----------------------------------------------------------------------------
# E11 cross-entropy: logsumexp per row in one pass; the backward writes softmax - onehot directly

@njit(parallel=True, cache=True)
def cross_entropy_kernel(logits, targets, lse, nll):
    N, V = logits.shape
    for n in prange(N):
        mx = logits[n, 0]
        for v in range(V):
            if logits[n, v] > mx:
                mx = logits[n, v]
        acc = 0.0
        for v in range(V):
            acc += np.exp(np.float64(logits[n, v] - mx))
        lse[n] = mx + np.log(acc)
        nll[n] = lse[n] - logits[n, targets[n]]


@njit(parallel=True, cache=True)
def cross_entropy_backward_kernel(logits, targets, lse, dlogits):
    N, V = logits.shape
    inv_n = 1.0 / N
    for n in prange(N):
        for v in range(V):
            dlogits[n, v] = np.exp(logits[n, v] - lse[n]) * inv_n
        dlogits[n, targets[n]] -= inv_n
