"""Training: schedule, clipping, a smoke run that learns and writes its logs, bit-exact resume, and a
non-finite loss stopping the run with the last good checkpoint intact."""
import csv
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from mmf import MMfreeLM
from mmf.training.checkpoint import load_checkpoint
from mmf.training.trainer import (PRESETS, NonFiniteLossError, TrainConfig, clip_grads, lr_at, train,
                       weight_decay_at)


def smoke(tmp_path, **kw) -> TrainConfig:
    """The smoke preset with data and outputs inside tmp_path."""
    base = {**PRESETS["smoke"], "data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"),
            "sample_prompts": ""}
    return TrainConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# schedule and clipping


def test_schedule_warmup_cosine_and_midpoint_halving():
    cfg = TrainConfig(lr=1e-2, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert math.isclose(lrs[0], 1e-3) and math.isclose(lrs[9], 1e-2)          # linear warmup
    assert all(a >= b for a, b in zip(lrs[10:49], lrs[11:50]))                 # cosine decreasing
    # at the midpoint the rate drops to half of the cosine value it would have had
    plain = lr_at(50, dataclasses.replace(cfg, halve_lr_at_midpoint=False))
    assert math.isclose(lrs[50], 0.5 * plain)
    assert lrs[49] > 1.5 * lrs[50]
    assert math.isclose(lr_at(100, dataclasses.replace(cfg, halve_lr_at_midpoint=False)), 1e-3)
    assert [weight_decay_at(s, cfg) for s in (0, 49, 50, 99)] == [0.1, 0.1, 0.0, 0.0]
    keep = dataclasses.replace(cfg, wd_zero_at_midpoint=False)
    assert weight_decay_at(99, keep) == 0.1


def test_clip_grads_scales_to_the_max_norm():
    g = {"a": np.full((3,), 3.0, np.float32), "b": np.full((2, 2), 4.0, np.float32)}
    norm = clip_grads(g, 1.0)
    assert math.isclose(norm, math.sqrt(27 + 64), rel_tol=1e-6)
    after = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
    assert math.isclose(after, 1.0, rel_tol=1e-5)
    small = {"a": np.array([0.1, 0.2])}
    clip_grads(small, 1.0)
    assert np.allclose(small["a"], [0.1, 0.2])                                 # below the max: unchanged


# ----------------------------------------------------------------------------------------------
# runs


def test_smoke_run_learns_and_writes_logs(tmp_path):
    cfg = smoke(tmp_path, max_steps=40, eval_interval=20, lr=1e-2)
    s = train(cfg)
    h = s["history"]
    assert s["steps"] == 40 and h["val_step"] == [20, 40]
    assert h["val_loss"][-1] < math.log(s["model"].config.vocab_size) - 1.0    # far better than uniform
    assert np.mean(h["train_loss"][-5:]) < np.mean(h["train_loss"][:5])
    assert s["val_bits_per_byte"] > s["meta"]["val_floor_bits_per_byte"]       # nothing beats the floor
    run = tmp_path / "run"
    log = json.loads((run / "log.json").read_text())
    assert log["history"]["train_loss"] == h["train_loss"]
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 40 and rows[19]["val_loss"] != "" and rows[18]["val_loss"] == ""
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_checkpoint(str(run / "ckpt.ckpt")).step == 40


def _params(ckpt_path):
    return load_checkpoint(ckpt_path).params


def test_resume_is_bit_exact(tmp_path):
    straight = train(smoke(tmp_path / "a", max_steps=12))
    train(smoke(tmp_path / "b", max_steps=12, stop_at=5))
    part = str(tmp_path / "b" / "run" / "ckpt.ckpt")
    assert load_checkpoint(part).step == 5
    resumed = train(smoke(tmp_path / "b", max_steps=12, resume=part))
    assert resumed["steps"] == 12
    a, b = _params(straight["checkpoint"]), _params(resumed["checkpoint"])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]
    # negative control: another seed gives different parameters, so the comparison can fail
    other = train(smoke(tmp_path / "c", max_steps=12, seed=1))
    c = _params(other["checkpoint"])
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    good = train(smoke(tmp_path / "good", max_steps=12, stop_at=5))
    real = MMfreeLM.loss_and_grads
    calls = {"n": 0}

    def poisoned(self, ids, targets):
        calls["n"] += 1
        loss, grads = real(self, ids, targets)
        return (float("nan") if calls["n"] > 7 else loss), grads    # step 8 goes bad
    monkeypatch.setattr(MMfreeLM, "loss_and_grads", poisoned)
    cfg = smoke(tmp_path / "bad", max_steps=12, checkpoint_interval=5)
    with pytest.raises(NonFiniteLossError, match=r"step 7.*Last good checkpoint: .*ckpt\.ckpt"):
        train(cfg)
    ck = load_checkpoint(os.path.join(cfg.out_dir, "ckpt.ckpt"))
    assert ck.step == 5                                               # the step-5 checkpoint survived
    ref = _params(good["checkpoint"])
    assert all(np.array_equal(ck.params[k], ref[k]) for k in ref)


def test_resume_refuses_a_different_model(tmp_path):
    first = train(smoke(tmp_path, max_steps=3))
    with pytest.raises(ValueError, match="model config"):
        train(smoke(tmp_path, max_steps=6, hidden_size=16, resume=first["checkpoint"]))
