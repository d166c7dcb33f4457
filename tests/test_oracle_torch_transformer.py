"""mmf.TransformerLM's straight-through backward with its quantizers ON, against the independent
PyTorch oracle (tests/oracle_torch_transformer.py): BitNet b1.58 (ternary), BitNet (binary), and ternary
Q/K on top of ternary and of float projections. Same numbers in, the same logits and STE gradients of
every parameter tensor out, in float64, within 1e-5 (observed ~1e-15). Problems are re-drawn until no
quantization code lies within 1e-6 of a rounding tie.

Run as a script to print the worst error per variant:  python tests/test_oracle_torch_transformer.py
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)      # tensors of a few hundred numbers: extra threads only wait on a busy 2-core machine (30x)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the oracles sit next to this file
import oracle_torch  # noqa: E402
import oracle_torch_transformer as oracle  # noqa: E402

import mmf  # noqa: E402

TOL = 1e-5
TIE_MARGIN = 1e-6
MAX_DRAWS = 20
VARIANTS = [("ternary", False), ("binary", False), ("ternary", True), ("float", True)]
ids_of = lambda v: f"{v[0]}{'+ternary_qk' if v[1] else ''}"


def problem(weights, ternary_qk, seed):
    """A 2-layer float64 model (V=29, D=16, H=2, I=24) with perturbed params, one batch (B=2, T=6)."""
    cfg = mmf.TransformerConfig(vocab_size=29, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
                                weights=weights, ternary_qk=ternary_qk)
    model = mmf.TransformerLM(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(500 + seed)
    for name, p in model.params.items():
        if name.endswith("norm.weight"):
            model.params[name] = 1.0 + 0.2 * rng.standard_normal(p.shape)      # gains away from 1
        else:
            model.params[name] = 10 * p + 0.1 * rng.standard_normal(p.shape)   # attention far from uniform
    ids, targets = rng.integers(0, cfg.vocab_size, (2, 2, 6))
    return model, ids, targets


def compare_with_oracle(model, ids, targets, oracle_variant=None):
    """(ok, report, tie_margin): mmf's logits, loss and gradients against the oracle's."""
    weights, ternary_qk = oracle_variant or (model.config.weights, model.config.ternary_qk)
    loss, grads = model.loss_and_grads(ids, targets)
    ours = {"logits": model.forward(ids), "loss": np.array(loss), **grads}
    r_loss, r_logits, r_grads, margin = oracle.oracle_loss_and_grads(dict(model.params), ids, targets,
                                                                     model.config.num_heads, weights, ternary_qk)
    ok, report = oracle_torch.compare(ours, {"logits": r_logits, "loss": np.array(r_loss), **r_grads}, TOL)
    return ok, report, margin


def tie_free_problem(weights, ternary_qk):
    for seed in range(MAX_DRAWS):
        model, ids, targets = problem(weights, ternary_qk, seed)
        ok, report, margin = compare_with_oracle(model, ids, targets)
        if margin > TIE_MARGIN:
            return model, ids, targets, ok, report
    raise AssertionError(f"no tie-free problem in {MAX_DRAWS} draws")


@pytest.fixture(scope="module", params=VARIANTS, ids=ids_of)
def checked(request):
    return request.param, tie_free_problem(*request.param)


def test_ste_backward_matches_the_oracle(checked):
    (weights, ternary_qk), (model, ids, targets, ok, report) = checked
    assert set(report) - {"logits", "loss"} == set(model.params)       # every parameter tensor compared
    bad = {k: v for k, v in report.items() if not (v[0] < TOL and v[1] < TOL)}
    assert ok, f"{weights} ternary_qk={ternary_qk} differs from the oracle: {bad}"


def test_the_comparison_sees_each_quantizer(checked):
    """Negative controls: the oracle of a neighbouring variant (Q/K quantizer toggled; the other weight
    format) disagrees, so agreement above is not an accident of quantizers that do nothing."""
    (weights, ternary_qk), (model, ids, targets, _, _) = checked
    others = [(weights, not ternary_qk)]
    if weights != "float":
        others.append(("binary" if weights == "ternary" else "ternary", ternary_qk))
    for variant in others:
        ok, report, _ = compare_with_oracle(model, ids, targets, oracle_variant=variant)
        assert not ok and report["logits"][0] > 100 * TOL, variant


def test_one_wrong_gradient_tensor_is_caught(checked):
    (weights, ternary_qk), (model, ids, targets, _, _) = checked
    loss, grads = model.loss_and_grads(ids, targets)
    name = "model.layers.0.self_attn.k_proj.weight"
    grads[name] = grads[name] * (1 + 1e-4)
    r_loss, r_logits, r_grads, _ = oracle.oracle_loss_and_grads(dict(model.params), ids, targets, 2, weights,
                                                                ternary_qk)
    ok, report = oracle_torch.compare(grads, r_grads, TOL)
    assert not ok and {k for k, v in report.items() if not v[0] < TOL or not v[1] < TOL} == {name}


def main():
    worst_all = 0.0
    for variant in VARIANTS:
        model, ids, targets, ok, report = tie_free_problem(*variant)
        worst = max(max(v) for v in report.values())
        worst_all = max(worst_all, worst)
        print(f"{ids_of(variant):<22} {len(report) - 2} parameter tensors + logits + loss: worst {worst:.2e}")
    print(f"overall worst error vs the PyTorch oracle: {worst_all:.2e} (tolerance {TOL:g})")
    return 0 if worst_all < TOL else 1


if __name__ == "__main__":
    sys.exit(main())
