"""E9 block (MLGRU token mixer + GLU channel mixer) for training on fused kernels: what
NumbaBackend.block_forward / block_backward run in fused mode (float32, quantized weights, the
official output gate). The reference is mmf.models.block with mmf.layers.mlgru and glu; this file
computes the same numbers (tests/test_kernels_block.py) with

  * one kernel per elementwise stage (mixers.py) instead of chains of NumPy operations;
  * less memory held for the backward: per layer only the block input x, the pre-activations a_i,
    a_f, a_g, the states h, the residual r and the GLU input (gate, up), plus per-row
    statistics. Everything else -- the normed inputs of the BitLinears, x~ (E5), the gates, o, the
    GLU product -- is recomputed in backward by one cheap pass each. (The caching mode keeps about
    2.5 times as much, every x~, gate value and normed input: `python -m kernels_numba.bench --only
    memory` counts the arrays held for backward, `--only rss` the resident memory of a step.)

Shapes: x (B, T, D) viewed as rows (M, D) with M = B * T; I the GLU width.
"""
from typing import NamedTuple

import numpy as np

from mmf.checks import check_array

from mmf.layers.bitlinear import BITLINEAR_EPS

from . import fused, mixers

ATTN = ("i_proj", "f_proj", "g_proj")


class LinearStats(NamedTuple):
    """What a BitLinear's backward needs besides its input (recomputed): per-row statistics and W~."""
    rstd: np.ndarray            # (M,) 1 / rms of each input row
    s: np.ndarray               # (M,) activation scale of each row (E2)
    Wq: np.ndarray              # (N, K) W~


class FusedBlockCache(NamedTuple):
    attn_norm: tuple            # (x (B, T, D), g, rstd (M,)): the block input first, as the reference's cache
    T: int
    lb: np.ndarray              # (D,) this layer's lower bound, zeros for layer 0
    has_lb: bool
    h0: np.ndarray              # (B, D)
    a_i: np.ndarray             # (M, D) i_proj output
    a_f: np.ndarray             # (M, D) f_proj output
    a_g: np.ndarray             # (M, D) g_proj output
    h: np.ndarray               # (M, D) every state
    rstd_g: np.ndarray          # (M,) g_norm's statistics
    r: np.ndarray               # (M, D) the residual after the token mixer
    rstd_mlp: np.ndarray        # (M,)
    gate_up: np.ndarray         # (2, M, I) gate_proj output: gate_up[0] the gate, gate_up[1] up
    linear: dict                # projection name -> LinearStats
    p: dict                     # the block's parameters (for the gains)


def _param_shapes(p, D):
    """The shape each of the block's parameters must have (I read from down_proj, as the model's config gives it)."""
    I = p["mlp.down_proj.weight"].shape[1]
    shapes = {"attn_norm.weight": (D,), "attn.g_norm.weight": (D,), "mlp_norm.weight": (D,),
              "mlp.gate_proj.weight": (2 * I, D), "mlp.gate_proj.norm.weight": (D,),
              "mlp.down_proj.weight": (D, I), "mlp.down_proj.norm.weight": (I,)}
    for n in ATTN + ("o_proj",):
        shapes[f"attn.{n}.weight"], shapes[f"attn.{n}.norm.weight"] = (D, D), (D,)
    return shapes


def gate_up_projection(be, rn, p, linear):
    """gate_proj (E8's BitLinear D -> 2I, one ternary scale for both halves) on rows rn (M, D), its
    output written as (2, M, I): the gate's rows of W~ and the up rows as two products, so that each
    half is one contiguous array for the GLU kernels."""
    W, g = p["mlp.gate_proj.weight"], p["mlp.gate_proj.norm.weight"]
    I = W.shape[0] // 2
    if be.matmul == "ternary":                                       # the add/subtract product: split a copy
        y, rstd, s, _, Wq = be._bitlinear_rows(rn, W, g, keep_xq=False)
        gate_up = np.stack([y[:, :I], y[:, I:]])
    else:
        Wq, _ = be._weight(W)
        _, s, rstd, xq = fused.norm_quant(rn, g, BITLINEAR_EPS, want_q=False, want_xq=True)
        gate_up = np.empty((2, rn.shape[0], I), rn.dtype)
        gate_up_products(xq, Wq, gate_up)
    linear["mlp.gate_proj"] = LinearStats(rstd, s, Wq)
    return gate_up


def gate_up_products(xq, Wq, gate_up):
    """The forward product x~ W~^T (E4) written as its two halves: (M, D) -> (2, M, I)."""
    I = gate_up.shape[2]
    np.matmul(xq, Wq[:I].T, out=gate_up[0])
    np.matmul(xq, Wq[I:].T, out=gate_up[1])


def gate_up_grads(rn, dgate_up, p, linear, dp):
    """gate_proj's STE backward (E5) from the two halves of its output gradient: dW (2I, D) half by
    half, dx~ = dgate W~_gate + dup W~_up, then its norm's backward. Returns drn (M, D)."""
    g, st = p["mlp.gate_proj.norm.weight"], linear["mlp.gate_proj"]
    xq = np.empty_like(rn)
    fused.requant_kernel(rn, g, st.rstd, st.s, xq)                  # x~ recomputed
    dp["mlp.gate_proj.weight"], dxq = gate_up_backward_products(dgate_up, xq, st.Wq)
    del xq
    drn, dp["mlp.gate_proj.norm.weight"] = fused.rmsnorm_backward_rows(dxq, rn, g, st.rstd)
    return drn


def gate_up_backward_products(dgate_up, xq, Wq):
    """dW = dy^T x~ (2I, D) and dx~ = dy W~ (M, D) with dy given as its halves (2, M, I)."""
    I = dgate_up.shape[2]
    dW = np.empty(Wq.shape, Wq.dtype)
    np.matmul(dgate_up[0].T, xq, out=dW[:I])
    np.matmul(dgate_up[1].T, xq, out=dW[I:])
    dxq = dgate_up[0] @ Wq[:I]
    dxq += dgate_up[1] @ Wq[I:]
    return dW, dxq


def block_forward(be, x, p, lb, h0, eps):
    """mmf.models.block.block_forward with the official gate: x (B, T, D), h0 (B, D) ->
    out (B, T, D), h_last (B, D), cache."""
    check_array("block x", x, ndim=3)
    B, T, D = x.shape
    check_array("block h0", h0, shape=(B, D), dtype=x.dtype)
    if lb is not None:
        check_array("block lb", lb, shape=(D,), dtype=x.dtype)
    for name, shape in _param_shapes(p, D).items():                 # the kernels do not check bounds
        check_array(f"block {name}", p[name], shape=shape, dtype=x.dtype)
    M = B * T
    x2 = np.ascontiguousarray(x.reshape(M, D))                      # (B, T, D) -> (M, D)
    c = fused.constants(x.dtype, eps)
    linear = {}

    def bitlinear(name, inp):
        y, rstd, s, _, Wq = be._bitlinear_rows(inp, p[name + ".weight"], p[name + ".norm.weight"], keep_xq=False)
        linear[name] = LinearStats(rstd, s, Wq)
        return y

    xn, rstd_a = np.empty_like(x2), np.empty(M, x.dtype)
    fused.rmsnorm_kernel(x2, p["attn_norm.weight"], c, xn, rstd_a)
    a_i, a_f, a_g = (bitlinear("attn." + n, xn) for n in ATTN)      # (M, D) each
    del xn                                                           # recomputed in backward
    lb_arr = np.zeros(D, x.dtype) if lb is None else np.ascontiguousarray(lb)
    h, o, rstd_g = np.empty_like(x2), np.empty_like(x2), np.empty(M, x.dtype)
    mixers.mlgru_forward_kernel(a_i, a_f, a_g, lb_arr, np.ascontiguousarray(h0), p["attn.g_norm.weight"], c, T,
                                h, o, rstd_g)
    a = bitlinear("attn.o_proj", o)                                  # token mixer output (M, D)
    del o
    r, rn, rstd_mlp = np.empty_like(x2), np.empty_like(x2), np.empty(M, x.dtype)
    mixers.add_rmsnorm_kernel(x2, a, p["mlp_norm.weight"], c, r, rn, rstd_mlp)   # r = x + a, rn = rms(r)
    del a
    gate_up = gate_up_projection(be, rn, p, linear)                   # (2, M, I)
    del rn
    prod = np.empty(gate_up.shape[1:], x.dtype)
    mixers.glu_forward_kernel(gate_up[0], gate_up[1], prod)          # SiLU(gate) * up, (M, I)
    out = bitlinear("mlp.down_proj", prod)                           # (M, D)
    del prod
    np.add(r, out, out=out)                                          # residual 2: out = r + m
    cache = FusedBlockCache((x, p["attn_norm.weight"], rstd_a), T, lb_arr, lb is not None, h0,
                            a_i, a_f, a_g, h, rstd_g, r, rstd_mlp, gate_up, linear, p)
    return out.reshape(B, T, D), h.reshape(B, T, D)[:, -1], cache


def block_backward(be, dout, cache):
    """mmf.models.block.block_backward: dout (B, T, D) -> dx (B, T, D), dp (like p), dlb (D,) or None."""
    x, g_attn, rstd_a = cache.attn_norm
    p, linear = cache.p, cache.linear
    B, T, D = x.shape
    M = B * T
    x2, dout2 = np.ascontiguousarray(x.reshape(M, D)), np.ascontiguousarray(dout.reshape(M, D))
    dp = {}

    def bitlinear_grads(name, dy, inp, add=None, out=None):
        st = linear[name]
        dinp, dp[name + ".weight"], dp[name + ".norm.weight"] = be._bitlinear_grads(
            dy, inp, p[name + ".norm.weight"], st.rstd, st.s, None, st.Wq, add, out)
        return dinp

    # GLU channel mixer (E8), and the norm before it
    gate, up = cache.gate_up
    prod = np.empty_like(gate)
    mixers.glu_forward_kernel(gate, up, prod)                        # recompute SiLU(gate) * up
    dprod = bitlinear_grads("mlp.down_proj", dout2, prod)
    del prod
    dgate_up = np.empty_like(cache.gate_up)
    mixers.glu_backward_kernel(dprod, gate, up, dgate_up[0], dgate_up[1])   # (2, M, I)
    del dprod
    rn = np.empty_like(x2)
    mixers.rmsnorm_apply_kernel(cache.r, p["mlp_norm.weight"], cache.rstd_mlp, rn)
    drn = gate_up_grads(rn, dgate_up, p, linear, dp)
    del dgate_up, rn
    dr, dp["mlp_norm.weight"] = fused.rmsnorm_backward_rows(drn, cache.r, p["mlp_norm.weight"], cache.rstd_mlp,
                                                            add=dout2)   # dr = dout + dr_norm: both paths into r
    # MLGRU token mixer (E6)
    o = np.empty_like(x2)
    mixers.mlgru_output_kernel(cache.a_g, cache.rstd_g, p["attn.g_norm.weight"], cache.h, o)
    do = bitlinear_grads("attn.o_proj", dr, o)
    del o
    da_g, dh = np.empty_like(x2), np.empty_like(x2)
    dgn_partial = np.empty((-(-M // fused.ROWS_PER_CHUNK), D), np.float64)
    mixers.mlgru_output_backward_kernel(do, cache.a_g, cache.rstd_g, p["attn.g_norm.weight"], cache.h, da_g, dh,
                                        dgn_partial)
    dp["attn.g_norm.weight"] = dgn_partial.sum(axis=0).astype(x.dtype)
    del do
    xn = np.empty_like(x2)
    mixers.rmsnorm_apply_kernel(x2, g_attn, rstd_a, xn)             # recompute the mixer's input
    dxn = bitlinear_grads("attn.g_proj", da_g, xn)
    del da_g
    di, dh0 = np.empty_like(x2), np.empty((B, D), x.dtype)
    mixers.mlgru_carry_kernel(dh, cache.a_f, cache.lb, T, di, dh0)   # the scan backward (E6)
    del dh
    da_i, da_f = np.empty_like(x2), np.empty_like(x2)
    dlb_partial = np.empty((-(-M // fused.ROWS_PER_CHUNK), D), np.float64)
    mixers.mlgru_gates_backward_kernel(di, cache.a_i, cache.a_f, cache.lb, cache.h, np.ascontiguousarray(cache.h0),
                                       T, da_i, da_f, dlb_partial)
    del di
    bitlinear_grads("attn.f_proj", da_f, xn, add=dxn, out=dxn)      # dxn = dxn_g + dxn_f + dxn_i, in that order
    bitlinear_grads("attn.i_proj", da_i, xn, add=dxn, out=dxn)
    del da_i, da_f, xn
    dx, dp["attn_norm.weight"] = fused.rmsnorm_backward_rows(dxn, x2, g_attn, rstd_a, add=dr, out=dr)   # dr + dx_norm
    dlb = dlb_partial.sum(axis=0).astype(x.dtype) if cache.has_lb else None
    return dx.reshape(B, T, D), dp, dlb
