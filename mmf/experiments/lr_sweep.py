"""`python -m mmf.train --preset=NAME --lr_sweep=1e-3,3e-3,1e-2`: the same run at several peak learning
rates, each in its own resumable folder (out_dir/lr_sweep/lr=...), and the best one by validation loss.

The paper's rates (3e-4 for Transformer++, 4e-3 for the MatMul-free LM) were tuned at 370M parameters and
up; at mmf's sizes they are only a starting point, so every comparison here picks each model's rate with
a sweep like this one (mmf.experiments.baselines runs one per variant).
"""
from __future__ import annotations

import dataclasses
import math
import os

from mmf.experiments.runner import Run, run_grid


def parse_lrs(text: str) -> list[float]:
    """'3e-4,1e-3,3e-3' -> [0.0003, 0.001, 0.003]; at least two distinct rates, each in (0, 1)."""
    try:
        lrs = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--lr_sweep={text!r}: give comma-separated numbers, e.g. --lr_sweep=1e-3,3e-3,1e-2") from None
    if len(set(lrs)) < 2 or any(not 0 < lr < 1 for lr in lrs):
        raise ValueError(f"--lr_sweep={text!r}: need at least two distinct learning rates, each in (0, 1)")
    return sorted(set(lrs))


def lr_sweep(cfg, lrs, progress: bool = True) -> tuple[float, list[dict]]:
    """Train cfg once per learning rate under cfg.out_dir/lr_sweep; returns (best lr, rows).
    Diverged runs are recorded (NaN loss) and never picked."""
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out_dir", "resume", "lr")}
    runs = [Run(f"lr={lr:g}", {"lr": lr}) for lr in lrs]
    out_dir = os.path.join(cfg.out_dir, "lr_sweep")
    rows = run_grid(runs, base, out_dir, progress=progress)
    ok = [r for r in rows if not math.isnan(r["val_loss"])]
    if not ok:
        raise FloatingPointError(f"every run of the sweep diverged ({lrs}); try smaller learning rates")
    best = min(ok, key=lambda r: r["val_loss"])
    for r in rows:
        print(f"lr {r['lr']:<8g} val {r['val_loss']:.4f} nats/token, {r['bits_per_char']:.4f} bits/char"
              + ("   <- best" if r is best else "") + ("   (diverged)" if r["status"] != "ok" else ""))
    print(f"best learning rate: {best['lr']:g}; runs and {os.path.join(out_dir, 'runs.csv')} in {out_dir}")
    return best["lr"], rows
