"""Finite-difference checks (docs/equations.md, "Numerics") of every layer and every parameter of a 2-layer model, and the
negative controls that show the checker can fail."""
import numpy as np
import pytest

from mmf import gradcheck
from mmf.layers import rmsnorm


@pytest.fixture
def results(gradcheck_results):
    return gradcheck_results


def test_every_layer_passes(results):
    bad = {k: e for k, e in results.items() if not e < gradcheck.TOLERANCE}
    assert not bad, f"relative errors above {gradcheck.TOLERANCE}: {bad}"


def test_every_model_parameter_is_checked(results):
    checked = {t for (layer, t) in results if layer == "E10 model (2 layers)"}
    _, model_params, _ = gradcheck.model_case()
    assert checked == set(model_params)
    assert len(checked) == 2 + 2 * 15 + 3         # embeddings, lower bounds, 15 per block, final norm, head


def test_every_layer_is_checked(results):
    layers = {layer for layer, _ in results}
    for tag in ("E1", "E4/E5 bitlinear (caching)", "E4/E5 bitlinear (fused)", "E6 recurrence", "E6 mlgru (layer 0)",
                "E6 mlgru (lower-bounded)", "E6 mlgru (paper output gate, fused)",
                "E6 mlgru (paper output gate, caching)", "E10 model (2 layers, paper output gate)", "E7", "E8", "E9", "E10", "E11"):
        assert any(l.startswith(tag) for l in layers), tag


def test_negative_control_wrong_rmsnorm_backward_is_rejected():
    """A classic mistake: forgetting that rstd depends on x (dx = rstd * dxhat). The checker must reject it."""
    rng = np.random.default_rng(0)
    t = {"x": rng.standard_normal((2, 3, 5)), "g": 1 + 0.1 * rng.standard_normal(5)}
    dout = rng.standard_normal((2, 3, 5))
    f = lambda: float(np.sum(rmsnorm.rmsnorm_forward(t["x"], t["g"], 1e-6)[0] * dout))
    y, (x, g, rstd) = rmsnorm.rmsnorm_forward(t["x"], t["g"], 1e-6)
    _, dg = rmsnorm.rmsnorm_backward(dout, (x, g, rstd))
    wrong_dx = rstd * dout * g                                   # missing the projection term
    errs = gradcheck.check_gradients(f, t, {"x": wrong_dx, "g": dg})
    assert errs["g"] < gradcheck.TOLERANCE                       # the right one still passes ...
    assert errs["x"] > 1e-3                                      # ... the wrong one is caught


def test_negative_control_small_perturbation_is_rejected():
    """A gradient off by 0.1% in one entry must fail a 1e-6 check."""
    f, tensors, analytic = gradcheck.model_case()
    name = "model.layers.1.attn.f_proj.weight"
    wrong = dict(analytic)
    wrong[name] = analytic[name].copy()
    wrong[name].flat[3] *= 1.001
    wrong[name].flat[3] += 1e-3 * np.abs(analytic[name]).max()
    errs = gradcheck.check_gradients(f, {name: tensors[name]}, wrong)
    assert errs[name] > gradcheck.TOLERANCE


def test_numerical_gradient_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck.numerical_gradient(lambda: 0.0, np.zeros(3, np.float32))


# ----------------------------------------------------------------------------
# The Transformer++ baseline: its layers and both parameter layouts

def test_every_transformer_layer_and_parameter_is_checked(results):
    layers = {layer for layer, _ in results}
    for name in ("RoPE", "attention (linear projections)", "attention (linear projections, KV-cache past)",
                 "attention (BitLinear projections, KV-cache past)", "SwiGLU (linear projections)",
                 "SwiGLU (BitLinear projections)", "Transformer++ block"):
        assert name in layers, name
    for model, weights, per_block in (("Transformer++ model (2 layers)", "float", 2 + 4 + 3),
                                      ("BitNet b1.58 layout, quantizers off (2 layers)", "ternary", 2 + 2 * 7)):
        checked = {t for (layer, t) in results if layer == model}
        _, params, _ = gradcheck.transformer_model_case(weights)
        assert checked == set(params)
        assert len(checked) == 1 + 2 * per_block + 2       # embedding, blocks, final norm, LM head


def test_negative_control_rope_backward_with_the_wrong_sign_is_rejected():
    """A classic mistake: backpropagating through RoPE by rotating forward (+angle) instead of by -angle."""
    from mmf.layers import rope
    rng = np.random.default_rng(0)
    cos, sin = rope.rope_tables(np.arange(3, 7), 6)
    t = {"x": rng.standard_normal((2, 2, 4, 6))}
    dout = rng.standard_normal((2, 2, 4, 6))
    f = lambda: float(np.sum(rope.rope_forward(t["x"], cos, sin)[0] * dout))
    right = rope.rope_backward(dout, (cos, sin))
    wrong = rope.rope_forward(dout, cos, sin)[0]                 # rotation by +angle
    assert gradcheck.check_gradients(f, t, {"x": right})["x"] < gradcheck.TOLERANCE
    assert gradcheck.check_gradients(f, t, {"x": wrong})["x"] > 1e-2


def test_negative_control_softmax_backward_without_the_row_term_is_rejected():
    """Attention's softmax backward without the - rowsum(dP * P) term must fail the check (on W_q here)."""
    from mmf.backend import NumpyBackend
    from mmf.layers import attention
    rng = np.random.default_rng(1)
    ops = NumpyBackend(weights="float")
    t = {"xn": rng.standard_normal((2, 3, 8)),
         **{f"{n}.weight": 0.4 * rng.standard_normal((8, 8)) for n in attention.PROJECTIONS}}
    dout = rng.standard_normal((2, 3, 8))
    p = lambda: {k: v for k, v in t.items() if k != "xn"}
    f = lambda: float(np.sum(attention.attention_forward(t["xn"], p(), 2, ops=ops)[0] * dout))
    cache = attention.attention_forward(t["xn"], p(), 2, ops=ops)[2]
    _, dp, _, _ = attention.attention_backward(dout, cache, ops)
    Wq = {"q_proj.weight": t["q_proj.weight"]}
    assert gradcheck.check_gradients(f, Wq, dp)["q_proj.weight"] < gradcheck.TOLERANCE   # the right one
    # the wrong one, rebuilt from the same cache: dS = P * dP * scale, the row term dropped
    c_q, c_k, c_v, c_rq, c_rk, q, K, V, P, scale, pos0, c_o = cache
    dctx, _ = attention.projection_backward(dout, c_o, ops)
    dP = attention.split_heads(dctx, 2) @ V.transpose(0, 1, 3, 2)          # (B, H, T, S)
    dq = attention.rope_backward((P * dP * scale) @ K, c_rq)
    _, wrong = attention.projection_backward(attention.merge_heads(dq), c_q, ops)
    assert gradcheck.check_gradients(f, Wq, wrong)["q_proj.weight"] > 1e-3


def test_paper_output_gate_checks_every_parameter_and_differs_from_official(results):
    """The paper gate's model case covers the same tensors, and its gradients are not the official ones
    (so the switch really changes the math the checker sees)."""
    paper = {t for (layer, t) in results if layer == "E10 model (2 layers, paper output gate)"}
    _, params, g_official = gradcheck.model_case()
    _, _, g_paper = gradcheck.model_case(output_gate="paper")
    assert paper == set(params)
    name = "model.layers.1.attn.g_proj.weight"
    assert gradcheck.rel_error(g_official[name], g_paper[name]) > 1e-2
    assert not np.any(g_paper["model.layers.0.attn.g_norm.weight"])      # unused by sigmoid(g) * h


def test_negative_control_wrong_paper_gate_backward_is_rejected():
    """Dropping the sigmoid's derivative from the paper gate's backward must fail the checker."""
    from mmf.layers import mlgru
    rng = np.random.default_rng(1)
    B, T, D = 2, 3, 4
    t = {"xn": rng.standard_normal((B, T, D))}
    p = {k + ".weight": 0.4 * rng.standard_normal((D, D)) for k in mlgru.PROJECTIONS}
    p.update({k + ".norm.weight": 1 + 0.1 * rng.standard_normal(D) for k in mlgru.PROJECTIONS})
    p["g_norm.weight"] = np.ones(D)
    from mmf.backend import NumpyBackend
    ops = NumpyBackend(quantize=False, fused=False)
    h0, dout = np.zeros((B, D)), rng.standard_normal((B, T, D))
    fwd = lambda: mlgru.mlgru_scan_forward(t["xn"], p, None, h0, 1e-6, ops, "paper")
    f = lambda: float(np.sum(fwd()[0] * dout))
    out, h, cache = fwd()
    right, *_ = mlgru.mlgru_scan_backward(dout, cache, ops=ops)
    assert gradcheck.check_gradients(f, t, {"xn": right})["xn"] < gradcheck.TOLERANCE
    stored = cache[-1]
    s_f, f_gate, s_i, g_n, s_h = stored
    wrong_cache = cache[:-1] + ((s_f, f_gate, s_i, np.full_like(g_n, 0.5), s_h),)   # sigmoid'(g) replaced
    wrong, *_ = mlgru.mlgru_scan_backward(dout, wrong_cache, ops=ops)
    assert gradcheck.check_gradients(f, t, {"xn": wrong})["xn"] > 1e-3
