"""RWKV-4's WKV recurrence (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era"), per
channel, in the numerically stable form with a running maximum exponent (docs/equations.md, R2).

What it computes. For one channel with a log-decay w = -exp(time_decay) < 0 and a bonus u = time_first,
from the keys k_i and values v_i of the tokens so far:

    wkv_t = ( sum_{i<t} e^{(t-1-i) w + k_i} v_i  +  e^{u + k_t} v_t )
          / ( sum_{i<t} e^{(t-1-i) w + k_i}      +  e^{u + k_t}     )

a weighted average of the values: token i weighs e^{k_i}, faded by e^{w} per step since; the current
token weighs e^{u + k_t} instead. With the past's numerator A and denominator B this is a recurrence:

    wkv_t = (A + e^{u+k_t} v_t) / (B + e^{u+k_t});     A <- e^w A + e^{k_t} v_t;   B <- e^w B + e^{k_t}

Why a stable form. Written like that, e^{k} overflows float32 for k > 88 (float64 for k > 709), and the
parallel "closed" form e^{(t-1)w} sum_i e^{k_i - i w} v_i (`wkv_naive_forward` below) overflows once
-w t passes those limits: after 89 tokens in float32 at the mildest decay w = -1. The fix (RWKV-4's
kernels) stores A = a e^p and B = b e^p, with p the largest exponent among the terms of the sums (each
term's exponent falls by -w per step, so p is a running maximum of decayed exponents, not a record), and
factors e^q out of every sum, q the largest exponent in it. Per token, with state (a, b, p):

    q  = max(p, u + k);     wkv = (e^{p-q} a + e^{u+k-q} v) / (e^{p-q} b + e^{u+k-q})      (output)
    q' = max(p + w, k);     a <- e^{p+w-q'} a + e^{k-q'} v;   b <- e^{p+w-q'} b + e^{k-q'};   p <- q'

Every exponent is <= 0 and one of each pair is exactly 0, so nothing overflows and the denominator is
at least 1. The empty past is a = b = 0, p = WKV_EMPTY_MAX (a huge negative number: e^{p-q} = 0).

Backward. The stable form is differentiated as written, in reverse order: each max passes the gradient
on its result to the argument that won. (Mathematically that gradient is zero -- the represented A, B
do not depend on the choice of q -- so ties are harmless.) Every factor in the chain is an e^{<=0} or a
ratio with a denominator >= 1, so the backward is as stable as the forward. The scan stores the state
after every token and recomputes the per-token exponentials from it.

What the MLGRU simplifies (E6, docs/equations.md): its h_t = f_t h_{t-1} + i_t is the numerator
recurrence alone, with a data-dependent gate f_t = sigmoid(.) in (0, 1) instead of a fixed decay e^w,
and no denominator: no exponentials of decays or keys, no division, no running maximum to carry. That
is why the paper calls RWKV-4 less hardware-friendly.

Shapes: k, v (B, T, C); w, u (C,); the state is three (B, C) arrays (a, b, p).
"""
import numpy as np

WKV_EMPTY_MAX = -1e38   # p of the empty past: e^{p-q} = 0 for any finite q; fits float32 (max 3.4e38)


def wkv_initial_state(batch, channels, dtype):
    """The state of the empty past: (a, b, p) = (0, 0, WKV_EMPTY_MAX), each (B, C)."""
    zeros = np.zeros((batch, channels), dtype)
    return zeros, zeros.copy(), np.full((batch, channels), WKV_EMPTY_MAX, dtype)


# ----------------------------------------------------------------------------
# one token: the output from the past, then the past updated with this token

def _output_parts(a, b, p, k, v, u):
    """wkv from state (a, b, p) and the current key, value. All (B, C)."""
    s = u + k                                                        # the current token's exponent
    q = np.maximum(p, s)
    e1, e2 = np.exp(p - q), np.exp(s - q)                            # both <= 1, one of them == 1
    den = e1 * b + e2
    y = (e1 * a + e2 * v) / den
    return s, e1, e2, den, y


def _update_parts(a, b, p, k, v, w):
    """The state after folding the current token into the past (decayed by e^w). All (B, C)."""
    r = p + w                                                        # the past's exponent, one step older
    q = np.maximum(r, k)
    f1, f2 = np.exp(r - q), np.exp(k - q)
    return r, f1, f2, f1 * a + f2 * v, f1 * b + f2, q


def wkv_step(k_t, v_t, w, u, state):
    """One token. k_t, v_t (B, C); w, u (C,); state (a, b, p) -> wkv_t (B, C), new state."""
    a, b, p = state
    y = _output_parts(a, b, p, k_t, v_t, u)[-1]
    _, _, _, a_new, b_new, p_new = _update_parts(a, b, p, k_t, v_t, w)
    return y, (a_new, b_new, p_new)


# ----------------------------------------------------------------------------
# T tokens: forward keeps every state, backward walks them in reverse

def wkv_scan_forward(k, v, w, u, state0):
    """k, v (B, T, C), state0 (a, b, p) -> wkv (B, T, C), the state after the last token, cache."""
    y = np.empty_like(k)                                             # (B, T, C)
    a_all, b_all, p_all = np.empty_like(k), np.empty_like(k), np.empty_like(k)   # state after token t
    state = state0
    for t in range(k.shape[1]):
        y[:, t], state = wkv_step(k[:, t], v[:, t], w, u, state)
        a_all[:, t], b_all[:, t], p_all[:, t] = state
    cache = (k, v, w, u, state0, a_all, b_all, p_all)
    return y, state, cache


def wkv_scan_backward(dy, cache, dstate_last=None):
    """Reverse of wkv_scan_forward. dy (B, T, C); dstate_last (da, db, dp) on the final state from
    outside (None = zero, as in training). Returns dk, dv (B, T, C), dw, du (C,), dstate0 (da, db, dp)."""
    k, v, w, u, (a0, b0, p0), a_all, b_all, p_all = cache
    dk, dv = np.empty_like(k), np.empty_like(v)
    dw_rows, du_rows = np.zeros_like(a0), np.zeros_like(a0)         # (B, C), summed over B at the end
    if dstate_last is None:
        da, db, dp = np.zeros_like(a0), np.zeros_like(a0), np.zeros_like(a0)
    else:
        da, db, dp = dstate_last
    for t in reversed(range(k.shape[1])):
        a, b, p = (a_all[:, t - 1], b_all[:, t - 1], p_all[:, t - 1]) if t > 0 else (a0, b0, p0)
        k_t, v_t = k[:, t], v[:, t]
        # the update came last in the forward: (a', b', p') = (f1 a + f2 v, f1 b + f2, q')
        r, f1, f2, _, _, _ = _update_parts(a, b, p, k_t, v_t, w)
        da_prev, db_prev = da * f1, db * f1
        dv_t = da * f2
        g1 = (da * a + db * b) * f1                                  # on the exponent r - q'
        g2 = (da * v_t + db) * f2                                    # on the exponent k - q'
        dq = dp - g1 - g2                                            # q' = max(r, k), and p' = q'
        r_won = r >= k_t
        dr = g1 + np.where(r_won, dq, 0.0)
        dk_t = g2 + np.where(r_won, 0.0, dq)
        dp_prev = dr                                                 # r = p + w
        dw_rows += dr
        # the output: wkv = (e1 a + e2 v) / (e1 b + e2)
        s, e1, e2, den, y_t = _output_parts(a, b, p, k_t, v_t, u)
        dnum = dy[:, t] / den
        dden = -dnum * y_t
        da_prev += dnum * e1
        db_prev += dden * e1
        dv_t += dnum * e2
        h1 = (dnum * a + dden * b) * e1                              # on the exponent p - q
        h2 = (dnum * v_t + dden) * e2                                # on the exponent s - q
        dq = -h1 - h2                                                # q = max(p, s)
        p_won = p >= s
        dp_prev += h1 + np.where(p_won, dq, 0.0)
        ds = h2 + np.where(p_won, 0.0, dq)                           # s = u + k
        du_rows += ds
        dk[:, t], dv[:, t] = dk_t + ds, dv_t
        da, db, dp = da_prev, db_prev, dp_prev
    return dk, dv, dw_rows.sum(axis=0), du_rows.sum(axis=0), (da, db, dp)


# ----------------------------------------------------------------------------
# for teaching only: the same sums without the running maximum

def wkv_naive_forward(k, v, w, u):
    """The closed form from the empty past, wkv_t = (e^{(t-1)w} sum_{i<t} e^{k_i - i w} v_i + e^{u+k_t} v_t)
    / (the same without v): every token's sum at once, as a parallel (cumulative-sum) implementation
    would do it. It overflows (inf, then nan) once -w t or k pass ~88 in float32, ~709 in float64;
    the stable scan above never does. k, v (B, T, C); w, u (C,) -> (B, T, C)."""
    t = np.arange(k.shape[1], dtype=k.dtype)[:, None]               # (T, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        grow = np.exp(k - t * w)                                     # (B, T, C) e^{k_i - i w}: overflows
        past_num = _exclusive_cumsum(grow * v)                       # sum over i < t
        past_den = _exclusive_cumsum(grow)
        fade = np.exp((t - 1) * w)                                   # (T, C) e^{(t-1) w}: underflows
        now = np.exp(u + k)
        return (fade * past_num + now * v) / (fade * past_den + now)


def _exclusive_cumsum(x):
    """sum over i < t along axis 1 (zero for t = 0)."""
    out = np.zeros_like(x)
    np.cumsum(x[:, :-1], axis=1, out=out[:, 1:])
    return out
