"""The elementwise parts of a training block (E6 MLGRU, E8 GLU, E9 residual + norm) as one pass each,
for kernels_numba/block.py. The reference (mmf.layers.mlgru, glu, models.block) computes them as a
chain of NumPy operations, each one a pass over a (B*T, D) array with a fresh temporary: the MLGRU
alone makes ~25 such passes forward and backward. Here each kernel reads its inputs once and writes its
outputs once, and recomputes in backward what is cheap (gates, SiLU(h), g_norm's output) instead of
keeping it.

The float32 operations are the reference's, in the reference's order (no fastmath), and the sigmoid
is expf.py's (within 1-2 ulp of NumPy's), so results agree with the reference to float32 rounding;
only sums over rows (a norm gain's gradient, the lower bounds' gradient) are accumulated in float64 in
another order. Arrays are 2-D (M, D) with M = B * T rows, row m = b * T + t; lb is (D,), zeros for
layer 0 (lb + (1 - lb) s = s exactly then).
"""
import numpy as np
from numba import njit, prange

from .expf import sigmoid32
from .fused import ROWS_PER_CHUNK, _row_rstd


# ----------------------------------------------------------------------------
# E6 forward: gates, the scan and the output gate o = rms(a_g; g_norm) * SiLU(h) in one pass

@njit(parallel=True, error_model="numpy", cache=True)
def mlgru_forward_kernel(a_i, a_f, a_g, lb, h0, g_norm, c, T, h, o, rstd_g):
    """a_i, a_f, a_g (M, D) the i/f/g BitLinear outputs; h0 (B, D); c = fused.constants(dtype, eps).
    Writes h (M, D) every state, o (M, D) the o_proj input and rstd_g (M,) g_norm's statistics.
        f = lb + (1 - lb) sigmoid(a_f);  i = SiLU(a_i) (1 - f);  h_t = f h_{t-1} + i"""
    M, D = a_i.shape
    one = np.float32(1.0)
    for b in prange(M // T):
        for t in range(T):
            m = b * T + t
            h_prev = h[m - 1] if t > 0 else h0[b]                    # a row view: the d loop stays branch-free
            for d in range(D):
                f = lb[d] + (one - lb[d]) * sigmoid32(a_f[m, d])
                i = a_i[m, d] * sigmoid32(a_i[m, d]) * (one - f)
                h[m, d] = f * h_prev[d] + i
            r = _row_rstd(a_g, m, D, c, rstd_g)
            for d in range(D):
                o[m, d] = a_g[m, d] * r * g_norm[d] * (h[m, d] * sigmoid32(h[m, d]))


@njit(parallel=True, error_model="numpy", cache=True)
def mlgru_output_kernel(a_g, rstd_g, g_norm, h, o):
    """The backward's recompute of o = rms(a_g; g_norm) * SiLU(h) from the forward's statistics."""
    M, D = a_g.shape
    for m in prange(M):
        r = rstd_g[m]
        for d in range(D):
            o[m, d] = a_g[m, d] * r * g_norm[d] * (h[m, d] * sigmoid32(h[m, d]))


@njit(parallel=True, error_model="numpy", cache=True)
def mlgru_output_backward_kernel(do, a_g, rstd_g, g_norm, h, da_g, dh, dg_partial):
    """From do (M, D), the gradient on o: da_g through g_norm's RMSNorm, dh = do * g_n * SiLU'(h), and
    g_norm's gradient summed per chunk of rows into dg_partial (chunks, D) float64."""
    M, D = a_g.shape
    one = np.float32(1.0)
    for ch in prange(dg_partial.shape[0]):
        dg_n = np.empty(D, do.dtype)                                 # one row of do * SiLU(h)
        sig = np.empty(D, do.dtype)                                  # one row of sigmoid(h)
        for d in range(D):
            dg_partial[ch, d] = 0.0
        for m in range(ch * ROWS_PER_CHUNK, min(M, (ch + 1) * ROWS_PER_CHUNK)):
            r = rstd_g[m]
            for d in range(D):
                sig[d] = sigmoid32(h[m, d])
                dg_n[d] = do[m, d] * (h[m, d] * sig[d])
            mean = _row_dot64(dg_n, g_norm, a_g, m, r) / D
            for d in range(D):
                s = sig[d]
                xhat = a_g[m, d] * r
                da_g[m, d] = r * (dg_n[d] * g_norm[d] - xhat * mean)
                dg_partial[ch, d] += np.float64(dg_n[d] * xhat)
                dh[m, d] = do[m, d] * (xhat * g_norm[d]) * (s * (one + h[m, d] * (one - s)))


@njit(fastmath=True, cache=True)
def _row_dot64(u, g, x, m, r):
    """sum_d float64(u_d g_d) float64(x[m, d] r): the RMSNorm backward's projection (as in
    fused.rmsnorm_backward_kernel); fastmath lets the float64 sum vectorize (only its order changes)."""
    acc = 0.0
    for d in range(u.shape[0]):
        acc += np.float64(u[d] * g[d]) * np.float64(x[m, d] * r)
    return acc


# The scan's backward in two passes: the carried gradient first (sequential in t, one array written,
# so the d loop vectorizes), then everything else row by row in parallel. One fused loop writing four
# arrays measured 2x slower: LLVM gives up vectorizing a loop with that many possibly-aliased arrays.

@njit(parallel=True, error_model="numpy", cache=True)
def mlgru_carry_kernel(dh, a_f, lb, T, di, dh0):
    """The gradient on each state, from the last token back: di_t = di_{t+1} f_{t+1} + dh_t, with
    f = lb + (1 - lb) sigmoid(a_f) recomputed; dh0 = di_0 f_0 (B, D). di, dh (M, D)."""
    M, D = dh.shape
    for b in prange(M // T):
        last = b * T + T - 1
        for d in range(D):
            di[last, d] = dh[last, d]
        for t in range(T - 2, -1, -1):
            m = b * T + t
            _carry_row(di[m + 1], a_f[m + 1], lb, dh[m], di[m])
        _carry_row(di[b * T], a_f[b * T], lb, np.zeros(D, dh.dtype), dh0[b])


@njit(error_model="numpy", cache=True)
def _carry_row(di_next, a_f_next, lb, dh, out):
    one = np.float32(1.0)
    for d in range(out.shape[0]):
        out[d] = di_next[d] * (lb[d] + (one - lb[d]) * sigmoid32(a_f_next[d])) + dh[d]


@njit(parallel=True, error_model="numpy", cache=True)
def mlgru_gates_backward_kernel(di, a_i, a_f, lb, h, h0, T, da_i, da_f, dlb_partial):
    """From di (M, D), the gradient on every state (= on i_t, and on f_t through h_{t-1}): back
    through i = SiLU(a_i) (1 - f) and f = lb + (1 - lb) sigmoid(a_f) to da_i, da_f (M, D), and the
    lower bound's gradient per chunk of rows into dlb_partial (chunks, D) float64."""
    M, D = di.shape
    for ch in prange(dlb_partial.shape[0]):
        dlb = np.zeros(D, di.dtype)                                  # this chunk's sum, float32
        for m in range(ch * ROWS_PER_CHUNK, min(M, (ch + 1) * ROWS_PER_CHUNK)):
            h_prev = h[m - 1] if m % T > 0 else h0[m // T]
            _gates_backward_row(di[m], a_i[m], a_f[m], lb, h_prev, da_i[m], da_f[m], dlb)
        for d in range(D):
            dlb_partial[ch, d] = dlb[d]


@njit(error_model="numpy", cache=True)
def _gates_backward_row(di, a_i, a_f, lb, h_prev, da_i, da_f, dlb):
    one = np.float32(1.0)
    for d in range(di.shape[0]):
        s_f = sigmoid32(a_f[d])
        f = lb[d] + (one - lb[d]) * s_f
        sig_i = sigmoid32(a_i[d])
        df = di[d] * h_prev[d] - di[d] * (a_i[d] * sig_i)            # f also enters i = SiLU(a_i) (1 - f)
        da_i[d] = di[d] * (one - f) * (sig_i * (one + a_i[d] * (one - sig_i)))
        dlb[d] += df * (one - s_f)
        da_f[d] = df * (one - lb[d]) * s_f * (one - s_f)


# ----------------------------------------------------------------------------
# E8 GLU: prod = SiLU(gate) * up. gate and up are two separate (M, I) arrays (block.py writes
# gate_proj's output that way): the same loop over the two halves of one (M, 2I) row measured 1.6-1.9x
# slower.

@njit(parallel=True, error_model="numpy", cache=True)
def glu_forward_kernel(gate, up, prod):
    M, I = prod.shape
    for m in prange(M):
        for k in range(I):
            prod[m, k] = gate[m, k] * sigmoid32(gate[m, k]) * up[m, k]


@njit(parallel=True, error_model="numpy", cache=True)
def glu_backward_kernel(dprod, gate, up, dgate, dup):
    """dgate = dprod * up * SiLU'(gate), dup = dprod * SiLU(gate), all (M, I)."""
    M, I = dprod.shape
    one = np.float32(1.0)
    for m in prange(M):
        for k in range(I):
            g = gate[m, k]
            s = sigmoid32(g)
            dgate[m, k] = dprod[m, k] * up[m, k] * (s * (one + g * (one - s)))
            dup[m, k] = dprod[m, k] * (g * s)


# ----------------------------------------------------------------------------
# E9 the residual add and the next norm in one pass; the norm's recompute from its statistics

@njit(parallel=True, cache=True)
def add_rmsnorm_kernel(x, a, g, c, r, y, rstd):
    """r = x + a, y = rms(r; g) (all (M, D)), rstd (M,)."""
    M, D = x.shape
    for m in prange(M):
        for d in range(D):
            r[m, d] = x[m, d] + a[m, d]
        rm = _row_rstd(r, m, D, c, rstd)
        for d in range(D):
            y[m, d] = r[m, d] * rm * g[d]


@njit(parallel=True, cache=True)
def rmsnorm_apply_kernel(x, g, rstd, y):
    """y = x * rstd * g from stored statistics (the same numbers as the forward's)."""
    M, D = x.shape
    for m in prange(M):
        r = rstd[m]
        for d in range(D):
            y[m, d] = x[m, d] * r * g[d]
