"""The benchmark's PyTorch peer (kernels_numba/peer_torch.py) computes mmf's training math, and the
peers machinery (kernels_numba/peers.py) reports what it measured.

A speed ratio against a peer means something only if the peer does the same work: on the same
weights and batch, in float64, the peer's loss, every parameter gradient and the parameters after one
AdamW step must equal mmf's NumPy reference (which tests/test_oracle_torch.py ties to an independent
oracle). The weights are drawn so that no quantization code is near a rounding tie (the oracle's tie
margin), else a last-ulp difference could round a code apart and the comparison would test luck.
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # oracle_torch sits next to this file
import oracle_torch as oracle  # noqa: E402

import mmf  # noqa: E402
from kernels_numba import peers  # noqa: E402
from kernels_numba.peer_torch import MMfreeTorch, adamw  # noqa: E402
from mmf.training.adamw import AdamW  # noqa: E402

TOL = 1e-10          # float64: both sides compute the same operations, in a different order at most
TIE_MARGIN = 1e-6


def _case(seed):
    """A float64 model + batch whose quantization codes all stay clear of rounding ties."""
    cfg = mmf.MMfreeConfig(vocab_size=48, hidden_size=32, num_layers=2, intermediate_size=64)
    for s in range(seed, seed + 20):
        model = mmf.MMfreeLM(cfg, seed=s, dtype=np.float64)
        model.params["model.lower_bounds"] = np.random.default_rng(s).standard_normal((2, 32))   # lb not all l/L
        ids = np.random.default_rng(s).integers(0, cfg.vocab_size, (2, 12))
        q = oracle.Quantizer()
        oracle.model_logits(oracle.to_torch(dict(model.params)), torch.from_numpy(ids[:, :-1]), q)
        if q.tie_margin > TIE_MARGIN:
            return model, ids[:, :-1], ids[:, 1:]
    raise AssertionError("no tie-free draw in 20 seeds")


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _peer_grads(net, x, y):
    loss = net(torch.from_numpy(x), torch.from_numpy(y))
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in net.named_parameters()}


def test_peer_loss_gradients_and_adamw_step_equal_mmf():
    model, x, y = _case(0)
    net = MMfreeTorch.from_mmf(model, torch.float64)
    assert sorted(k for k, _ in net.named_parameters()) == sorted(model.params)   # checkpoint names
    loss, grads = model.loss_and_grads(x, y)
    t_loss, t_grads = _peer_grads(net, x, y)
    assert abs(t_loss - loss) <= TOL * abs(loss)
    for name in model.params:
        assert _rel(t_grads[name], grads[name]) < TOL, name
    AdamW(model.params, lr=1e-2).step(grads)
    adamw(net, lr=1e-2).step()
    for name, p in net.named_parameters():
        assert _rel(p.detach().numpy(), model.params[name]) < TOL, name


def test_the_comparison_catches_a_peer_that_differs():
    """Negative control: the same check fails for a peer without the lower bounds (E7) and for a
    peer whose AdamW decays every parameter (torch's default, not mmf's grouping)."""
    model, x, y = _case(0)
    loss, grads = model.loss_and_grads(x, y)
    net = MMfreeTorch.from_mmf(model, torch.float64)
    net.model.lower_bounds = None                                    # as if use_lower_bound were off
    t_loss, t_grads = _peer_grads(net, x, y)
    assert abs(t_loss - loss) > 1e3 * TOL * abs(loss)
    net = MMfreeTorch.from_mmf(model, torch.float64)
    _peer_grads(net, x, y)
    AdamW(model.params, lr=1e-2).step(grads)
    torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1).step()
    worst = max(_rel(p.detach().numpy(), model.params[k]) for k, p in net.named_parameters())
    assert worst > 1e3 * TOL


def test_peer_inference_form_and_carried_state():
    """freeze_ (W~ once, for the prefill peer) leaves the logits as they were; a prompt run in two
    halves with the carried state gives the last logits of one run (what a prefill + decode does)."""
    model, x, _ = _case(0)
    net = MMfreeTorch.from_mmf(model, torch.float64)
    ids = torch.from_numpy(x)
    with torch.no_grad():
        full, _ = net(ids)
        np.testing.assert_allclose(full.numpy(), model.forward(x), rtol=0, atol=1e-12)
        net.freeze_()
        frozen, _ = net(ids, last_only=True)
        np.testing.assert_allclose(frozen[:, 0].numpy(), full[:, -1].numpy(), rtol=0, atol=1e-12)
        _, state = net(ids[:, :5])
        tail, _ = net(ids[:, 5:], state=state, last_only=True)
    np.testing.assert_allclose(tail[:, 0].numpy(), full[:, -1].numpy(), rtol=0, atol=1e-12)


def test_peer_refuses_what_it_does_not_implement():
    cfg = mmf.MMfreeConfig(vocab_size=16, hidden_size=8, num_layers=1, output_gate="paper")
    with pytest.raises(ValueError, match="output_gate='paper'"):
        MMfreeTorch.from_mmf(mmf.MMfreeLM(cfg))


def test_busy_machine_withholds_ratios(monkeypatch):
    quiet = {"a": peers.stats([1.0, 1.1, 1.05]), "b": peers.stats([2.0, 2.1])}
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert peers.busy_reasons(quiet, cores=2) == []
    wide = dict(quiet, c=peers.stats([1.0, 1.0, 1.0, 2.0, 2.0]))     # p10-p90 spread 100% of the median
    assert "c (100%)" in peers.busy_reasons(wide, cores=2)[0]
    one_outlier = dict(quiet, d=peers.stats([1.0] * 20 + [5.0]))     # one interrupt is not a busy machine
    assert peers.busy_reasons(one_outlier, cores=2) == []
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 3.0))
    assert "load average 3.50 > 2 cores" in peers.busy_reasons(quiet, cores=2)[0]


def test_contenders_in_their_own_processes_start_from_the_same_loss():
    """Two training contenders, each a worker process: both report timings, and their first-step
    losses (same seed, same batch, one process each) agree to float32 rounding."""
    r = peers.run_training(peers.SMOKE_TRAIN, rounds=2, steps=1, kinds=["mmf-numba", "torch-eager"],
                           log=lambda *_: None)
    for k in ("mmf-numba", "torch-eager"):
        assert r[k]["n"] == 2 and r[k]["median"] > 0
    a, b = r["mmf-numba"]["info"]["first_loss"], r["torch-eager"]["info"]["first_loss"]
    assert abs(a - b) < 1e-4 * abs(a)


def test_pause_experiment_runs_each_setup_with_its_own_environment():
    """P3's fresh processes really run with the thread count and wait policy they are labelled with
    (OpenMP reads them only when its pool starts, so a setting made in this process would be ignored)."""
    n = peers.SMOKE_INFER["gemv"][1]
    runs = {label: peers.gemv_after_pauses_in_process(n, changes, calls=3) for label, changes in peers.PAUSE_SETUPS}
    default, active, single, bound = [runs[label][2] for label, _ in peers.PAUSE_SETUPS]
    assert (default["OMP_WAIT_POLICY"], default["GOMP_SPINCOUNT"], default["OMP_PROC_BIND"]) == (
        os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"), os.environ.get("OMP_PROC_BIND"))
    assert active["OMP_WAIT_POLICY"] == "ACTIVE" and active["GOMP_SPINCOUNT"] is None
    assert single["threads"] == 1
    assert bound["OMP_PROC_BIND"] == "true" and bound["GOMP_SPINCOUNT"] == default["GOMP_SPINCOUNT"]
    for res, nbytes, _ in runs.values():
        assert nbytes == 2 * n * n // 8
        assert {pause for _, pause in res} == {0.0, 0.001, 0.02} and all(st["n"] == 3 for st in res.values())
