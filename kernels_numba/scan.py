"""MLGRU recurrence kernels (E6): h_t = f_t * h_{t-1} + i_t per channel, over T tokens (training,
prefill) and one token (decoding). Same math and the same operation order as mmf.layers.recurrence, so the
results are bit-for-bit those of the reference; the gain is one compiled loop instead of T NumPy
calls on (B, D) slices, parallel over the batch.

Shapes: f, i, h (B, T, D); h0 (B, D).
"""
import numpy as np
from numba import njit, prange

from .expf import sigmoid32
from .fused import _sum_squares


@njit(parallel=True, cache=True)
def scan_forward_kernel(f, i, h0, h):
    B, T, D = f.shape
    for b in prange(B):
        for d in range(D):
            h[b, 0, d] = f[b, 0, d] * h0[b, d] + i[b, 0, d]
        for t in range(1, T):
            for d in range(D):
                h[b, t, d] = f[b, t, d] * h[b, t - 1, d] + i[b, t, d]


@njit(parallel=True, cache=True)
def scan_backward_kernel(dh, f, h, h0, df, di, dh0):
    """Reverse time: carry = dh_t + f_{t+1} * carry; di_t = carry; df_t = carry * h_{t-1}."""
    B, T, D = f.shape
    for b in prange(B):
        carry = np.zeros(D, dh.dtype)
        for t in range(T - 1, -1, -1):
            for d in range(D):
                c = carry[d] + dh[b, t, d]
                di[b, t, d] = c
                df[b, t, d] = c * (h[b, t - 1, d] if t > 0 else h0[b, d])
                carry[d] = c * f[b, t, d]
        for d in range(D):
            dh0[b, d] = carry[d]


def scan_forward(f, i, h0):
    h = np.empty_like(i)                                             # (B, T, D)
    scan_forward_kernel(f, i, h0, h)
    return h


def scan_backward(dh, f, h, h0):
    df, di, dh0 = np.empty_like(f), np.empty_like(dh), np.empty_like(h0)
    scan_backward_kernel(dh, f, h, h0, df, di, dh0)
    return df, di, dh0


@njit(error_model="numpy", cache=True)
def mlgru_step_kernel(a_i, a_f, a_g, lb, h, g_norm, eps, o):
    """One decoding step of E6 for one sequence (float32), in place. a_i, a_f, a_g (D,) are the
    outputs of the i/f/g BitLinears; lb (D,) this layer's lower bound (zeros for layer 0); h (D,) the
    carried state, updated; writes o = rms(a_g; g_norm) * SiLU(h) (D,), the o_proj input.
    Same operations in the same order as mmf.layers.mlgru: f = lb + (1 - lb) sigmoid(a_f),
    i = SiLU(a_i) (1 - f), h = f h + i; the sigmoid is expf.py's vectorizable one (<= 1 ulp)."""
    one = np.float32(1.0)
    D = h.shape[0]
    for d in range(D):                                               # vectorized (error_model="numpy":
        f = lb[d] + (one - lb[d]) * sigmoid32(a_f[d])                # no zero-division branch per element)
        i = a_i[d] * sigmoid32(a_i[d]) * (one - f)
        h[d] = f * h[d] + i
    ss = _sum_squares(a_g.reshape(1, -1), 0)                         # float64, vectorized
    r = np.float32(1.0 / np.sqrt(np.float32(ss / D) + eps))
    for d in range(D):
        o[d] = a_g[d] * r * g_norm[d] * (h[d] * sigmoid32(h[d]))
