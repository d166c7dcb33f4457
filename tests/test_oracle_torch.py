"""mmf's straight-through backward (E5) with quantization ON, against the independent PyTorch oracle.

Finite differences cannot check a quantized model (round/clip are flat almost everywhere, and the STE
gradient is by definition not the true derivative), so the check is: same numbers in, same logits and
same STE gradients out, in float64, for one BitLinear (both variants) and for every parameter tensor of
a 2-layer model. Inputs are re-drawn until no quantization code lies within 1e-6 of a rounding tie.

Run as a script to print the worst errors per tensor:  python tests/test_oracle_torch.py
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # oracle_torch sits next to this file
import oracle_torch as oracle  # noqa: E402

import mmf  # noqa: E402
from mmf.layers.bitlinear import bitlinear_backward, bitlinear_forward  # noqa: E402

TOL = 1e-5           # acceptance: logits and every gradient within 1e-5 relative (float64)
TIE_MARGIN = 1e-6    # no |x*s| or |W/beta| may have a fractional part within this of 0.5
MAX_DRAWS = 20


# ----------------------------------------------------------------------------
# Hand-computed value tables for the oracle's own quantizers (so the oracle is trusted on its own)

def test_oracle_quantizers_match_hand_computed_tables():
    q = oracle.Quantizer()
    x = torch.tensor([[1.0, -0.3, 0.1, 0.0]], dtype=torch.float64)
    # s = 127 / 1.0; x*s = [127, -38.1, 12.7, 0] -> [127, -38, 13, 0]
    np.testing.assert_array_equal(q.activations(x).numpy() * 127.0, [[127.0, -38.0, 13.0, 0.0]])
    W = torch.tensor([[0.2, -0.6], [0.05, 1.0]], dtype=torch.float64)
    # beta = mean|W| = 1.85 / 4 = 0.4625; W/beta = [0.43, -1.30, 0.11, 2.16] -> [0, -1, 0, 1]
    np.testing.assert_allclose(q.weights(W).numpy(), 0.4625 * np.array([[0, -1], [0, 1]]), rtol=1e-15)
    # the code closest to a tie is W/beta = 0.2/0.4625 = 0.432..., 0.068 away from 0.5
    assert q.tie_margin == pytest.approx(0.5 - 0.2 / 0.4625, abs=1e-12)


def test_tie_guard_sees_a_tie():
    """Negative control for the tie guard: a code exactly on .5 gives a margin of 0."""
    q = oracle.Quantizer()
    q.activations(torch.tensor([[1.0, 2.5 / 127]], dtype=torch.float64))   # x*s = [127, 2.5]
    assert q.tie_margin < 1e-12


# ----------------------------------------------------------------------------
# Fixtures: random problems whose quantization codes stay away from ties

def draw_bitlinear_problem(seed):
    """x (2, 5, 16), W (24, 16), g perturbed from ones, upstream dy (2, 5, 24), all float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 16))
    W = 0.05 * rng.standard_normal((24, 16))
    g = 1.0 + 0.2 * rng.standard_normal(16)
    dy = rng.standard_normal((2, 5, 24))
    return x, W, g, dy


def small_model_problem(seed):
    """A 2-layer float64 model (V=37, D=16, I=32) with non-trivial params, and one batch (B=2, T=5)."""
    cfg = mmf.MMfreeConfig(vocab_size=37, hidden_size=16, num_layers=2, intermediate_size=32)
    model = mmf.MMfreeLM(cfg, seed=seed, dtype=np.float64, quantize=True)
    rng = np.random.default_rng(1000 + seed)
    for name, p in model.params.items():
        if name.endswith("norm.weight"):
            model.params[name] = 1.0 + 0.2 * rng.standard_normal(p.shape)       # gains away from 1
        elif name == "model.lower_bounds":
            model.params[name] = 0.7 * rng.standard_normal(p.shape)             # lb no longer l/L
        else:
            model.params[name] = p + 0.5 * np.std(p) * rng.standard_normal(p.shape)
    ids = rng.integers(0, cfg.vocab_size, (2, 5))
    targets = rng.integers(0, cfg.vocab_size, (2, 5))
    return model, ids, targets


def first_tie_free(draw, margin_of):
    """Draw problems with seeds 0, 1, ... until the oracle reports a tie margin above TIE_MARGIN."""
    for seed in range(MAX_DRAWS):
        problem = draw(seed)
        margin = margin_of(problem)
        if margin > TIE_MARGIN:
            if __name__ == "__main__":
                print(f"(problem seed {seed}: closest quantization code is {margin:.1e} from a rounding tie)")
            return problem
    raise AssertionError(f"no tie-free problem in {MAX_DRAWS} draws")


def tie_free_bitlinear_problem():
    return first_tie_free(draw_bitlinear_problem, lambda pr: oracle.oracle_bitlinear(*pr)[-1])


def tie_free_model_problem():
    def margin(pr):
        model, ids, targets = pr
        return oracle.oracle_loss_and_grads(dict(model.params), ids, targets)[-1]
    return first_tie_free(small_model_problem, margin)


@pytest.fixture(scope="module")
def bitlinear_problem():
    return tie_free_bitlinear_problem()


@pytest.fixture(scope="module")
def model_problem():
    return tie_free_model_problem()


def mmf_bitlinear(x, W, g, dy, fused):
    y, cache = bitlinear_forward(x, W, g, weights="ternary", fused=fused)
    dx, dW, dg = bitlinear_backward(dy, cache)
    return {"y": y, "dx": dx, "dW": dW, "dg": dg}


def oracle_bitlinear(x, W, g, dy):
    y, dx, dW, dg, margin = oracle.oracle_bitlinear(x, W, g, dy)
    assert margin > TIE_MARGIN
    return {"y": y, "dx": dx, "dW": dW, "dg": dg}


def model_vs_oracle(model, ids, targets):
    """Returns (ours, ref): {'logits', 'loss', every parameter name} from mmf and from the oracle."""
    loss, grads = model.loss_and_grads(ids, targets)
    ours = {"logits": model.forward(ids), "loss": np.array(loss), **grads}
    ref_loss, ref_logits, ref_grads, margin = oracle.oracle_loss_and_grads(dict(model.params), ids, targets)
    assert margin > TIE_MARGIN
    ref = {"logits": ref_logits, "loss": np.array(ref_loss), **ref_grads}
    return ours, ref


def failures(report):
    return {k: v for k, v in report.items() if not (v[0] < TOL and v[1] < TOL)}


# ----------------------------------------------------------------------------
# (a) one BitLinear, both variants

@pytest.mark.parametrize("fused", [False, True], ids=["caching", "fused"])
def test_bitlinear_ste_matches_oracle(bitlinear_problem, fused):
    ok, report = oracle.compare(mmf_bitlinear(*bitlinear_problem, fused=fused), oracle_bitlinear(*bitlinear_problem))
    assert ok, f"BitLinear ({'fused' if fused else 'caching'}) differs from the oracle: {failures(report)}"


def test_bitlinear_float_forward_matches_oracle(bitlinear_problem):
    """With both quantizers off the two are plain RMSNorm+linear: the oracle's float path agrees too."""
    x, W, g, dy = bitlinear_problem
    y, _ = bitlinear_forward(x, W, g, weights="float")
    assert oracle.rel_error(y, oracle.oracle_bitlinear(x, W, g, dy, quantize=False)[0]) < 1e-12


# ----------------------------------------------------------------------------
# (b) the whole 2-layer model: logits and every gradient tensor

@pytest.mark.parametrize("fused", [False, True], ids=["caching", "fused"])
def test_model_ste_matches_oracle(model_problem, fused):
    model, ids, targets = model_problem
    model.backend.fused = fused
    ours, ref = model_vs_oracle(model, ids, targets)
    assert set(ours) - {"logits", "loss"} == set(model.params)            # every parameter tensor is compared
    ok, report = oracle.compare(ours, ref)
    assert ok, f"mmf model (fused={fused}) differs from the oracle: {failures(report)}"


def test_quantization_changes_the_gradients(model_problem):
    """The comparison sees quantization: the float model's gradients are far from the STE oracle's."""
    model, ids, targets = model_problem
    model.quantize = False
    try:
        ours, ref = model_vs_oracle(model, ids, targets)
    finally:
        model.quantize = True
    ok, report = oracle.compare(ours, ref)
    assert not ok
    assert report["logits"][0] > 100 * TOL


# ----------------------------------------------------------------------------
# Negative controls: a deliberately wrong mmf-side gradient must fail the comparison

def test_negative_control_one_wrong_gradient_tensor(model_problem):
    model, ids, targets = model_problem
    ours, ref = model_vs_oracle(model, ids, targets)
    name = "model.layers.1.attn.f_proj.weight"
    ours[name] = ours[name] * (1 + 1e-4)                                  # 1e-4 relative: just above TOL
    ok, report = oracle.compare(ours, ref)
    assert not ok
    assert set(failures(report)) == {name}


def test_negative_control_wrong_bitlinear_backward(bitlinear_problem):
    """A BitLinear backward that uses the float weight instead of the quantized one (a classic STE bug)."""
    x, W, g, dy = bitlinear_problem
    ours = mmf_bitlinear(x, W, g, dy, fused=False)
    _, cache = bitlinear_forward(x, W, g, weights="float")
    ours["dx"] = bitlinear_backward(dy, cache)[0]                          # dx through W instead of W~
    ok, report = oracle.compare(ours, oracle_bitlinear(x, W, g, dy))
    assert not ok
    assert "dx" in failures(report)


# ----------------------------------------------------------------------------
# Script mode: the numbers quoted in the closing note

def main():
    def show(title, report):
        print(title)
        width = max(len(k) for k in report)
        for name, (rel, mx) in report.items():
            print(f"  {name:<{width}}  rel {rel:.2e}   max-elementwise {mx:.2e}")
        worst = max(max(v) for v in report.values())
        print(f"  worst: {worst:.2e}  ({'ok' if worst < TOL else 'FAIL'} at tolerance {TOL:g})\n")
        return worst

    bl = tie_free_bitlinear_problem()
    worst = 0.0
    for fused in (False, True):
        ok, report = oracle.compare(mmf_bitlinear(*bl, fused=fused), oracle_bitlinear(*bl))
        worst = max(worst, show(f"BitLinear ({'fused' if fused else 'caching'}), quantization on, float64", report))
    model, ids, targets = tie_free_model_problem()
    for fused in (False, True):
        model.backend.fused = fused
        ok, report = oracle.compare(*model_vs_oracle(model, ids, targets))
        worst = max(worst, show(f"2-layer model V=37 D=16 I=32 B=2 T=5 (fused={fused}), quantization on, "
                                "float64", report))
    print(f"overall worst error vs the PyTorch oracle: {worst:.2e}")
    return 0 if worst < TOL else 1


if __name__ == "__main__":
    sys.exit(main())
