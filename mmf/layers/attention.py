"""Causal multi-head softmax attention with rotary embeddings (the Llama token mixer), and its option
with ternary queries and keys (the paper's "MatMul-free Transformer++").

    q, k, v = proj_q(xn), proj_k(xn), proj_v(xn)         (B, T, D) each, split into H heads of hd = D / H
    q, k = rope(q), rope(k)                              at absolute positions pos0 .. pos0 + T - 1
    [ternary_qk:  q, k = tern(q), tern(k)]               per token and head, straight-through backward
    K, V = [past K | k], [past V | v]                    the KV cache: S = S_past + T keys and values
    scores = q K^T / sqrt(hd)                            (B, H, T, S)
    scores[i, j] = -inf where j > pos0 + i               causal: a token sees itself and the past
    P = softmax(scores)                                  row max subtracted first (exp never overflows)
    out = proj_o(merge_heads(P V))                       (B, T, D)

Each projection is a plain linear (the float Llama) or a BitLinear with its own norm (BitNet b1.58 /
BitNet): mmf.layers.linear.projection decides from the parameters it is given. xn is the block's
pre-norm output. Parameters arrive keyed like the state dict below `model.layers.{l}.self_attn.`:
'q_proj.weight' ... 'o_proj.weight' (D, D) [out, in], plus 'q_proj.norm.weight' ... for BitLinears.

Backward (reverse order), with dS the gradient on the scaled scores:
    dP = d(PV) V^T;  dV = P^T d(PV);  dS = P * (dP - rowsum(dP * P))   (softmax; masked P = 0 give 0)
    dq = dS K / sqrt(hd);  dK = dS^T q / sqrt(hd);  then tern (identity, STE), rope^-1, projections.

Ternary Q and K (`ternary_qk=True`). The paper reports that ternarizing Q and K in a Transformer++
fails to converge but gives no recipe, so this is our choice, stated here and in docs/attention.md:
after RoPE (so the rotated vectors, which are what meet in q . k, are the ternary ones), every query
and key vector of one token and one head is quantized with the absmean rule of E3 applied per row,

    s = max(mean_j |x_j|, 1e-5);   x~ = s * clip(round(x / s), -1, 1)     values {-s, 0, +s}

with the straight-through estimator (dx = dx~). Then q~ . k~ = s_q s_k sum_j c_qj c_kj with codes
c in {-1, 0, 1}: each term is +1, -1 or 0 (sign logic), so Q K^T needs additions only. softmax(.) V
is still a product of float probabilities with float values, and the projections are whatever the
model's `weights` say. The cache stores the quantized keys (quantization is per token, so a key
quantized alone equals the same key quantized in a longer sequence).
"""
import numpy as np

from mmf.backend import NumpyBackend
from mmf.checks import check_array
from mmf.layers.linear import projection_backward, projection_forward
from mmf.layers.rope import rope_backward, rope_forward, rope_tables

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
QK_EPS = 1e-5      # floor on a row's mean |x|, as E3's floor on mean |W|


# ----------------------------------------------------------------------------
# ternary Q and K (the "MatMul-free Transformer++" option)

def qk_ternary_int(x):
    """codes int8 (..., hd) in {-1, 0, 1} and scales s (..., 1): absmean per row (token and head)."""
    s = np.maximum(np.mean(np.abs(x), axis=-1, keepdims=True), x.dtype.type(QK_EPS))   # (..., 1)
    codes = np.clip(np.round(x / s), -1, 1).astype(np.int8)
    return codes, s


def qk_ternary(x):
    """Fake-quant x~ = codes * s, same dtype as x. Backward: identity (STE)."""
    codes, s = qk_ternary_int(x)
    return codes.astype(x.dtype) * s


# ----------------------------------------------------------------------------
# heads

def split_heads(x, num_heads):
    """(B, T, D) -> (B, H, T, hd)"""
    B, T, D = x.shape
    return x.reshape(B, T, num_heads, D // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, hd) -> (B, T, D)"""
    B, H, T, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def causal_mask(T, pos0, S):
    """(T, S) bool, True where query i (absolute position pos0 + i) may see key j (position j)."""
    return np.arange(S)[None, :] <= (pos0 + np.arange(T))[:, None]


# ----------------------------------------------------------------------------
# the layer

def attention_forward(xn, p, num_heads, past=None, rope_theta=10000.0, ternary_qk=False, ops=None):
    """xn (B, T, D) -> out (B, T, D), present (K, V) each (B, H, S, hd), cache.

    past: None, or the (K, V) this layer returned for the pos0 tokens before these ones (their
    positions are 0 .. pos0 - 1, so these tokens start at pos0).
    present: the keys and values of all S = pos0 + T positions; give it back as `past` to continue."""
    ops = ops or NumpyBackend()
    check_array("attention xn", xn, ndim=3)
    B, T, D = xn.shape
    if D % num_heads:
        raise ValueError(f"attention: width {D} is not divisible by num_heads={num_heads}")
    H, hd = num_heads, D // num_heads
    pos0 = 0
    if past is not None:
        if not (isinstance(past, tuple) and len(past) == 2):
            raise ValueError("attention past must be a (K, V) pair as returned by attention_forward")
        check_array("attention past K", past[0], ndim=4, dtype=xn.dtype)
        pos0 = past[0].shape[2]
        for name, a in zip(("K", "V"), past):
            check_array(f"attention past {name}", a, shape=(B, H, pos0, hd), dtype=xn.dtype)
    q, c_q = projection_forward(xn, p, "q_proj", ops)               # (B, T, D)
    k, c_k = projection_forward(xn, p, "k_proj", ops)
    v, c_v = projection_forward(xn, p, "v_proj", ops)
    q, k, v = split_heads(q, H), split_heads(k, H), split_heads(v, H)  # (B, T, D) -> (B, H, T, hd)
    cos, sin = rope_tables(np.arange(pos0, pos0 + T), hd, rope_theta, xn.dtype)   # (T, hd)
    q, c_rq = rope_forward(q, cos, sin)
    k, c_rk = rope_forward(k, cos, sin)
    if ternary_qk:
        q, k = qk_ternary(q), qk_ternary(k)                          # STE: nothing to cache
    # the cache grows by copying: O(S) per step, the same order as the attention over S keys below
    K = k if past is None else np.concatenate([past[0], k], axis=2)  # (B, H, S, hd), S = pos0 + T
    V = v if past is None else np.concatenate([past[1], v], axis=2)
    S = K.shape[2]
    scale = float(1.0 / np.sqrt(hd))                                 # a Python float keeps float32 float32
    scores = (q @ K.transpose(0, 1, 3, 2)) * scale                   # (B, H, T, hd) @ (B, H, hd, S) -> (B, H, T, S)
    scores = np.where(causal_mask(T, pos0, S), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)             # every row sees itself: the max is finite
    P = np.exp(scores)
    P /= P.sum(axis=-1, keepdims=True)                               # (B, H, T, S); masked entries exactly 0
    ctx = merge_heads(P @ V)                                         # (B, H, T, S) @ (B, H, S, hd) -> (B, T, D)
    out, c_o = projection_forward(ctx, p, "o_proj", ops)             # (B, T, D)
    cache = (c_q, c_k, c_v, c_rq, c_rk, q, K, V, P, scale, pos0, c_o)
    return out, (K, V), cache


def attention_backward(dout, cache, ops=None):
    """Reverse of attention_forward. Returns dxn (B, T, D), dp (dict like p), and d(past K), d(past V)
    (B, H, pos0, hd) each (None when there was no past)."""
    ops = ops or NumpyBackend()
    c_q, c_k, c_v, c_rq, c_rk, q, K, V, P, scale, pos0, c_o = cache
    H = q.shape[1]
    dp = {}
    dctx, g = projection_backward(dout, c_o, ops)                   # (B, T, D)
    dp.update(g)
    dPV = split_heads(dctx, H)                                       # (B, T, D) -> (B, H, T, hd)
    dP = dPV @ V.transpose(0, 1, 3, 2)                               # (B, H, T, S)
    dV = P.transpose(0, 1, 3, 2) @ dPV                               # (B, H, S, hd)
    dscores = P * (dP - np.sum(dP * P, axis=-1, keepdims=True)) * scale   # softmax, then the 1/sqrt(hd)
    dq = dscores @ K                                                 # (B, H, T, S) @ (B, H, S, hd) -> (B, H, T, hd)
    dK = dscores.transpose(0, 1, 3, 2) @ q                           # (B, H, S, hd)
    dpast = (dK[:, :, :pos0], dV[:, :, :pos0]) if pos0 else (None, None)
    dk, dv = dK[:, :, pos0:], dV[:, :, pos0:]                        # the new tokens' part
    # ternary_qk: the straight-through estimator passes dq, dk unchanged
    dk = rope_backward(dk, c_rk)
    dq = rope_backward(dq, c_rq)
    dxn, g = projection_backward(merge_heads(dv), c_v, ops)          # (B, H, T, hd) -> (B, T, D)
    dp.update(g)
    dxn_k, g = projection_backward(merge_heads(dk), c_k, ops)
    dp.update(g)
    dxn_q, g = projection_backward(merge_heads(dq), c_q, ops)
    dp.update(g)
    dxn = dxn + dxn_k + dxn_q
    return dxn, dp, dpast[0], dpast[1]
