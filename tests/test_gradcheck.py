"""Finite-difference checks (SPEC §4) of every layer and every parameter of a 2-layer model, and the
negative controls that show the checker can fail."""
import numpy as np
import pytest

from mmf import gradcheck
from mmf.layers import rmsnorm


@pytest.fixture(scope="module")
def results():
    return gradcheck.run_all(seed=0)


def test_every_layer_passes(results):
    bad = {k: e for k, e in results.items() if not e < gradcheck.TOLERANCE}
    assert not bad, f"relative errors above {gradcheck.TOLERANCE}: {bad}"


def test_every_model_parameter_is_checked(results):
    checked = {t for (layer, t) in results if layer.startswith("E10")}
    _, model_params, _ = gradcheck.model_case()
    assert checked == set(model_params)
    assert len(checked) == 2 + 2 * 15 + 3         # embeddings, lower bounds, 15 per block, final norm, head


def test_every_layer_is_checked(results):
    layers = {layer for layer, _ in results}
    for tag in ("E1", "E4/E5 bitlinear (caching)", "E4/E5 bitlinear (fused)", "E6 recurrence", "E6 mlgru (layer 0)",
                "E6 mlgru (lower-bounded)", "E7", "E8", "E9", "E10", "E11"):
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
