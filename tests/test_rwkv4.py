"""The MatMul-free RWKV-4: finite differences on every layer and parameter (float64, with negative
controls), the stable WKV form against overflow, step == scan, greedy decoding, the independent PyTorch
oracle (logits and STE gradients), the Numba backend, the registry/checkpoint path and bad input."""
import json
import os
import sys

import numpy as np
import pytest

import mmf
from mmf import gradcheck
from mmf.layers import wkv
from mmf.models.rwkv4 import RWKV4State

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the oracles sit next to this file

CFG = dict(vocab_size=29, hidden_size=16, num_layers=2, intermediate_size=24)


def wkv_by_softmax(k, v, w, u):
    """The definition, independent of both the scan and the naive form: for every (b, t, c) a softmax
    over the exponents (t-1-i) w + k_i (i < t) and u + k_t, done in float64 with the max subtracted."""
    B, T, C = k.shape
    out = np.empty((B, T, C))
    for t in range(T):
        i = np.arange(t + 1)
        expo = (t - 1 - i)[None, :, None] * w + k[:, :t + 1]              # (B, t+1, C)
        expo[:, t] = u + k[:, t]
        e = np.exp(expo - expo.max(axis=1, keepdims=True))
        out[:, t] = (e * v[:, :t + 1]).sum(axis=1) / e.sum(axis=1)
    return out


# ----------------------------------------------------------------------------
# finite differences

@pytest.fixture
def fd_results(rwkv4_gradcheck_results):
    return rwkv4_gradcheck_results


def test_finite_differences_every_rwkv4_tensor(fd_results):
    bad = {k: e for k, e in fd_results.items() if not e < gradcheck.TOLERANCE}
    assert not bad, f"relative errors above {gradcheck.TOLERANCE}: {bad}"


def test_every_parameter_and_layer_is_checked(fd_results):
    _, params, _ = gradcheck.rwkv4_model_case()
    checked = {t for (layer, t) in fd_results if layer.startswith("RWKV-4 model")}
    assert checked == set(params) and len(checked) == 3 + 2 * 25 + 4
    layers = {layer for layer, _ in fd_results}
    for case in ("layernorm", "WKV scan (carried state)", "naive form overflows", "time mixing", "channel mixing"):
        assert any(case in layer for layer in layers), case
    # the long case checks the recurrence where the naive form cannot even be evaluated
    assert ("RWKV-4 WKV scan (T=120, naive form overflows)", "w") in fd_results


def test_negative_control_wrong_decay_chain_rule_is_rejected():
    """Forgetting that w = -exp(time_decay) (using dL/dw as dL/dtime_decay) must fail the checker."""
    f, params, grads = gradcheck.rwkv4_model_case()
    name = "blocks.1.att.time_decay"
    w = -np.exp(params[name])
    wrong = {name: grads[name] / w}                                        # dL/dw instead of dL/dw * w
    errs = gradcheck.check_gradients(f, {name: params[name]}, wrong)
    assert errs[name] > 1e-3
    right = gradcheck.check_gradients(f, {name: params[name]}, {name: grads[name]})
    assert right[name] < gradcheck.TOLERANCE


def test_negative_control_wkv_backward_without_the_max_routing_is_rejected():
    """The running max p is part of the carried state: dropping the gradient a max passes on (dq) is
    wrong as soon as a loss reads p, and the checker sees it."""
    rng = np.random.default_rng(5)
    k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    w, u = -np.exp(0.3 * rng.standard_normal(3)), 0.4 * rng.standard_normal(3)
    state0 = (rng.standard_normal((2, 3)), rng.uniform(0.5, 2, (2, 3)), rng.standard_normal((2, 3)))
    dstate = tuple(rng.standard_normal((2, 3)) for _ in range(3))
    t = {"k": k}
    f = lambda: sum(float(np.sum(s * d)) for s, d in zip(wkv.wkv_scan_forward(t["k"], v, w, u, state0)[1], dstate))
    cache = wkv.wkv_scan_forward(k, v, w, u, state0)[2]
    dk = wkv.wkv_scan_backward(np.zeros_like(k), cache, dstate)[0]
    assert gradcheck.check_gradients(f, t, {"k": dk})["k"] < gradcheck.TOLERANCE
    no_dp = (dstate[0], dstate[1], np.zeros_like(dstate[2]))             # as if p' = q' carried no gradient
    dk_wrong = wkv.wkv_scan_backward(np.zeros_like(k), cache, no_dp)[0]
    assert gradcheck.check_gradients(f, t, {"k": dk_wrong})["k"] > 1e-3


# ----------------------------------------------------------------------------
# the stable form against overflow

def test_stable_form_survives_where_the_naive_form_overflows_float64():
    rng = np.random.default_rng(0)
    T = 400
    k, v = 300 * rng.uniform(-1, 1, (2, T, 3)), rng.standard_normal((2, T, 3))
    w = -np.exp(np.array([2.0, 0.0, -3.0]))                               # strong, medium, slow decay
    u = np.array([40.0, 0.5, -5.0])
    with np.errstate(over="raise", invalid="raise"):                      # the stable scan never overflows
        y, state, _ = wkv.wkv_scan_forward(k, v, w, u, wkv.wkv_initial_state(2, 3, np.float64))
    naive = wkv.wkv_naive_forward(k, v, w, u)
    assert not np.isfinite(naive).all()                                   # e^{-w t} = e^{7.4 * 400} overflows
    assert np.isfinite(y).all() and all(np.isfinite(s).all() for s in state)
    np.testing.assert_allclose(y, wkv_by_softmax(k, v, w, u), rtol=1e-10, atol=1e-12)


def test_stable_form_in_float32_after_the_naive_form_overflows():
    """At the mildest decay w = -1 the naive float32 form dies after 89 tokens; the stable one matches the
    float64 definition to float32 precision over 300."""
    rng = np.random.default_rng(1)
    k, v = rng.standard_normal((1, 300, 4)), rng.standard_normal((1, 300, 4))
    w, u = -np.ones(4), 0.3 * np.ones(4)
    k32, v32, w32, u32 = (a.astype(np.float32) for a in (k, v, w, u))
    naive = wkv.wkv_naive_forward(k32, v32, w32, u32)
    assert np.isfinite(naive[:, :80]).all() and not np.isfinite(naive[:, 100:]).any()
    y, _, _ = wkv.wkv_scan_forward(k32, v32, w32, u32, wkv.wkv_initial_state(1, 4, np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, wkv_by_softmax(k, v, w, u), rtol=2e-5, atol=2e-5)


def test_naive_form_is_the_same_function_where_it_does_not_overflow():
    rng = np.random.default_rng(2)
    k, v = rng.standard_normal((2, 20, 3)), rng.standard_normal((2, 20, 3))
    w, u = -np.exp(0.3 * rng.standard_normal(3)), 0.5 * rng.standard_normal(3)
    y, _, _ = wkv.wkv_scan_forward(k, v, w, u, wkv.wkv_initial_state(2, 3, np.float64))
    np.testing.assert_allclose(wkv.wkv_naive_forward(k, v, w, u), y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wkv_by_softmax(k, v, w, u), y, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# step == scan, decoding

def test_wkv_step_by_step_equals_scan():
    rng = np.random.default_rng(3)
    k, v = 5 * rng.standard_normal((2, 9, 4)), rng.standard_normal((2, 9, 4))
    w, u = -np.exp(rng.standard_normal(4)), rng.standard_normal(4)
    state0 = wkv.wkv_initial_state(2, 4, np.float64)
    y_scan, last_scan, _ = wkv.wkv_scan_forward(k, v, w, u, state0)
    state, ys = state0, []
    for t in range(9):
        y_t, state = wkv.wkv_step(k[:, t], v[:, t], w, u, state)
        ys.append(y_t)
    np.testing.assert_array_equal(np.stack(ys, axis=1), y_scan)
    for a, b in zip(state, last_scan):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("weights", ["ternary", "float"])
def test_carried_state_equals_full_forward(weights):
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG, weights=weights), seed=1, dtype=np.float64)
    ids = np.random.default_rng(0).integers(0, CFG["vocab_size"], (2, 11))
    full = model.forward(ids)
    logits, state = model.forward(ids[:, :4], return_state=True)
    assert len(state) == 2 and all(isinstance(s, RWKV4State) for s in state)
    assert all(a.shape == (2, 16) for s in state for a in s)
    steps = [logits]
    for t in range(4, 11):
        logits, state = model.forward(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)
    # the carried state matters: restarting from nothing gives other logits
    assert not np.allclose(model.forward(ids[:, 10:11]), full[:, 10:11])


def test_greedy_generation_equals_full_forward_argmax():
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG, weights="float"), seed=2, dtype=np.float64)
    rng = np.random.default_rng(4)
    for p in model.params.values():                         # a model with non-uniform predictions
        p += 0.5 * rng.standard_normal(p.shape)
    prompt = np.array([[1, 5, 9], [7, 7, 3]])
    fast = model.generate(prompt, 15, temperature=0)
    seq = prompt.copy()
    for _ in range(15):
        seq = np.concatenate([seq, model.forward(seq)[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(fast, seq)
    assert len(set(fast[0, 3:].tolist())) > 1


# ----------------------------------------------------------------------------
# the independent PyTorch oracle

def oracle_problem(weights):
    torch = pytest.importorskip("torch")
    import oracle_torch_rwkv4 as oracle
    torch.set_num_threads(1)
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG, weights=weights), seed=0, dtype=np.float64)
    for seed in range(20):                                  # redraw until no code is near a rounding tie
        rng = np.random.default_rng(100 + seed)
        for name, p in model.params.items():
            model.params[name] = p + 0.3 * (np.std(p) + 0.1) * rng.standard_normal(p.shape)
        ids, targets = rng.integers(0, CFG["vocab_size"], (2, 2, 7))
        ref = oracle.oracle_loss_and_grads(dict(model.params), ids, targets, quantize=weights != "float")
        if ref[-1] > 1e-6:
            return model, ids, targets, ref
    raise AssertionError("no tie-free problem in 20 draws")


def compare_with_oracle(model, ids, targets, ref):
    from oracle_torch import compare
    loss, grads = model.loss_and_grads(ids, targets)
    ours = {"logits": model.forward(ids), "loss": np.array(loss), **grads}
    ref_loss, ref_logits, ref_grads, _ = ref
    return compare, ours, {"logits": ref_logits, "loss": np.array(ref_loss), **ref_grads}


@pytest.mark.parametrize("weights, tol", [("ternary", 1e-5), ("float", 1e-10)])
def test_matches_the_pytorch_oracle(weights, tol):
    model, ids, targets, ref = oracle_problem(weights)
    compare, ours, theirs = compare_with_oracle(model, ids, targets, ref)
    assert set(ours) - {"logits", "loss"} == set(model.params)
    ok, report = compare(ours, theirs, tol=tol)
    assert ok, {k: v for k, v in report.items() if not (v[0] < tol and v[1] < tol)}
    # negative control: one gradient tensor off by 1e-4 relative fails
    name = "blocks.1.att.time_first"
    ours[name] = ours[name] * (1 + 1e-4)
    ok, report = compare(ours, theirs, tol=max(tol, 1e-5))
    assert not ok and report[name][0] > 1e-5


# ----------------------------------------------------------------------------
# Numba backend, registry and checkpoints, bad input

def test_numba_backend_equals_numpy():
    pytest.importorskip("numba")
    from kernels_numba.backend import NumbaBackend
    rng = np.random.default_rng(6)
    ids, tg = rng.integers(0, CFG["vocab_size"], (2, 2, 9))
    cfg = mmf.RWKV4Config(**CFG)
    l0, g0 = mmf.RWKV4LM(cfg, seed=2, dtype=np.float64).loss_and_grads(ids, tg)
    for matmul in ("blas", "ternary"):
        model = mmf.RWKV4LM(cfg, seed=2, dtype=np.float64, backend=NumbaBackend(weights="ternary", matmul=matmul))
        l1, g1 = model.loss_and_grads(ids, tg)
        assert abs(l1 - l0) <= 1e-12 * abs(l0)
        for k in g0:
            np.testing.assert_allclose(g1[k], g0[k], rtol=1e-9, atol=1e-12, err_msg=k)
    # float32, the training dtype: the Numba gates differ from NumPy's by <= 1 ulp
    m32 = mmf.RWKV4LM(cfg, seed=2, backend="numba")
    np.testing.assert_allclose(m32.forward(ids), mmf.RWKV4LM(cfg, seed=2).forward(ids), rtol=1e-3, atol=1e-4)


def test_registry_checkpoint_and_mmf_load(tmp_path):
    from mmf.models.registry import ARCHITECTURES, config_from_dict, config_to_dict
    from mmf.training.checkpoint import save_checkpoint
    assert ARCHITECTURES["rwkv4"] == (mmf.RWKV4Config, mmf.RWKV4LM)
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG, weights="binary"), seed=4)
    d = config_to_dict(model.config)
    assert d["arch"] == "rwkv4" and config_from_dict(d) == model.config
    path = str(tmp_path / "r.ckpt")
    save_checkpoint(path, params=model.params, model_config=d)
    back = mmf.load(path)
    assert type(back) is mmf.RWKV4LM and back.config == model.config
    ids = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(back.forward(ids), model.forward(ids))


def test_bad_state_is_refused_clearly():
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG), seed=0)
    ids = np.array([[1, 2, 3]])
    _, state = model.forward(ids, return_state=True)
    with pytest.raises(ValueError, match=r"list of 2 RWKV4State.*got list of length 1"):
        model.forward(ids, state=state[:1])
    bad = list(state)
    bad[1] = bad[1]._replace(num=np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match=r"layer 1 field num is float32 \(1, 8\)"):
        model.forward(ids, state=bad)
    with pytest.raises(ValueError, match=r"shape \(2, 16\)"):
        model.forward(np.ones((2, 1), np.int64), state=state)              # batch 2, state of batch 1
    mmfree = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=29, hidden_size=16, num_layers=2), seed=0)
    _, mlgru_state = mmfree.forward(ids, return_state=True)
    with pytest.raises(ValueError, match="layer 0 holds ndarray"):
        model.forward(ids, state=mlgru_state)                              # another architecture's state


def test_bad_config_and_params_are_refused_clearly():
    with pytest.raises(ValueError, match="RWKV4Config.weights must be one of.*'int4'"):
        mmf.RWKV4Config(**{**CFG, "weights": "int4"})
    with pytest.raises(ValueError, match="RWKV4Config.hidden_size must be positive, got 0"):
        mmf.RWKV4Config(vocab_size=5, hidden_size=0, num_layers=1)
    with pytest.raises(TypeError, match="RWKV4Config.intermediate_size must be an int or None"):
        mmf.RWKV4Config(vocab_size=5, hidden_size=4, num_layers=1, intermediate_size=2.5)
    with pytest.raises(TypeError, match="config must be an mmf.RWKV4Config, got MMfreeConfig"):
        mmf.RWKV4LM(mmf.MMfreeConfig(vocab_size=5, hidden_size=4, num_layers=1))
    model = mmf.RWKV4LM(mmf.RWKV4Config(**CFG), seed=0)
    with pytest.raises(KeyError, match="unknown parameter 'model.embeddings.weight'"):
        model.params["model.embeddings.weight"] = np.zeros((29, 16), np.float32)   # an MMfree name
    assert mmf.RWKV4Config(vocab_size=5, hidden_size=4, num_layers=1).intermediate_size == 16


# ----------------------------------------------------------------------------
# training from the command line

def test_train_cli_arch_rwkv4_learns_and_refuses_another_architectures_checkpoint(tmp_path, capsys):
    from mmf.training.trainer import main as train_main
    common = ["--preset=smoke", f"--data_dir={tmp_path / 'data'}", "--sample_prompts=''", "--max_steps=30",
              "--eval_interval=30", "--lr=1e-2"]
    assert train_main(common + ["--arch=rwkv4", f"--out_dir={tmp_path / 'rwkv4'}"]) == 0
    log = json.loads((tmp_path / "rwkv4" / "log.json").read_text())
    assert log["config"]["arch"] == "rwkv4"
    losses = log["history"]["train_loss"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5                # it learns
    ckpt = str(tmp_path / "rwkv4" / "ckpt.ckpt")
    model = mmf.load(ckpt)
    assert type(model) is mmf.RWKV4LM and model.config.weights == "ternary"
    # resuming that checkpoint as another architecture: a usage error (exit 2) that names both
    capsys.readouterr()
    assert train_main(common + [f"--resume={ckpt}", f"--out_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "arch='rwkv4' model but this run trains arch='mmfree'" in err and "--arch=rwkv4" in err
