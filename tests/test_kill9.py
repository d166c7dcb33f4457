"""Issue 11: kill -9 at random moments during training with a checkpoint after every step, then
resume, 20 times. Every checkpoint left behind must load, the final parameters must equal a run
that was never interrupted bit for bit, and no temporary file of a killed process may survive the
next start. (A tiny model: about 30 s on 2 shared cores.)"""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np

from isolated import REPO
from mmf.training.checkpoint import load_checkpoint
from mmf.training.trainer import PRESETS, TrainConfig, train

KILLS = 20
SETTINGS = dict(PRESETS["smoke"], story_bytes=20_000, vocab_size=300, hidden_size=16, batch_size=2, block_size=16,
                max_steps=300, warmup_steps=5, eval_interval=300, eval_windows=2, checkpoint_interval=1,
                sample_prompts="", progress=False)


def _argv(cfg):
    return [f"--{k}={v!r}" for k, v in dataclasses.asdict(cfg).items()]


def test_kill_9_twenty_times_then_resume_bit_exact(tmp_path):
    data_dir = str(tmp_path / "data")
    straight = train(TrainConfig(**{**SETTINGS, "data_dir": data_dir, "out_dir": str(tmp_path / "straight")}))
    cfg = TrainConfig(**{**SETTINGS, "data_dir": data_dir, "out_dir": str(tmp_path / "killed")})
    ckpt = os.path.join(cfg.out_dir, "ckpt.ckpt")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = np.random.default_rng(0)
    # Kill after a random part of the run, scaled by this machine's speed (measured by the straight run):
    # on average the 20 kills then cover about three quarters of the steps, on a quiet or a loaded machine.
    max_wait = 1.5 * straight["train_seconds"] / KILLS
    steps_seen, temp_files_seen = [], 0

    for kill in range(KILLS + 1):
        resume = dataclasses.replace(cfg, resume=ckpt if os.path.exists(ckpt) else "")
        proc = subprocess.Popen([sys.executable, "-m", "mmf.train", *_argv(resume)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        if kill < KILLS:
            for line in proc.stdout:                                 # training starts after this line
                if line.startswith("model:"):
                    break
            time.sleep(float(rng.uniform(0.0, max_wait)))            # somewhere in a step or a save
            proc.send_signal(signal.SIGKILL)
        out = proc.communicate(timeout=300)[0]
        if kill == KILLS:
            assert proc.returncode == 0, out
        else:
            assert proc.returncode in (-signal.SIGKILL, 0), out
        temp_files_seen += sum(".tmp-" in n for n in os.listdir(cfg.out_dir))
        if os.path.exists(ckpt):
            steps_seen.append(load_checkpoint(ckpt).step)           # always loadable

    assert steps_seen == sorted(steps_seen) and len(set(steps_seen)) > KILLS // 2   # the kills hit real work
    final, ref = load_checkpoint(ckpt), load_checkpoint(straight["checkpoint"])
    assert final.step == ref.step == SETTINGS["max_steps"]
    assert all(np.array_equal(final.params[k], ref.params[k]) for k in ref.params)
    assert final.extra["history"]["train_loss"] == ref.extra["history"]["train_loss"]
    left = [n for d in (cfg.out_dir, data_dir) for n in os.listdir(d) if ".tmp-" in n]
    assert left == [], left                                          # removed at the next start
    print(f"{KILLS} kills at steps {steps_seen}; temporary files seen after kills: {temp_files_seen}")
