"""Train a MatMul-free LM on a CPU: config, schedule, loop, evaluation, logs, checkpoints, CLI.

    python -m mmf.train --preset=tiny                     # the main job (embedded story corpus)
    python -m mmf.train --preset=shakespeare --max_steps=500
    python -m mmf.train --preset=tiny --resume=runs/tiny/ckpt.ckpt

Recipe (docs/equations.md, "Training recipe"): AdamW (β = 0.9, 0.95), linear warmup, cosine decay,
learning rate halved at the midpoint (the paper's two-stage schedule for ternary models), optionally
weight decay dropped to 0 at the midpoint (BitNet b1.58), global-norm gradient clipping.

Exactness: every random choice comes from two seeded sources, the model init (seed) and the batch
generator (its state is checkpointed), and the schedule is a function of the step only, so
N steps == k steps + save + resume + (N - k) steps, bit for bit (tests/test_checkpoint.py).
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import json
import math
import os
import sys
import time
import typing
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from mmf import MMfreeConfig
from mmf.layers.quant import check_weights
from mmf.models.registry import build_model, check_arch, config_to_dict
from mmf.training.adamw import AdamW
from mmf.training.checkpoint import load_checkpoint, save_checkpoint
from mmf.text.corpus import DATA_DIR, eval_windows, get_batch, prepare
from mmf.layers.loss import cross_entropy_forward

# ----------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    # ---- data
    corpus: str = "stories"          # "stories" (embedded grammar, known entropy) or "tinyshakespeare"
    tokenizer: str = "bpe"           # "bpe" (byte-level, trained here) or "char"
    vocab_size: int = 512            # BPE vocabulary size asked for (ignored for "char")
    story_bytes: int = 1_000_000     # size of the generated story corpus
    data_seed: int = 1337            # seed of the story generator
    val_fraction: float = 0.1        # last fraction of the text held out for validation
    ts_path: str = ""                # local Tiny Shakespeare file ("" = search default places, then download)
    data_dir: str = DATA_DIR         # where token files and the tokenizer are written
    # ---- model (the architecture's config: MMfreeConfig, ...)
    arch: str = "mmfree"             # architecture (mmf.models.registry.ARCHITECTURES): "mmfree", ...
    weights: str = "ternary"         # BitLinear weight format: "ternary" (E3), "binary" (E3b), "float"
    hidden_size: int = 128           # D
    num_layers: int = 2              # L
    intermediate_size: int = 0       # I of the GLU; 0 = the official E8 rounding rule
    output_gate: str = "official"    # MLGRU output gate: "official" rms(g)*SiLU(h) or "paper" sigmoid(g)*h (E6)
    backend: str = "numpy"           # "numpy" (reference) or "numba" (kernels_numba, faster)
    dtype: str = "float32"           # parameter/activation dtype
    # ---- optimisation
    seed: int = 0                    # model init and batch order
    batch_size: int = 16             # B sequences per step
    block_size: int = 128            # T tokens per sequence (BPTT length)
    max_steps: int = 300             # optimizer steps (the schedule spans these)
    stop_at: int = 0                 # stop after this step (0 = max_steps); --resume continues exactly
    lr: float = 4e-3                 # peak learning rate (ternary models like large ones: paper 4e-3 at 370M)
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio (before the midpoint halving)
    warmup_steps: int = 30           # linear warmup from 0
    halve_lr_at_midpoint: bool = True    # the paper's schedule: lr x 0.5 from max_steps // 2 on
    weight_decay: float = 0.1        # AdamW decoupled decay (2-D weights only)
    wd_zero_at_midpoint: bool = True     # BitNet b1.58: weight decay 0 for the second half
    beta1: float = 0.9               # AdamW betas (BitNet b1.58 notes)
    beta2: float = 0.95
    grad_clip: float = 1.0           # clip the global gradient norm to this (0 = off)
    # ---- evaluation, logging, checkpoints
    eval_interval: int = 50          # steps between validation losses (and at the last step)
    eval_windows: int = 32           # validation windows of block_size tokens (fixed: the first ones)
    checkpoint_interval: int = 100   # steps between checkpoints (and at the last step); 0 = only at the end
    out_dir: str = "runs/tiny"       # checkpoint, log.json, log.csv, loss.png go here
    progress: bool = True            # tqdm progress bar
    # ---- samples printed at the end
    sample_prompts: str = "Once upon a time|One sunny day"   # "|"-separated; "" = no samples
    sample_tokens: int = 60          # new tokens per sample
    sample_temperature: float = 0.8
    sample_top_k: int = 0            # 0 = no top-k cut
    # ---- resuming
    resume: str = ""                 # checkpoint file to continue from ("" = fresh run)

    def __post_init__(self):
        _check_types(self)
        if self.corpus not in ("stories", "tinyshakespeare"):
            raise ValueError(f"corpus must be 'stories' or 'tinyshakespeare', got {self.corpus!r}")
        if self.tokenizer not in ("bpe", "char"):
            raise ValueError(f"tokenizer must be 'bpe' or 'char', got {self.tokenizer!r}")
        check_arch(self.arch)
        check_weights(self.weights, "weights")
        if self.output_gate not in ("official", "paper"):
            raise ValueError(f"output_gate must be 'official' or 'paper', got {self.output_gate!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("batch_size", "block_size", "max_steps", "eval_interval", "eval_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need 0 < lr < 1 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")


PRESETS: dict[str, dict] = {
    # the main job: 0.66M params on the embedded stories, 1-3 minutes on 2 shared cores with NumPy
    "tiny": dict(),
    # 4.5M params on Tiny Shakespeare with a 2048-token BPE (target <= 2.6 bits/char in <= 15 min here)
    "shakespeare": dict(corpus="tinyshakespeare", tokenizer="bpe", vocab_size=2048, hidden_size=256,
                        num_layers=4, batch_size=16, block_size=128, max_steps=300, lr=3e-3,
                        warmup_steps=30, eval_interval=50, eval_windows=400,
                        checkpoint_interval=250, out_dir="runs/shakespeare",
                        sample_prompts="ROMEO:|First Citizen:", sample_tokens=80),
    # a seconds-long run for tests, notebooks in smoke mode and CI
    "smoke": dict(story_bytes=60_000, hidden_size=32, num_layers=1, batch_size=4, block_size=32,
                  max_steps=20, warmup_steps=5, eval_interval=10, eval_windows=4,
                  checkpoint_interval=10, out_dir="runs/smoke", sample_tokens=20, progress=False),
}


def _check_types(cfg) -> None:
    """Every field must have exactly its declared type (ints are accepted for float fields)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        want, value = hints[f.name], getattr(cfg, f.name)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
            continue
        if type(value) is not want:
            raise TypeError(f"TrainConfig.{f.name} must be {want.__name__}, got "
                            f"{type(value).__name__} ({value!r})")


def config_from_args(argv: list[str]) -> TrainConfig:
    """`--preset=NAME` then `--key=value` overrides, parsed and type-checked against TrainConfig.

    Values are Python literals (ast.literal_eval: 3e-3, True, 'x'); a value that is not a literal is
    taken as a string. Unknown keys, malformed arguments and wrong types raise ValueError/TypeError.
    """
    preset, overrides = "tiny", {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"bad argument {arg!r}: use --key=value (e.g. --max_steps=300)")
        key, raw = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key == "preset":
            preset = raw
            continue
        if key not in fields:
            close = [f for f in sorted(fields) if key[:4] in f]
            raise ValueError(f"unknown option --{key}" + (f" (did you mean {', '.join(close)}?)" if close
                                                          else "") + "; see TrainConfig in mmf/train.py")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw                                           # a bare word: a string
        overrides[key] = value
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **overrides})


# ----------------------------------------------------------------------------------------------
# schedule


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warmup, cosine decay to lr*min_lr_ratio, and x0.5 from the midpoint on (paper)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    lr = cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)
    if cfg.halve_lr_at_midpoint and step >= cfg.max_steps // 2:
        lr *= 0.5
    return lr


def weight_decay_at(step: int, cfg: TrainConfig) -> float:
    """Constant, or dropped to 0 from the midpoint on (BitNet b1.58)."""
    if cfg.wd_zero_at_midpoint and step >= cfg.max_steps // 2:
        return 0.0
    return cfg.weight_decay


# ----------------------------------------------------------------------------------------------
# helpers


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint was left untouched."""


def clip_grads(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is <= max_norm; returns the norm before."""
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


def evaluate(model, tokens: np.ndarray, cfg: TrainConfig) -> float:
    """Mean loss in nats/token over the first cfg.eval_windows val windows (deterministic)."""
    x, y = eval_windows(tokens, cfg.block_size, cfg.eval_windows)        # (N, T), (N, T)
    total, n = 0.0, 0
    for s in range(0, len(x), cfg.batch_size):
        logits = model.forward(x[s:s + cfg.batch_size])                   # (b, T, V)
        loss, _ = cross_entropy_forward(logits, y[s:s + cfg.batch_size])
        total += loss * logits.shape[0]
        n += logits.shape[0]
    return total / n


def model_config_of(cfg: TrainConfig, vocab_size: int):
    """The model config of the run's architecture, from the TrainConfig's model fields."""
    return MMfreeConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                        intermediate_size=cfg.intermediate_size or None, weights=cfg.weights,
                        output_gate=cfg.output_gate)


def _restore(path, model, opt, rng, history):
    """Load params, optimizer moments and the batch generator's state; returns (step, history)."""
    ck = load_checkpoint(path)
    if ck.config != model.config:
        raise ValueError(f"{path}: its model config {config_to_dict(ck.config)} differs from this "
                         f"run's {config_to_dict(model.config)}")
    for k, v in ck.params.items():
        model.params[k] = v
    opt.load_state_dict(ck.optimizer_state)
    rng.bit_generator.state = ck.rng_state
    return ck.step, ck.extra.get("history", history)


def _last_good(ckpt_path):
    return ckpt_path if os.path.exists(ckpt_path) else "none yet"


def _save(path, model, opt, tok, cfg, step, rng, history):
    save_checkpoint(path, params=model.params, model_config=config_to_dict(model.config),
                    optimizer_state=opt.state_dict(), train_config=dataclasses.asdict(cfg),
                    tokenizer=tok.to_dict(), step=step, rng_state=rng.bit_generator.state,
                    extra={"history": history})


# ----------------------------------------------------------------------------------------------
# the loop


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns a summary dict (also written to out_dir/log.json)."""
    t_start = time.time()
    data = prepare(cfg.corpus, cfg.tokenizer, cfg.vocab_size, out_dir=cfg.data_dir, seed=cfg.data_seed,
                   story_bytes=cfg.story_bytes, val_fraction=cfg.val_fraction,
                   ts_path=cfg.ts_path or None, progress=cfg.progress)
    tok = data.tokenizer
    model = build_model(model_config_of(cfg, tok.vocab_size), seed=cfg.seed, dtype=np.dtype(cfg.dtype),
                        backend=cfg.backend)
    opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)                     # batch order; its state = data position
    history = {"step": [], "train_loss": [], "lr": [], "val_step": [], "val_loss": [], "val_bpb": [],
               "val_seconds": []}                     # wall-clock training seconds at each evaluation
    step = 0
    if cfg.resume:
        step, history = _restore(cfg.resume, model, opt, rng, history)
    os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.ckpt")

    floor = data.meta.get("val_floor_nats_per_token")
    print(f"data {data.name}: {len(data.train):,} train / {len(data.val):,} val tokens, "
          f"vocab {tok.vocab_size}, {data.bytes_per_token:.2f} bytes/token"
          + (f", entropy floor {floor:.4f} nats/token ({data.meta['val_floor_bits_per_byte']:.4f} bits/byte)"
             if floor is not None else ""))
    print(f"model: D={cfg.hidden_size} L={cfg.num_layers} I={model.config.intermediate_size} "
          f"-> {model.num_params():,} params, backend={cfg.backend}; {cfg.max_steps} steps of "
          f"{cfg.batch_size}x{cfg.block_size} tokens")

    def run_eval(at_step):
        val = evaluate(model, data.val, cfg)
        history["val_step"].append(at_step)
        history["val_loss"].append(val)
        history["val_bpb"].append(data.bits_per_byte(val))
        history["val_seconds"].append(elapsed + time.time() - t_loop)
        return val

    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not cfg.progress,
               dynamic_ncols=True)
    t_loop, tokens_done = time.time(), 0
    elapsed = history["val_seconds"][-1] if history.get("val_seconds") else 0.0   # before a resume
    last = min(cfg.stop_at or cfg.max_steps, cfg.max_steps)
    while step < last:
        x, y = get_batch(data.train, cfg.batch_size, cfg.block_size, rng)      # (B, T), (B, T)
        loss, grads = model.loss_and_grads(x, y)
        if not math.isfinite(loss) or not all(np.isfinite(g).all() for g in grads.values()):
            bar.close()
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) or gradient at step {step}; stopped without updating. "
                f"Last good checkpoint: {_last_good(ckpt_path)}. "
                f"Try a lower lr (now {cfg.lr}) or grad_clip, or resume from that checkpoint.")
        clip_grads(grads, cfg.grad_clip)
        lr = lr_at(step, cfg)
        opt.step(grads, lr=lr, weight_decay=weight_decay_at(step, cfg))
        step += 1
        tokens_done += x.size
        history["step"].append(step)
        history["train_loss"].append(loss)
        history["lr"].append(lr)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_done / (time.time() - t_loop):.0f}")
        if step % cfg.eval_interval == 0 or step == last:
            val = run_eval(step)
            bar.write(f"step {step} ({history['val_seconds'][-1]:.0f} s): train {loss:.4f} | "
                      f"val {val:.4f} nats/token, "
                      f"{data.bits_per_byte(val):.4f} bits/byte, {data.bits_per_char(val):.4f} bits/char"
                      + (f" (floor {floor:.4f} nats/token)" if floor is not None else ""))
        if step == last or (cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0):
            if not all(np.isfinite(p).all() for p in model.params.values()):
                bar.close()                          # never overwrite the last good checkpoint with this
                raise NonFiniteLossError(f"non-finite parameters after step {step}; last good checkpoint "
                                         f"{_last_good(ckpt_path)} kept")
            _save(ckpt_path, model, opt, tok, cfg, step, rng, history)
    bar.close()
    train_seconds = time.time() - t_loop

    summary = {"config": dataclasses.asdict(cfg), "dataset": data.name, "num_params": model.num_params(),
               "steps": step, "train_seconds": train_seconds, "total_seconds": time.time() - t_start,
               "tokens_per_second": tokens_done / max(train_seconds, 1e-9),
               "checkpoint": ckpt_path, "history": history, "meta": data.meta}
    if history["val_loss"]:
        summary["val_loss"] = history["val_loss"][-1]
        summary["val_bits_per_byte"] = history["val_bpb"][-1]
        summary["val_bits_per_char"] = data.bits_per_char(history["val_loss"][-1])
    write_logs(cfg.out_dir, summary)
    summary["model"], summary["tokenizer"] = model, tok
    return summary


# ----------------------------------------------------------------------------------------------
# logs and plots


def write_logs(out_dir: str, summary: dict) -> None:
    """log.json (everything), log.csv (one row per step) and loss.png (the curve)."""
    h = summary["history"]
    with open(os.path.join(out_dir, "log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    val_at = dict(zip(h["val_step"], h["val_loss"]))
    with open(os.path.join(out_dir, "log.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "lr", "train_loss", "val_loss"])
        for s, lr, tl in zip(h["step"], h["lr"], h["train_loss"]):
            w.writerow([s, f"{lr:.6g}", f"{tl:.6f}", f"{val_at[s]:.6f}" if s in val_at else ""])
    plot_loss(summary, os.path.join(out_dir, "loss.png"))


def plot_loss(summary: dict, path: str) -> None:
    # A bare Figure draws and saves on its own canvas: neither pyplot nor the global backend is touched,
    # so a notebook that trains and then calls plt.show() still displays its plots inline.
    from matplotlib.figure import Figure

    h, meta = summary["history"], summary["meta"]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(h["step"], h["train_loss"], lw=0.8, alpha=0.6, label="train (per batch)")
    ax.plot(h["val_step"], h["val_loss"], "o-", label="validation")
    if "val_floor_nats_per_token" in meta:
        ax.axhline(meta["val_floor_nats_per_token"], color="k", ls="--", label="entropy floor (val)")
    ax.set_xlabel("step")
    ax.set_yscale("log")                               # the gap to the floor stays visible late in training
    ax.set_ylabel("loss (nats/token, log scale)")
    ax.set_title(f"{summary['dataset']}: {summary['num_params']:,} params")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_samples(model, tok, cfg: TrainConfig) -> None:
    from mmf.models.generate import generate
    for k, prompt in enumerate(p for p in cfg.sample_prompts.split("|") if p):
        ids = np.array(tok.encode(prompt), dtype=np.int64)
        out = generate(model, ids, cfg.sample_tokens, temperature=cfg.sample_temperature,
                       top_k=cfg.sample_top_k or None, seed=k)
        print(f"--- sample {k + 1} (prompt {prompt!r}) ---")
        print(tok.decode(out))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("options (--key=value):")
        for f in dataclasses.fields(TrainConfig):
            print(f"  --{f.name}={f.default!r}")
        print(f"presets: {', '.join(PRESETS)}")
        return 0
    try:
        cfg = config_from_args(argv)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = train(cfg)
    meta = s["meta"]
    line = (f"final: val loss {s['val_loss']:.4f} nats/token = {s['val_bits_per_byte']:.4f} bits/byte"
            f" = {s['val_bits_per_char']:.4f} bits/char")
    if "val_floor_nats_per_token" in meta:
        line += (f" | entropy floor {meta['val_floor_nats_per_token']:.4f} nats/token = "
                 f"{meta['val_floor_bits_per_byte']:.4f} bits/byte")
    print(line)
    print(f"time: {s['train_seconds']:.0f} s training ({s['tokens_per_second']:.0f} tok/s), "
          f"{s['total_seconds']:.0f} s total; checkpoint {s['checkpoint']}, curve "
          f"{os.path.join(cfg.out_dir, 'loss.png')}")
    print_samples(s["model"], s["tokenizer"], cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
