"""E6/E7 MLGRU token mixer (official semantics: one head, expand ratio 1, no biases, no short conv).

    i = BitLinear_i(xn);  f = sigmoid(BitLinear_f(xn));  layer l > 0: f <- lb_l + (1 - lb_l) f
    i <- SiLU(i) * (1 - f);  h_t = f_t * h_{t-1} + i_t                                     (E6)
    g = BitLinear_g(xn);  o' = rms(g; g_norm) * SiLU(h);  out = BitLinear_o(o')

The output gate has a switch (`gate`, from MMfreeConfig.output_gate; docs/equations.md, E6):
  "official" -- o' = rms(g; g_norm) * SiLU(h), what the released checkpoints compute (the default);
  "paper"    -- o' = sigmoid(g) * h, the gate the paper's first version writes (g_norm is then unused
                and gets a zero gradient; the parameter stays so checkpoints keep one layout).

xn is the block's pre-norm rms(x; attn_norm) (E9 owns that norm). Parameters of one layer arrive as
a dict `p` keyed like the state dict below `model.layers.{l}.attn.`: 'i_proj.weight', 'i_proj.norm.weight',
... 'o_proj.norm.weight', 'g_norm.weight'. lb_l is this layer's lower bound (D,), or None for layer 0.

Shapes: B batch, T time, D width. The scan works on (B, T, D); the step is one token (B, D) that
carries h from call to call (decoding). The lower bounds (E7) are computed once for all layers.
"""
import numpy as np

from mmf.backend import NumpyBackend

PROJECTIONS = ("i_proj", "f_proj", "g_proj", "o_proj")
OUTPUT_GATES = ("official", "paper")


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


def _output_gate_factors(a_g, h, gate_cache, gate, ops):
    """The two factors of o' = G * H: official G = rms(g; g_norm), H = SiLU(h); paper G = sigmoid(g), H = h."""
    if gate == "official":
        return ops.rmsnorm_normalized(gate_cache), ops.silu(h)
    return ops.sigmoid(a_g), h


def mlgru_scan_forward(xn, p, lb, h0, eps=1e-6, ops=None, gate="official"):
    """xn (B, T, D), h0 (B, D) -> out (B, T, D), h (B, T, D) every state, cache."""
    ops = ops or NumpyBackend()
    if gate not in OUTPUT_GATES:
        raise ValueError(f"gate must be one of {OUTPUT_GATES}, got {gate!r}")
    a_i, c_i = ops.bitlinear_forward(xn, p["i_proj.weight"], p["i_proj.norm.weight"])   # (B, T, D)
    a_f, c_f = ops.bitlinear_forward(xn, p["f_proj.weight"], p["f_proj.norm.weight"])   # (B, T, D)
    s_f, f, s_i = _gates(a_i, a_f, lb, ops)                          # forget gate f in [lb, 1]
    i = s_i * (1.0 - f)                                              # input scaled by (1 - f), as the official swiglu(i, 1-f)
    h = ops.scan_forward(f, i, h0)                                   # (B, T, D)
    a_g, c_g = ops.bitlinear_forward(xn, p["g_proj.weight"], p["g_proj.norm.weight"])   # (B, T, D)
    if gate == "official":
        g_n, c_gn = ops.rmsnorm_forward(a_g, p["g_norm.weight"], eps)    # norm on g ...
        s_h = ops.silu(h)                                            # ... swish on h (official FusedRMSNormSwishGate)
    else:                                                            # the paper's sigmoid(g) * h
        c_gn = None
        g_n, s_h = _output_gate_factors(a_g, h, None, gate, ops)
    o = g_n * s_h                                                    # (B, T, D)
    out, c_o = ops.bitlinear_forward(o, p["o_proj.weight"], p["o_proj.norm.weight"])    # (B, T, D)
    if ops.fused:   # keep only the pre-activations; gates, g_n and SiLU(h) are recomputed in backward
        stored = None
    else:
        stored = (s_f, f, s_i, g_n, s_h)
    cache = (gate, c_i, c_f, a_i, a_f, lb, h, h0, c_g, a_g if gate == "paper" else None, c_gn, c_o, stored)
    return out, h, cache


def mlgru_scan_backward(dout, cache, dh_last=None, ops=None):
    """Reverse of mlgru_scan_forward. dh_last (B, D) is a gradient on the final state from outside
    (zero in training; the step backward passes the future's gradient in through it).
    Returns dxn (B, T, D), dp (dict like p), dlb (D,) or None, dh0 (B, D)."""
    ops = ops or NumpyBackend()
    gate, c_i, c_f, a_i, a_f, lb, h, h0, c_g, a_g, c_gn, c_o, stored = cache
    if stored is not None:                                           # caching mode: stored
        s_f, f, s_i, g_n, s_h = stored
    else:                                                            # fused mode: recompute (same ops, same bits)
        s_f, f, s_i = _gates(a_i, a_f, lb, ops)
        g_n, s_h = _output_gate_factors(a_g, h, c_gn, gate, ops)
    dp = {}
    do, dp["o_proj.weight"], dp["o_proj.norm.weight"] = ops.bitlinear_backward(dout, c_o)
    dg_n = do * s_h
    ds_h = do * g_n
    if gate == "official":
        da_g, dp["g_norm.weight"] = ops.rmsnorm_backward(dg_n, c_gn)
        dh = ds_h * ops.silu_grad(h)                                 # (B, T, D)
    else:                                                            # g_n = sigmoid(a_g), s_h = h
        da_g = dg_n * g_n * (1.0 - g_n)
        dp["g_norm.weight"] = np.zeros(h.shape[-1], h.dtype)         # unused by this gate
        dh = ds_h
    dxn, dp["g_proj.weight"], dp["g_proj.norm.weight"] = ops.bitlinear_backward(da_g, c_g)
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

def mlgru_step_forward(xn_t, h_prev, p, lb, eps=1e-6, ops=None, gate="official"):
    """xn_t (B, D), h_prev (B, D) -> out_t (B, D), h_t (B, D), cache. Same math as the scan with T = 1."""
    out, h, cache = mlgru_scan_forward(xn_t[:, None, :], p, lb, h_prev, eps, ops, gate)  # (B, 1, D)
    return out[:, 0], h[:, 0], cache


def mlgru_step_backward(dout_t, dh_t, cache, ops=None):
    """dout_t (B, D) on the output, dh_t (B, D) on the carried state from the next token ->
    dxn_t (B, D), dp, dlb, dh_prev (B, D)."""
    dxn, dp, dlb, dh_prev = mlgru_scan_backward(dout_t[:, None, :], cache, dh_last=dh_t, ops=ops)
    return dxn[:, 0], dp, dlb, dh_prev
