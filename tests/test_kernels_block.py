"""The fused training path of the Numba backend (kernels_numba/block.py, mixers.py, adamw.py and the
embedding and weight kernels of fused.py) against the NumPy reference it replaces: each kernel alone,
the whole block forward and backward, and a negative control for each comparison."""
import dataclasses

import numpy as np
import pytest

import mmf
from kernels_numba import adamw as nb_adamw
from kernels_numba import block as nb_block
from kernels_numba import fused, mixers
from kernels_numba.backend import NumbaBackend
from mmf.backend import NumpyBackend
from mmf.layers import activations
from mmf.layers.quant import weight_quant
from mmf.layers.rmsnorm import rmsnorm_forward
from mmf.models import block as ref_block
from mmf.models.params import init_params
from mmf.training.adamw import adamw_update

F32 = np.float32


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def block_setup(seed=0, B=3, T=7, D=24, I=40, layer=1):
    """A block's parameters (gains perturbed away from 1) and inputs, float32."""
    cfg = mmf.MMfreeConfig(vocab_size=16, hidden_size=D, num_layers=2, intermediate_size=I)
    rng = np.random.default_rng(seed)
    pre = f"model.layers.{layer}."
    p = {k[len(pre):]: v for k, v in init_params(cfg, seed, F32).items() if k.startswith(pre)}
    for k in p:
        if k.endswith("norm.weight"):
            p[k] = (1 + 0.3 * rng.standard_normal(p[k].shape)).astype(F32)
        else:
            p[k] = (p[k] * 8).astype(F32)                           # larger weights: gates away from 0.5
    x = rng.standard_normal((B, T, D)).astype(F32)
    h0 = (0.5 * rng.standard_normal((B, D))).astype(F32)
    lb = rng.random(D).astype(F32) if layer > 0 else None
    dout = rng.standard_normal((B, T, D)).astype(F32)
    return p, x, h0, lb, dout


@pytest.mark.parametrize("layer", [0, 1])
def test_fused_block_equals_reference_block(layer):
    p, x, h0, lb, dout = block_setup(layer=layer)
    ref = NumpyBackend()
    out0, hl0, c0 = ref_block.block_forward(x, p, lb, h0, 1e-6, ref)
    dx0, dp0, dlb0 = ref_block.block_backward(dout, c0, ref)
    be = NumbaBackend()
    out1, hl1, c1 = be.block_forward(x, p, lb, h0, 1e-6, "official")
    assert isinstance(c1, nb_block.FusedBlockCache)                  # the fused path really ran
    assert c1.attn_norm[0] is x                                      # hidden_states reads the block input there
    dx1, dp1, dlb1 = be.block_backward(dout, c1)
    assert rel(out1, out0) < 2e-6 and rel(hl1, hl0) < 2e-6
    assert rel(dx1, dx0) < 2e-5
    assert set(dp1) == set(dp0)
    worst = max(rel(dp1[k], dp0[k]) for k in dp0)
    assert worst < 2e-5, worst
    if layer == 0:
        assert dlb0 is None and dlb1 is None
    else:
        assert rel(dlb1, dlb0) < 2e-5


def test_block_comparison_catches_a_broken_kernel(monkeypatch):
    # negative control: a GLU backward off by 1% in dup must fail the comparison
    right = mixers.glu_backward_kernel

    def wrong(dprod, gate, up, dgate, dup):
        right(dprod, gate, up, dgate, dup)
        dup *= F32(1.01)

    p, x, h0, lb, dout = block_setup()
    ref = NumpyBackend()
    _, _, c0 = ref_block.block_forward(x, p, lb, h0, 1e-6, ref)
    _, dp0, _ = ref_block.block_backward(dout, c0, ref)
    monkeypatch.setattr(mixers, "glu_backward_kernel", wrong)
    be = NumbaBackend()
    _, _, c1 = be.block_forward(x, p, lb, h0, 1e-6, "official")
    _, dp1, _ = be.block_backward(dout, c1)
    assert rel(dp1["mlp.gate_proj.weight"], dp0["mlp.gate_proj.weight"]) > 1e-3


def test_fused_block_only_where_it_applies():
    p, x, h0, lb, _ = block_setup()
    for be, gate, xx in ((NumbaBackend(fused=False), "official", x), (NumbaBackend(), "paper", x),
                         (NumbaBackend(), "official", x.astype(np.float64))):
        pp = {k: v.astype(xx.dtype) for k, v in p.items()}
        _, _, c = be.block_forward(xx, pp, None if lb is None else lb.astype(xx.dtype), h0.astype(xx.dtype),
                                   1e-6, gate)
        assert not isinstance(c, nb_block.FusedBlockCache)


def test_mlgru_kernels_equal_reference_math():
    rng = np.random.default_rng(1)
    B, T, D = 2, 9, 19
    M = B * T
    a_i, a_f, a_g = (3 * rng.standard_normal((M, D))).astype(F32), rng.standard_normal((M, D)).astype(F32), \
        rng.standard_normal((M, D)).astype(F32)
    lb, g_norm = rng.random(D).astype(F32), (1 + 0.2 * rng.standard_normal(D)).astype(F32)
    h0 = rng.standard_normal((B, D)).astype(F32)
    f = lb + (1 - lb) * activations.sigmoid(a_f)
    i = activations.silu(a_i) * (1 - f)
    h_ref = np.empty((B, T, D), F32)
    prev = h0
    for t in range(T):
        prev = h_ref[:, t] = f.reshape(B, T, D)[:, t] * prev + i.reshape(B, T, D)[:, t]
    h_ref = h_ref.reshape(M, D)
    gn, (_, _, rstd_ref) = rmsnorm_forward(a_g, g_norm, 1e-6)
    o_ref = gn * activations.silu(h_ref)
    h, o, rstd = np.empty((M, D), F32), np.empty((M, D), F32), np.empty(M, F32)
    mixers.mlgru_forward_kernel(a_i, a_f, a_g, lb, h0, g_norm, fused.constants(F32, 1e-6), T, h, o, rstd)
    assert rel(h, h_ref) < 1e-5 and rel(o, o_ref) < 1e-5 and rel(rstd, rstd_ref[:, 0]) < 1e-6
    o2 = np.empty_like(o)
    mixers.mlgru_output_kernel(a_g, rstd, g_norm, h, o2)             # the backward's recompute
    assert np.array_equal(o2, o)
    h_bad = np.empty_like(h)                                         # negative control: a_i and a_f swapped
    mixers.mlgru_forward_kernel(a_f, a_i, a_g, lb, h0, g_norm, fused.constants(F32, 1e-6), T, h_bad, o2, rstd)
    assert rel(h_bad, h_ref) > 1e-2


def test_glu_kernels_equal_reference():
    rng = np.random.default_rng(2)
    gate, up = (2 * rng.standard_normal((2, 30, 17))).astype(F32)
    dprod = rng.standard_normal((30, 17)).astype(F32)
    prod = np.empty((30, 17), F32)
    mixers.glu_forward_kernel(gate, up, prod)
    assert rel(prod, activations.silu(gate) * up) < 1e-6
    dgate, dup = np.empty_like(gate), np.empty_like(up)
    mixers.glu_backward_kernel(dprod, gate, up, dgate, dup)
    assert rel(dgate, dprod * up * activations.silu_grad(gate)) < 1e-6
    assert rel(dup, dprod * activations.silu(gate)) < 1e-6
    mixers.glu_backward_kernel(dprod, up, gate, dgate, dup)          # negative control: halves swapped
    assert rel(dgate, dprod * up * activations.silu_grad(gate)) > 1e-2


def test_gate_up_products_equal_one_product():
    # gate_proj's output written as two halves: the same numbers as the one product and its STE backward
    rng = np.random.default_rng(9)
    xq, dy = rng.standard_normal((2, 40, 12)).astype(F32)
    Wq = rng.standard_normal((12, 12)).astype(F32)
    gate_up = np.empty((2, 40, 6), F32)
    nb_block.gate_up_products(xq, Wq, gate_up)
    y = xq @ Wq.T
    assert rel(gate_up[0], y[:, :6]) < 1e-6 and rel(gate_up[1], y[:, 6:]) < 1e-6
    dW, dxq = nb_block.gate_up_backward_products(np.stack([dy[:, :6], dy[:, 6:]]), xq, Wq)
    assert rel(dW, dy.T @ xq) < 1e-6 and rel(dxq, dy @ Wq) < 1e-6
    dW, dxq = nb_block.gate_up_backward_products(np.stack([dy[:, 6:], dy[:, :6]]), xq, Wq)   # negative control
    assert rel(dxq, dy @ Wq) > 1e-2


def test_add_rmsnorm_and_apply_kernels():
    rng = np.random.default_rng(3)
    x, a = rng.standard_normal((2, 12, 33)).astype(F32)
    g = (1 + 0.2 * rng.standard_normal(33)).astype(F32)
    r, y, rstd = np.empty_like(x), np.empty_like(x), np.empty(12, F32)
    mixers.add_rmsnorm_kernel(x, a, g, fused.constants(F32, 1e-6), r, y, rstd)
    y_ref, _ = rmsnorm_forward(x + a, g, 1e-6)
    assert np.array_equal(r, x + a) and rel(y, y_ref) < 1e-6
    y2 = np.empty_like(y)
    mixers.rmsnorm_apply_kernel(r, g, rstd, y2)
    assert np.array_equal(y2, y)


def test_ternary_weight_kernel_is_the_reference_bit_for_bit():
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        W = rng.standard_normal((37, 53)).astype(dtype)
        W[0, :3] = 0.0
        beta = max(float(np.mean(np.abs(W))), 1e-5)
        Wq = np.empty_like(W)
        fused.ternary_weight_kernel(W, W.dtype.type(1.0 / beta), W.dtype.type(beta), Wq)
        assert np.array_equal(Wq, weight_quant(W))
        fused.ternary_weight_kernel(W, W.dtype.type(1.1 / beta), W.dtype.type(beta), Wq)   # negative control
        assert not np.array_equal(Wq, weight_quant(W))


def test_embedding_gradient_is_np_add_at_bit_for_bit():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 9, (4, 50))                                # many repeats
    dx = rng.standard_normal((4, 50, 70)).astype(F32) * np.logspace(-4, 4, 70, dtype=F32)
    want = NumpyBackend().embedding_backward(ids, dx, 11)
    got = NumbaBackend().embedding_backward(ids, dx, 11)
    assert np.array_equal(got, want) and not got[9:].any()
    wrong = NumbaBackend().embedding_backward(ids[:, ::-1], dx, 11)  # negative control: ids misaligned
    assert not np.allclose(wrong, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_kernel_is_the_reference_bit_for_bit(dtype):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal((31, 17)).astype(dtype)
    state = {k: (p0.copy(), np.zeros_like(p0), np.zeros_like(p0)) for k in ("ref", "kernel")}
    b1, b2, eps = 0.9, 0.95, 1e-8
    for t in range(1, 6):
        g = (rng.standard_normal(p0.shape) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        decay = 3e-3 * 0.1 if t % 2 else 0.0
        adamw_update(*state["ref"][:1], g, *state["ref"][1:], 3e-3, decay, b1, b2, eps, c1, c2)
        nb_adamw.adamw_update(*state["kernel"][:1], g, *state["kernel"][1:], 3e-3, decay, b1, b2, eps, c1, c2)
    for a, b in zip(state["kernel"], state["ref"]):
        assert np.array_equal(a, b)
    p_bad = state["kernel"][0].copy()                               # negative control: eps off by 10%
    nb_adamw.adamw_update(p_bad, g, state["kernel"][1].copy(), state["kernel"][2].copy(), 3e-3, 0.0, b1, b2,
                          1.1e-8 * 1e3, c1, c2)
    p_ref = state["ref"][0].copy()
    adamw_update(p_ref, g, state["ref"][1].copy(), state["ref"][2].copy(), 3e-3, 0.0, b1, b2, 1e-8 * 1e3, c1, c2)
    assert not np.array_equal(p_bad, p_ref)


def test_adamw_kernel_falls_back_on_views():
    p = np.zeros((8, 6), np.float32)
    g = np.ones((6, 8), np.float32).T                               # a transposed view: fine as an input
    m, v = np.zeros_like(p), np.zeros_like(p)
    pt = np.zeros((6, 8), np.float32).T                             # not C-contiguous: the NumPy path
    mt, vt = np.zeros((6, 8), np.float32).T, np.zeros((6, 8), np.float32).T
    nb_adamw.adamw_update(p, g, m, v, 1e-2, 0.0, 0.9, 0.95, 1e-8, 0.1, 0.05)
    nb_adamw.adamw_update(pt, g, mt, vt, 1e-2, 0.0, 0.9, 0.95, 1e-8, 0.1, 0.05)
    assert np.array_equal(p, pt) and (p != 0).all()


def test_rmsnorm_backward_adds_into_another_gradient():
    rng = np.random.default_rng(7)
    dy, x, other = rng.standard_normal((3, 70, 24)).astype(F32)
    g = (1 + 0.2 * rng.standard_normal(24)).astype(F32)
    _, (_, _, rstd) = rmsnorm_forward(x, g, 1e-6)
    rstd = np.ascontiguousarray(rstd[:, 0])
    dx, dg = fused.rmsnorm_backward_rows(dy, x, g, rstd)
    summed, dg2 = fused.rmsnorm_backward_rows(dy, x, g, rstd, add=other)
    assert np.array_equal(dg2, dg) and rel(summed, other + dx) < 1e-6 and not np.array_equal(summed, dx)
    inplace = other.copy()
    fused.rmsnorm_backward_rows(dy, x, g, rstd, add=inplace, out=inplace)
    assert np.array_equal(inplace, summed)


def test_fused_step_needs_less_resident_memory_than_caching():
    # peak RSS of one training step in fresh processes (kernels_numba/step_memory.py); the bench's
    # setting measures ~47% less, this small model ~40% (fixed costs weigh more)
    from kernels_numba.step_memory import measure, summarize
    med, _, saving = summarize(measure(dict(vocab_size=256, hidden_size=64, num_layers=2), B=8, T=64,
                                       runs=1, steps=1))
    assert med["caching"]["step"] > 8 * 2**20 and med["fused"]["step"] > 2**20   # the step was seen at all
    assert saving > 0.25, f"fused step needs only {100 * saving:.0f}% less than caching"


def test_mlgru_backward_kernels_equal_reference_math():
    from mmf.layers import recurrence
    from mmf.layers.rmsnorm import rmsnorm_backward
    rng = np.random.default_rng(8)
    B, T, D = 3, 8, 21
    M = B * T
    a_i, a_f, a_g, do, dh_out = ((2 * rng.standard_normal((M, D))).astype(F32) for _ in range(5))
    lb, g_norm = rng.random(D).astype(F32), (1 + 0.2 * rng.standard_normal(D)).astype(F32)
    h0 = rng.standard_normal((B, D)).astype(F32)
    h, o, rstd = np.empty((M, D), F32), np.empty((M, D), F32), np.empty(M, F32)
    mixers.mlgru_forward_kernel(a_i, a_f, a_g, lb, h0, g_norm, fused.constants(F32, 1e-6), T, h, o, rstd)
    # reference: the output gate's backward (mmf.layers.mlgru's official gate)
    gn, c_gn = rmsnorm_forward(a_g, g_norm, 1e-6)
    s_h = activations.silu(h)
    da_g_ref, dgn_ref = rmsnorm_backward(do * s_h, c_gn)
    dh_ref = do * gn * activations.silu_grad(h)
    da_g, dh, dgp = np.empty_like(h), np.empty_like(h), np.empty((1, D))
    mixers.mlgru_output_backward_kernel(do, a_g, rstd, g_norm, h, da_g, dh, dgp)
    assert rel(da_g, da_g_ref) < 1e-5 and rel(dh, dh_ref) < 1e-5 and rel(dgp.sum(0), dgn_ref) < 1e-5
    # reference: the scan's backward and the gates' (mmf.layers.recurrence, mmf.layers.mlgru)
    s_f = activations.sigmoid(a_f)
    f = lb + (1 - lb) * s_f
    df, di, dh0_ref = recurrence.scan_backward(dh_out.reshape(B, T, D), f.reshape(B, T, D), h.reshape(B, T, D), h0)
    df, di = df.reshape(M, D), di.reshape(M, D)
    df = df - di * activations.silu(a_i)
    da_i_ref = di * (1 - f) * activations.silu_grad(a_i)
    da_f_ref = df * (1 - lb) * s_f * (1 - s_f)
    dlb_ref = (df * (1 - s_f)).sum(axis=0)
    di_k, dh0 = np.empty_like(h), np.empty((B, D), F32)
    mixers.mlgru_carry_kernel(dh_out, a_f, lb, T, di_k, dh0)
    assert rel(di_k, di) < 1e-5 and rel(dh0, dh0_ref) < 1e-5
    da_i, da_f, dlbp = np.empty_like(h), np.empty_like(h), np.empty((1, D))
    mixers.mlgru_gates_backward_kernel(di_k, a_i, a_f, lb, h, h0, T, da_i, da_f, dlbp)
    assert rel(da_i, da_i_ref) < 1e-5 and rel(da_f, da_f_ref) < 1e-5 and rel(dlbp.sum(0), dlb_ref) < 1e-5
    # negative controls: the carry started from the wrong end; the states shifted by one token
    mixers.mlgru_carry_kernel(dh_out[::-1].copy(), a_f, lb, T, di_k, dh0)
    assert rel(di_k, di) > 1e-2
    mixers.mlgru_gates_backward_kernel(di, a_i, a_f, lb, np.roll(h, 1, axis=0), h0, T, da_i, da_f, dlbp)
    assert rel(da_f, da_f_ref) > 1e-2


def test_fused_block_refuses_bad_shapes():
    # the kernels do not check bounds: the block checks every array before it launches them
    p, x, h0, lb, _ = block_setup()
    be = NumbaBackend()
    with pytest.raises(ValueError, match="g_norm"):
        be.block_forward(x, dict(p, **{"attn.g_norm.weight": p["attn.g_norm.weight"][:-1]}), lb, h0, 1e-6, "official")
    with pytest.raises(ValueError, match="h0"):
        be.block_forward(x, p, lb, h0[:-1], 1e-6, "official")
    with pytest.raises(ValueError, match="lb"):
        be.block_forward(x, p, lb[:-1], h0, 1e-6, "official")
    with pytest.raises(ValueError, match="down_proj"):
        be.block_forward(x, dict(p, **{"mlp.down_proj.norm.weight": np.ones(3, F32)}), lb, h0, 1e-6, "official")


def test_adamw_takes_the_backend_kernel_and_refuses_other_ops():
    from mmf.training.adamw import AdamW
    params = {"w": np.ones((4, 3), F32)}
    assert AdamW(params, ops=NumbaBackend()).update.__func__ is NumbaBackend.adamw_update
    with pytest.raises(TypeError, match="adamw_update"):
        AdamW(params, ops=object())


def test_onebit_output_norm_runs_on_the_numba_backend_too():
    """A float model with OneBit's output LayerNorm (projection_output_norm) gives the same loss and
    gradients under the Numba backend as under NumPy: its blocks run the reference block on the
    OutputNormOps view, never the fused block, which would skip the norm (the control: the same
    weights without the norm give another loss)."""
    cfg = mmf.MMfreeConfig(vocab_size=32, hidden_size=24, num_layers=2, intermediate_size=40, weights="float",
                           projection_output_norm=True)
    ids = np.random.default_rng(3).integers(0, 32, (2, 9))
    losses = {}
    for backend in ("numpy", "numba"):
        model = mmf.MMfreeLM(cfg, seed=0, backend=backend)
        losses[backend] = model.loss_and_grads(ids[:, :-1], ids[:, 1:])
    (l_np, g_np), (l_nb, g_nb) = losses["numpy"], losses["numba"]
    assert abs(l_nb - l_np) < 1e-5 * abs(l_np)
    for k in g_np:
        assert rel(g_nb[k], g_np[k]) < 1e-4, k
    plain = mmf.MMfreeLM(dataclasses.replace(cfg, projection_output_norm=False), seed=0, backend="numba")
    assert abs(plain.loss_and_grads(ids[:, :-1], ids[:, 1:])[0] - l_np) > 1e-3
