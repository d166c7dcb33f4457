"""Binary weights (E3b, BitNet): mmf's straight-through backward against the independent PyTorch oracle,
and the integer form (+-1 codes) against the fake-quant form.

Same method as tests/test_oracle_torch.py: float64, the same numbers into mmf and into the oracle, logits
and every gradient within 1e-5 relative, inputs re-drawn until no quantization code is near a tie (for
binary weights the tie is W - alpha near 0, where the sign flips), and negative controls that must fail.

Run as a script to print the worst errors:  python tests/test_oracle_binary.py
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # oracle_torch sits next to this file
import oracle_torch as oracle  # noqa: E402

import mmf  # noqa: E402
from mmf.layers.bitlinear import bitlinear_backward, bitlinear_forward, bitlinear_int_forward  # noqa: E402
from mmf.layers.quant import weight_codes, weight_quant_binary, weight_quant_binary_int  # noqa: E402

TOL = 1e-5
TIE_MARGIN = 1e-6
MAX_DRAWS = 20


# ----------------------------------------------------------------------------
# the oracle's binary quantizer on its own, against a hand-computed table

def test_oracle_binary_quantizer_hand_table_and_sign_of_zero():
    q = oracle.BinaryQuantizer()
    # alpha = mean = 0, beta = mean|W| = 2/3; W - alpha = [-1, 0, 1] -> signs [-1, -1, +1] (Sign(0) = -1)
    W = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(q.weights(W).numpy(), (2 / 3) * np.array([[-1, -1, 1]]), rtol=1e-15)
    assert q.tie_margin == 0.0                             # the middle entry sits exactly on the tie
    # a table with alpha != 0: alpha = 0.25/6, beta = 3.25/6
    W = torch.tensor([[0.5, -0.5, 1.0], [-1.0, 0.25, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(oracle.BinaryQuantizer().weights(W).numpy(),
                               (3.25 / 6) * np.array([[1, -1, 1], [-1, 1, -1]]), rtol=1e-15)


def test_oracle_binary_weight_gradient_is_straight_through():
    W = torch.tensor([[0.3, -0.2], [0.1, 0.7]], dtype=torch.float64, requires_grad=True)
    (oracle.BinaryQuantizer().weights(W) * torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)).sum().backward()
    np.testing.assert_array_equal(W.grad.numpy(), [[1.0, 2.0], [3.0, 4.0]])       # identity, alpha/beta detached


# ----------------------------------------------------------------------------
# problems away from ties

def draw_bitlinear_problem(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 16))
    W = 0.05 * rng.standard_normal((24, 16)) + 0.01            # a non-zero mean, so alpha matters
    g = 1.0 + 0.2 * rng.standard_normal(16)
    dy = rng.standard_normal((2, 5, 24))
    return x, W, g, dy


def draw_model_problem(seed):
    """A 2-layer float64 binary MMfree model (V=37, D=16, I=32) with non-trivial params, one batch."""
    cfg = mmf.MMfreeConfig(vocab_size=37, hidden_size=16, num_layers=2, intermediate_size=32, weights="binary")
    model = mmf.MMfreeLM(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(2000 + seed)
    for name, p in model.params.items():
        if name.endswith("norm.weight"):
            model.params[name] = 1.0 + 0.2 * rng.standard_normal(p.shape)
        elif name == "model.lower_bounds":
            model.params[name] = 0.7 * rng.standard_normal(p.shape)
        else:
            model.params[name] = p + 0.5 * np.std(p) * rng.standard_normal(p.shape) + 0.2 * np.std(p)
    ids = rng.integers(0, cfg.vocab_size, (2, 5))
    targets = rng.integers(0, cfg.vocab_size, (2, 5))
    return model, ids, targets


def first_tie_free(draw, margin_of):
    for seed in range(MAX_DRAWS):
        problem = draw(seed)
        if margin_of(problem) > TIE_MARGIN:
            return problem
    raise AssertionError(f"no tie-free problem in {MAX_DRAWS} draws")


def tie_free_bitlinear_problem():
    return first_tie_free(draw_bitlinear_problem, lambda pr: oracle.oracle_bitlinear(*pr, weights="binary")[-1])


def tie_free_model_problem():
    def margin(pr):
        model, ids, targets = pr
        return oracle.oracle_loss_and_grads(dict(model.params), ids, targets, weights="binary")[-1]
    return first_tie_free(draw_model_problem, margin)


@pytest.fixture(scope="module")
def bitlinear_problem():
    return tie_free_bitlinear_problem()


@pytest.fixture(scope="module")
def model_problem():
    return tie_free_model_problem()


def mmf_bitlinear(x, W, g, dy, fused, weights="binary"):
    y, cache = bitlinear_forward(x, W, g, weights=weights, fused=fused)
    dx, dW, dg = bitlinear_backward(dy, cache)
    return {"y": y, "dx": dx, "dW": dW, "dg": dg}


def oracle_bitlinear(x, W, g, dy):
    y, dx, dW, dg, margin = oracle.oracle_bitlinear(x, W, g, dy, weights="binary")
    assert margin > TIE_MARGIN
    return {"y": y, "dx": dx, "dW": dW, "dg": dg}


def model_vs_oracle(model, ids, targets):
    loss, grads = model.loss_and_grads(ids, targets)
    ours = {"logits": model.forward(ids), "loss": np.array(loss), **grads}
    ref_loss, ref_logits, ref_grads, margin = oracle.oracle_loss_and_grads(dict(model.params), ids, targets,
                                                                           weights="binary")
    assert margin > TIE_MARGIN
    return ours, {"logits": ref_logits, "loss": np.array(ref_loss), **ref_grads}


def failures(report):
    return {k: v for k, v in report.items() if not (v[0] < TOL and v[1] < TOL)}


# ----------------------------------------------------------------------------
# STE backward: one binary BitLinear and a whole binary model

@pytest.mark.parametrize("fused", [False, True], ids=["caching", "fused"])
def test_binary_bitlinear_ste_matches_oracle(bitlinear_problem, fused):
    ok, report = oracle.compare(mmf_bitlinear(*bitlinear_problem, fused=fused), oracle_bitlinear(*bitlinear_problem))
    assert ok, f"binary BitLinear differs from the oracle: {failures(report)}"


@pytest.mark.parametrize("fused", [False, True], ids=["caching", "fused"])
def test_binary_model_ste_matches_oracle(model_problem, fused):
    model, ids, targets = model_problem
    model.backend.fused = fused
    ours, ref = model_vs_oracle(model, ids, targets)
    assert set(ours) - {"logits", "loss"} == set(model.params)
    ok, report = oracle.compare(ours, ref)
    assert ok, f"binary MMfree model (fused={fused}) differs from the oracle: {failures(report)}"


# negative controls: each must make the comparison fail

def test_negative_control_ternary_layer_against_binary_oracle(bitlinear_problem):
    ok, report = oracle.compare(mmf_bitlinear(*bitlinear_problem, fused=False, weights="ternary"),
                                oracle_bitlinear(*bitlinear_problem))
    assert not ok and {"y", "dx"} <= set(failures(report))


def test_negative_control_ternary_model_against_binary_oracle(model_problem):
    model, ids, targets = model_problem
    model.set_weights("ternary")
    try:
        ours, ref = model_vs_oracle(model, ids, targets)
    finally:
        model.set_weights("binary")
    ok, report = oracle.compare(ours, ref)
    assert not ok and report["logits"][0] > 100 * TOL


def test_negative_control_one_wrong_gradient_tensor(model_problem):
    model, ids, targets = model_problem
    ours, ref = model_vs_oracle(model, ids, targets)
    name = "model.layers.0.mlp.down_proj.weight"
    ours[name] = ours[name] * (1 + 1e-4)
    ok, report = oracle.compare(ours, ref)
    assert not ok and set(failures(report)) == {name}


def test_negative_control_sign_of_zero_as_zero():
    """A binary quantizer built on np.sign (Sign(0) = 0) gives a different layer on a matrix with a
    weight exactly at its mean; the comparison must see it."""
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((3, 4)), np.ones(4)
    W = np.array([[0.3, -0.1, 0.2, 0.0], [0.1, 0.1, -0.2, 0.4]])        # mean 0.1: three entries at alpha
    alpha, beta = W.mean(), np.abs(W).mean()
    wrong = np.sign(W - alpha) * beta                                     # zeros where W == alpha
    y_ok, _ = bitlinear_forward(x, W, g, weights="binary")
    y_wrong, _ = bitlinear_forward(x, wrong, g, weights="float")
    from mmf.layers.quant import activation_quant
    from mmf.layers.rmsnorm import rmsnorm_forward
    xq = activation_quant(rmsnorm_forward(x, g, 1e-6)[0])
    np.testing.assert_allclose(y_ok, xq @ weight_quant_binary(W).T, rtol=1e-12)
    assert oracle.rel_error(xq @ wrong.T, y_ok) > 1e-2


# ----------------------------------------------------------------------------
# the integer form: +-1 codes, int8 activations, additions only

def test_binary_integer_form_equals_fake_quant_form():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 32))
    W = 0.05 * rng.standard_normal((20, 32)) + 0.02
    g = 1.0 + 0.1 * rng.standard_normal(32)
    codes, beta = weight_codes(W, "binary")
    assert set(np.unique(codes)) == {-1, 1} and codes.dtype == np.int8
    Wb, alpha, beta2 = weight_quant_binary_int(W)
    np.testing.assert_array_equal(codes, Wb)
    assert beta == beta2 and alpha == pytest.approx(W.mean())
    y_int = bitlinear_int_forward(x, codes, beta, g)
    y_fake, _ = bitlinear_forward(x, W, g, weights="binary")
    assert oracle.rel_error(y_int, y_fake) < 1e-14
    # negative control: ternary codes of the same matrix give another layer
    t_codes, t_beta = weight_codes(W, "ternary")
    assert oracle.rel_error(bitlinear_int_forward(x, t_codes, t_beta, g), y_fake) > 1e-2


def test_binary_codes_run_on_the_packed_add_subtract_kernel():
    kn = pytest.importorskip("kernels_numba")
    rng = np.random.default_rng(4)
    codes, _ = weight_codes(rng.standard_normal((24, 64)), "binary")
    q = rng.integers(-127, 128, (5, 64)).astype(np.int8)
    exact = q.astype(np.int64) @ codes.T.astype(np.int64)
    np.testing.assert_array_equal(kn.ternary_matmul(kn.pack_ternary(codes), q), exact)


# ----------------------------------------------------------------------------

def main():
    worst = 0.0
    bl = tie_free_bitlinear_problem()
    for fused in (False, True):
        _, report = oracle.compare(mmf_bitlinear(*bl, fused=fused), oracle_bitlinear(*bl))
        w = max(max(v) for v in report.values())
        print(f"binary BitLinear ({'fused' if fused else 'caching'}): worst {w:.2e}")
        worst = max(worst, w)
    model, ids, targets = tie_free_model_problem()
    for fused in (False, True):
        model.backend.fused = fused
        _, report = oracle.compare(*model_vs_oracle(model, ids, targets))
        w = max(max(v) for v in report.values())
        print(f"binary 2-layer model, logits, loss and {len(report) - 2} gradient tensors (fused={fused}): "
              f"worst {w:.2e}")
        worst = max(worst, w)
    print(f"overall worst error vs the PyTorch oracle (binary weights): {worst:.2e}")
    return 0 if worst < TOL else 1


if __name__ == "__main__":
    sys.exit(main())
