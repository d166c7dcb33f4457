"""E6/E7 MLGRU token mixer (official semantics: one head, expand ratio 1, no biases, no short conv).

    i = BitLinear_i(xn);  f = sigmoid(BitLinear_f(xn));  layer l > 0: f <- lb_l + (1 - lb_l) f
    i <- SiLU(i) * (1 - f);  h_t = f_t * h_{t-1} + i_t                                     (E6)
    g = BitLinear_g(xn);  o' = rms(g; g_norm) * SiLU(h);  out = BitLinear_o(o')

xn is the block's pre-norm rms(x; attn_norm) (E9 owns that norm). Parameters of one layer arrive as
a dict `p` keyed like the state dict below `model.layers.{l}.attn.`: 'i_proj.weight', 'i_proj.norm.weight',
... 'o_proj.norm.weight', 'g_norm.weight'. lb_l is this layer's lower bound (D,), or None for layer 0.

Shapes: B batch, T time, D width. The scan works on (B, T, D); the step is one token (B, D) that
carries h from call to call (decoding). The lower bounds (E7) are computed once for all layers.
"""
import numpy as np

from mmf.backend import NumpyBackend

PROJECTIONS = ("i_proj", "f_proj", "g_proj", "o_proj")


# ----------------------------------------------------------------------------
# E7: forget-gate lower bounds, shared by all layers

def lower_bounds_forward(P):
    """P (L, D) -> lb (L, D): S = softmax(P, over layers); lb = cumsum(S) - S[0]. lb[0] = 0, rising with depth."""
    e = np.exp(P - P.max(axis=0, keepdims=True))
    S = e / e.sum(axis=0, keepdims=True)                             # (L, D), each column sums to 1
    lb = np.cumsum(S, axis=0) - S[0]                                 # (L, D)
    return lb, S


def lower_bounds_backward(dlb, S):
    # lb_l = sum_{j<=l} S_j - S_0, so dS_j = sum_{l>=j} dlb_l - [j = 0] * sum_l dlb_l
    dS = np.cumsum(dlb[::-1], axis=0)[::-1].copy()                  # (L, D) suffix sums
    dS[0] -= dlb.sum(axis=0)
    # softmax backward along the layer axis
    return S * (dS - np.sum(dS * S, axis=0, keepdims=True))          # (L, D)


# ----------------------------------------------------------------------------
# E6: the token mixer over T tokens

def _gates(a_i, a_f, lb, ops):
    """The elementwise gate values of E6 from the two pre-activations."""
    s_f = ops.sigmoid(a_f)
    f = s_f if lb is None else lb + (1.0 - lb) * s_f
    return s_f, f, ops.silu(a_i)


def mlgru_scan_forward(xn, p, lb, h0, eps=1e-6, ops=None):
    """xn (B, T, D), h0 (B, D) -> out (B, T, D), h (B, T, D) every state, cache."""
    ops = ops or NumpyBackend()
    a_i, c_i = ops.bitlinear_forward(xn, p["i_proj.weight"], p["i_proj.norm.weight"])   # (B, T, D)
    a_f, c_f = ops.bitlinear_forward(xn, p["f_proj.weight"], p["f_proj.norm.weight"])   # (B, T, D)
    s_f, f, s_i = _gates(a_i, a_f, lb, ops)                          # forget gate f in [lb, 1]
    i = s_i * (1.0 - f)                                              # input scaled by (1 - f), as the official swiglu(i, 1-f)
    h = ops.scan_forward(f, i, h0)                                   # (B, T, D)
    a_g, c_g = ops.bitlinear_forward(xn, p["g_proj.weight"], p["g_proj.norm.weight"])   # (B, T, D)
    g_n, c_gn = ops.rmsnorm_forward(a_g, p["g_norm.weight"], eps)    # norm on g ...
    s_h = ops.silu(h)                                                # ... swish on h (official FusedRMSNormSwishGate)
    o = g_n * s_h                                                    # (B, T, D)
    out, c_o = ops.bitlinear_forward(o, p["o_proj.weight"], p["o_proj.norm.weight"])    # (B, T, D)
    if ops.fused:   # keep only the pre-activations; gates, g_n and SiLU(h) are recomputed in backward
        cache = (c_i, c_f, a_i, a_f, lb, h, h0, c_g, c_gn, c_o)
    else:
        cache = (c_i, c_f, a_i, None, lb, h, h0, c_g, c_gn, c_o, (s_f, f, s_i, g_n, s_h))
    return out, h, cache


def mlgru_scan_backward(dout, cache, dh_last=None, ops=None):
    """Reverse of mlgru_scan_forward. dh_last (B, D) is a gradient on the final state from outside
    (zero in training; the step backward passes the future's gradient in through it).
    Returns dxn (B, T, D), dp (dict like p), dlb (D,) or None, dh0 (B, D)."""
    ops = ops or NumpyBackend()
    c_i, c_f, a_i, a_f, lb, h, h0, c_g, c_gn, c_o = cache[:10]
    if len(cache) == 11:                                             # caching mode: stored
        s_f, f, s_i, g_n, s_h = cache[10]
    else:                                                            # fused mode: recompute (same ops, same bits)
        s_f, f, s_i = _gates(a_i, a_f, lb, ops)
        g_n, s_h = ops.rmsnorm_normalized(c_gn), ops.silu(h)
    dp = {}
    do, dp["o_proj.weight"], dp["o_proj.norm.weight"] = ops.bitlinear_backward(dout, c_o)
    dg_n = do * s_h
    ds_h = do * g_n
    da_g, dp["g_norm.weight"] = ops.rmsnorm_backward(dg_n, c_gn)
    dxn, dp["g_proj.weight"], dp["g_proj.norm.weight"] = ops.bitlinear_backward(da_g, c_g)
    dh = ds_h * ops.silu_grad(h)                                         # (B, T, D)
    if dh_last is not None:
        dh[:, -1] += dh_last
    df, di, dh0 = ops.scan_backward(dh, f, h, h0)
    ds_i = di * (1.0 - f)
    df = df - di * s_i                                               # f also enters i = s_i (1 - f)
    da_i = ds_i * ops.silu_grad(a_i)
    if lb is None:
        ds_f, dlb = df, None
    else:
        ds_f = df * (1.0 - lb)
        dlb = np.sum((df * (1.0 - s_f)).reshape(-1, f.shape[-1]), axis=0)   # (D,)
    da_f = ds_f * s_f * (1.0 - s_f)
    dxn_f, dp["f_proj.weight"], dp["f_proj.norm.weight"] = ops.bitlinear_backward(da_f, c_f)
    dxn_i, dp["i_proj.weight"], dp["i_proj.norm.weight"] = ops.bitlinear_backward(da_i, c_i)
    dxn = dxn + dxn_f + dxn_i
    return dxn, dp, dlb, dh0


# ----------------------------------------------------------------------------
# E6 as a step: one token with carried state (decoding, and the recurrence made explicit)

def mlgru_step_forward(xn_t, h_prev, p, lb, eps=1e-6, ops=None):
    """xn_t (B, D), h_prev (B, D) -> out_t (B, D), h_t (B, D), cache. Same math as the scan with T = 1."""
    out, h, cache = mlgru_scan_forward(xn_t[:, None, :], p, lb, h_prev, eps, ops)      # (B, 1, D)
    return out[:, 0], h[:, 0], cache


def mlgru_step_backward(dout_t, dh_t, cache, ops=None):
    """dout_t (B, D) on the output, dh_t (B, D) on the carried state from the next token ->
    dxn_t (B, D), dp, dlb, dh_prev (B, D)."""
    dxn, dp, dlb, dh_prev = mlgru_scan_backward(dout_t[:, None, :], cache, dh_last=dh_t, ops=ops)
    return dxn[:, 0], dp, dlb, dh_prev
