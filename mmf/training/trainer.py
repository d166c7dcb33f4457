"""Train a MatMul-free LM (or a baseline, --arch) on a CPU: config, schedule, loop, evaluation, logs,
checkpoints, CLI.

    python -m mmf.train --preset=tiny                     # the main job (embedded story corpus)
    python -m mmf.train --preset=shakespeare --max_steps=500
    python -m mmf.train --preset=tiny --resume=runs/tiny/ckpt.ckpt
    python -m mmf.train --preset=tiny --lr_sweep=1e-3,3e-3,1e-2   # one run per rate, the best one picked
    python -m mmf.train --preset=tiny --arch=transformer --weights=float --num_heads=2   # the Transformer++

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

from mmf import MMfreeConfig, RWKV4Config, TransformerConfig
from mmf.layers.quant import check_weights
from mmf.models.registry import build_model, check_arch, config_to_dict
from mmf.training.adamw import AdamW
from mmf.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mmf.text.corpus import DATA_DIR, eval_windows, get_batch, prepare
from mmf.layers.loss import cross_entropy_forward

# ----------------------------------------------------------------------------------------------
# configuration

TRANSFORMER_MAX_POSITIONS = TransformerConfig.max_position_embeddings   # what max_position_embeddings=0 means


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
    arch: str = "mmfree"             # architecture (mmf.models.registry.ARCHITECTURES): mmfree, transformer, rwkv4
    weights: str = "ternary"         # weight format: "ternary" (E3), "binary" (E3b), "float" (transformer: Llama)
    hidden_size: int = 128           # D
    num_layers: int = 2              # L
    intermediate_size: int = 0       # I of the GLU / SwiGLU; 0 = the official E8 rounding rule
    output_gate: str = "official"    # mmfree only: MLGRU output gate, "official" rms(g)*SiLU(h) or "paper" sigmoid(g)*h (E6)
    num_heads: int = 0               # transformer only: attention heads; 0 = hidden_size // 64 (64-wide, as Llama), >= 1
    ternary_qk: bool = False         # transformer only: ternary Q and K (the paper's "MatMul-free Transformer++")
    max_position_embeddings: int = 0     # transformer only: longest context (KV cache, RoPE); 0 = 2048
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
    init_from: str = ""              # start a fresh run (new optimizer, step 0) from this checkpoint's
                                     # parameters; its shapes must match, its weight format may differ
                                     # (e.g. QAT from a float model: --weights=ternary --init_from=F)
    allow_changed_optim: bool = False    # --resume may change the RESUME_OPTIM settings (not exact then)
    rebuild_data: bool = False       # rebuild the data cache even if a valid one exists

    # What --resume may change. Every field in neither set must equal the checkpoint's (data,
    # tokenizer, model, batch shape, seeds; fields added later are covered by default), so that
    # N steps == k steps + resume + (N - k) steps holds bit for bit.
    RESUME_MAY_CHANGE = frozenset({   # no effect on the parameters a step produces
        "stop_at", "out_dir", "data_dir", "ts_path", "progress", "eval_interval", "eval_windows",
        "checkpoint_interval", "sample_prompts", "sample_tokens", "sample_temperature", "sample_top_k",
        "resume", "allow_changed_optim", "rebuild_data",
        "init_from"})                 # only chooses the step-0 parameters, which a resume replaces
    RESUME_OPTIM = frozenset({        # change the optimisation: refused unless allow_changed_optim
        "lr", "min_lr_ratio", "warmup_steps", "halve_lr_at_midpoint", "weight_decay",
        "wd_zero_at_midpoint", "beta1", "beta2", "grad_clip", "backend"})
    # max_steps may change when the schedule (lr, weight decay) of the steps already done is the same
    # under both values, i.e. the checkpoint is a valid prefix of the new run (see resume_differences).

    def __post_init__(self):
        _check_types(self)
        _check_values(self)
        if self.corpus not in ("stories", "tinyshakespeare"):
            raise ValueError(f"corpus must be 'stories' or 'tinyshakespeare', got {self.corpus!r}")
        if self.tokenizer not in ("bpe", "char"):
            raise ValueError(f"tokenizer must be 'bpe' or 'char', got {self.tokenizer!r}")
        check_arch(self.arch)
        check_weights(self.weights, "weights")
        if self.output_gate not in ("official", "paper"):
            raise ValueError(f"output_gate must be 'official' or 'paper', got {self.output_gate!r}")
        if self.arch != "transformer":
            for name in ("num_heads", "ternary_qk", "max_position_embeddings"):
                if getattr(self, name):
                    raise ValueError(f"--{name} applies to --arch=transformer only; arch={self.arch!r} has no "
                                     "attention (MMfree's MLGRU has one head and no positions): drop it")
        elif self.output_gate != "official":
            raise ValueError("--output_gate applies to --arch=mmfree only (the MLGRU's gate); "
                             "arch='transformer' has none: drop it")
        elif self.block_size > (self.max_position_embeddings or TRANSFORMER_MAX_POSITIONS):
            raise ValueError(f"block_size={self.block_size} exceeds the transformer's max_position_embeddings="
                             f"{self.max_position_embeddings or TRANSFORMER_MAX_POSITIONS}; raise "
                             "--max_position_embeddings or lower --block_size")
        model_config_of(self, vocab_size=1)        # the model fields' own checks, before any data work
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("batch_size", "block_size", "max_steps", "eval_interval", "eval_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resume and self.init_from:
            raise ValueError(f"give resume or init_from, not both (resume={self.resume!r}, "
                             f"init_from={self.init_from!r}): resume continues a run, init_from starts one")
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


def _check_values(cfg) -> None:
    """Ranges of the fields (types are checked already), so that nothing fails after the work."""
    def need(ok, field, what):
        if not ok:
            raise ValueError(f"{field} must be {what}, got {getattr(cfg, field)!r}")
    need(0.0 < cfg.lr < 1.0, "lr", "in (0, 1)")                     # first: the checks below divide by it
    need(cfg.backend in ("numpy", "numba"), "backend", "'numpy' or 'numba'")
    if cfg.backend == "numba":
        import importlib.util
        if importlib.util.find_spec("numba") is None:
            raise ValueError("backend='numba' needs the numba package (pip install -r requirements.txt)")
    need(0.0 < cfg.val_fraction < 1.0, "val_fraction", "in (0, 1)")
    need(cfg.story_bytes >= 1000, "story_bytes", ">= 1000")
    need(cfg.tokenizer != "bpe" or 256 < cfg.vocab_size <= 65536, "vocab_size", "in (256, 65536] for BPE")
    need(cfg.hidden_size >= 1 and cfg.num_layers >= 1, "hidden_size" if cfg.hidden_size < 1 else "num_layers", ">= 1")
    need(cfg.intermediate_size >= 0, "intermediate_size", ">= 0 (0 = the E8 rule)")
    need(0 <= cfg.stop_at <= cfg.max_steps, "stop_at", f"in [0, max_steps={cfg.max_steps}] (0 = max_steps)")
    need(0 <= cfg.warmup_steps, "warmup_steps", ">= 0")
    need(0.0 <= cfg.beta1 < 1.0, "beta1", "in [0, 1)")
    need(0.0 <= cfg.beta2 < 1.0, "beta2", "in [0, 1)")
    need(0.0 <= cfg.weight_decay < 1.0 / cfg.lr, "weight_decay", f"in [0, 1/lr = {1.0 / cfg.lr:g}) (each step "
         "multiplies the weights by 1 - lr * weight_decay)")
    need(math.isfinite(cfg.grad_clip) and cfg.grad_clip >= 0.0, "grad_clip", "a finite number >= 0 (0 = off)")
    need(cfg.checkpoint_interval >= 0, "checkpoint_interval", ">= 0 (0 = only at the end)")
    need(cfg.out_dir != "", "out_dir", "a directory name")
    need(cfg.sample_tokens >= 0, "sample_tokens", ">= 0")
    need(math.isfinite(cfg.sample_temperature) and cfg.sample_temperature >= 0.0, "sample_temperature",
         "a finite number >= 0 (0 = greedy)")
    need(cfg.sample_top_k >= 0, "sample_top_k", ">= 0 (0 = no cut)")
    need(cfg.resume == "" or os.path.isfile(cfg.resume), "resume", "an existing checkpoint file (or '')")


def resume_differences(stored: dict, cfg: TrainConfig, step: int) -> tuple[list[str], list[str]]:
    """Compare a checkpoint's train_config with this run's: (settings that may never change,
    optimisation settings that may change only with allow_changed_optim), as 'name: old -> new'."""
    fixed, optim = [], []
    for f in dataclasses.fields(cfg):
        name = f.name
        if name in cfg.RESUME_MAY_CHANGE or name not in stored or stored[name] == getattr(cfg, name):
            continue
        line = f"{name}: {stored[name]!r} -> {getattr(cfg, name)!r}"
        if name == "max_steps":
            try:
                old = dataclasses.replace(cfg, max_steps=stored[name], stop_at=0, resume="")
            except (TypeError, ValueError):
                fixed.append(line)
                continue
            same = all(lr_at(k, old) == lr_at(k, cfg) and weight_decay_at(k, old) == weight_decay_at(k, cfg)
                       for k in range(step))
            if not same:
                optim.append(line + f" (the schedule of the {step} steps done would change)")
        elif name in cfg.RESUME_OPTIM:
            optim.append(line)
        else:
            fixed.append(line)
    return fixed, optim


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
    presets = all_presets()
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    return TrainConfig(**{**presets[preset], **overrides})


def all_presets() -> dict[str, dict]:
    """PRESETS plus the baselines study's `baseline-<variant>` presets (each variant at the learning rate
    its sweep picked; they live with the study in mmf/experiments/baselines.py)."""
    from mmf.experiments.baselines import presets
    return {**PRESETS, **presets()}


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
    common = dict(vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                  intermediate_size=cfg.intermediate_size or None, weights=cfg.weights)
    if cfg.arch == "transformer":
        return TransformerConfig(**common, num_heads=cfg.num_heads or max(1, cfg.hidden_size // 64),
                                 ternary_qk=cfg.ternary_qk,
                                 max_position_embeddings=cfg.max_position_embeddings or TRANSFORMER_MAX_POSITIONS)
    if cfg.arch == "rwkv4":          # intermediate_size is the channel mixer's width (0 = RWKV-4's 4 D)
        return RWKV4Config(**common)
    return MMfreeConfig(**common, output_gate=cfg.output_gate)


def _check_resume(ck, cfg: TrainConfig) -> None:
    """Refuse a resume that could not be exact (the list of differences says what to change back)."""
    if ck.optimizer_state is None or ck.rng_state is None or ck.train_config is None:
        raise ValueError(f"{ck.path}: this checkpoint holds no optimizer state, data position or training "
                         "config (saved for sampling only?), so a run cannot resume from it exactly")
    if ck.arch != cfg.arch:                          # the most likely mistake: say it first
        raise CheckpointError(f"{ck.path} holds an arch={ck.arch!r} model but this run trains arch="
                              f"{cfg.arch!r}; resume it with --arch={ck.arch} (and its other model "
                              "options), or start a fresh run")
    fixed, optim = resume_differences(ck.train_config, cfg, ck.step)
    if fixed or (optim and not cfg.allow_changed_optim):
        lines = fixed + optim
        raise ValueError(f"{ck.path}: cannot resume exactly: these settings differ from the checkpoint's "
                         f"(data, tokenizer, model config, batch shape and seeds must stay; optimisation "
                         f"settings may change only with --allow_changed_optim=True):\n  "
                         + "\n  ".join(lines))
    if optim:
        print(f"resuming with changed optimisation settings (--allow_changed_optim): {'; '.join(optim)}")


def _restore(ck, model, opt, rng, history, tok):
    """Load params, optimizer moments and the batch generator's state; returns (step, history)."""
    path = ck.path
    if ck.arch != type(model.config).arch:
        raise CheckpointError(f"{path} holds an arch={ck.arch!r} model but this run trains arch="
                              f"{type(model.config).arch!r}; resume it with --arch={ck.arch} (and its other model "
                              "options), or start a fresh run")
    if ck.config != model.config:
        raise CheckpointError(f"{path}: its model config {config_to_dict(ck.config)} differs from this "
                              f"run's {config_to_dict(model.config)}")
    if ck.tokenizer != tok.to_dict():
        raise ValueError(f"{path}: its tokenizer differs from the one of this run's data; token ids would "
                         "change meaning. Use the checkpoint's data settings (or --rebuild_data=True if the "
                         "data cache was damaged)")
    for k, v in ck.params.items():
        if k not in model.params or v.shape != model.params[k].shape:
            raise ValueError(f"{path}: parameter {k!r} does not fit this run's model")
        model.params[k] = v
    try:
        opt.load_state_dict(ck.optimizer_state)
        rng.bit_generator.state = ck.rng_state
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its optimizer state or data position cannot be restored ({e})") from None
    return ck.step, ck.extra.get("history", history)


def _init_from(path, model):
    """Copy another checkpoint's parameters into a fresh model: same architecture and shapes; only the
    weight format may differ (a float model continued with quantization on is "QAT from float")."""
    ck = load_checkpoint(path)
    theirs = dataclasses.replace(ck.config, weights=model.config.weights)
    if type(theirs) is not type(model.config) or theirs != model.config:
        raise ValueError(f"--init_from={path}: its model config {config_to_dict(ck.config)} does not match "
                         f"this run's {config_to_dict(model.config)} (only 'weights' may differ)")
    for k, v in ck.params.items():
        model.params[k] = v.astype(model.dtype)


def _checkpoint_bytes(cfg: TrainConfig) -> int:
    """Bytes of one checkpoint of this run: params + AdamW's two moments, plus the temporary copy."""
    from mmf.models.params import param_shapes
    from mmf.models.rwkv4 import param_shapes as rwkv4_param_shapes
    from mmf.models.transformer_params import transformer_param_shapes
    vocab = cfg.vocab_size if cfg.tokenizer == "bpe" else 1024      # a char vocabulary is smaller than this
    mc = model_config_of(cfg, vocab)
    shapes_of = {"transformer": transformer_param_shapes, "rwkv4": rwkv4_param_shapes}.get(cfg.arch, param_shapes)
    shapes = shapes_of(mc)
    n = sum(int(np.prod(s)) for s in shapes.values())
    return 3 * n * np.dtype(cfg.dtype).itemsize + (1 << 20)


def check_output_dir(out_dir: str, bytes_needed: int) -> None:
    """Create out_dir, prove it writable and that it has room for a checkpoint written beside the
    previous one, before any work is done (else the first save fails after all the training)."""
    import shutil
    from mmf.atomic import remove_stale_temp_files, temp_name
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = temp_name(os.path.join(out_dir, ".write-test"))
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"out_dir {out_dir!r} is not a writable directory ({e.strerror or e}); "
                         "choose another --out_dir") from None
    remove_stale_temp_files(out_dir)                 # checkpoints half-written by killed runs
    free = shutil.disk_usage(out_dir).free
    if free < 2 * bytes_needed:
        raise ValueError(f"out_dir {out_dir!r} has {free / 1e6:.1f} MB free, but a checkpoint needs "
                         f"{bytes_needed / 1e6:.1f} MB (twice that while it replaces the previous one)")


def _checkpoint_is_good(model, data, cfg: TrainConfig) -> float:
    """Loss on one validation batch; a checkpoint is written only if it is finite (finite parameters
    can still overflow to a NaN forward, e.g. |param| ~ 1e21 after a huge weight decay)."""
    x, y = eval_windows(data.val, cfg.block_size, cfg.batch_size)
    with np.errstate(all="ignore"):
        loss, _ = cross_entropy_forward(model.forward(x), y)
    return float(loss)


def _check_sample_prompts(cfg: TrainConfig, tok) -> None:
    """The prompts printed after training must encode with this run's tokenizer: found now, not then."""
    for prompt in (p for p in cfg.sample_prompts.split("|") if p):
        try:
            ids = tok.encode(prompt)
        except ValueError as e:
            raise ValueError(f"sample_prompts: {prompt!r} cannot be encoded ({e}); change --sample_prompts") from None
        if not ids:
            raise ValueError(f"sample_prompts: {prompt!r} encodes to no tokens; change --sample_prompts")


def _last_good(ckpt_path):
    return ckpt_path or "none yet"


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
    # ---- everything that can be checked before the work: settings, resume, output directory
    ck = None
    if cfg.resume:
        ck = load_checkpoint(cfg.resume)
        _check_resume(ck, cfg)
    check_output_dir(cfg.out_dir, _checkpoint_bytes(cfg))
    data = prepare(cfg.corpus, cfg.tokenizer, cfg.vocab_size, out_dir=cfg.data_dir, seed=cfg.data_seed,
                   story_bytes=cfg.story_bytes, val_fraction=cfg.val_fraction,
                   ts_path=cfg.ts_path or None, force=cfg.rebuild_data, progress=cfg.progress)
    tok = data.tokenizer
    _check_sample_prompts(cfg, tok)
    model = build_model(model_config_of(cfg, tok.vocab_size), seed=cfg.seed, dtype=np.dtype(cfg.dtype),
                        backend=cfg.backend)
    opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                ops=model.backend)                         # the backend's AdamW kernel, if it has one
    rng = np.random.default_rng(cfg.seed)                     # batch order; its state = data position
    history = {"step": [], "train_loss": [], "lr": [], "val_step": [], "val_loss": [], "val_bpb": [],
               "val_seconds": []}                     # wall-clock training seconds at each evaluation
    step = 0
    last_good = None                                 # a checkpoint this run verified (never someone else's)
    if ck is not None:
        step, history = _restore(ck, model, opt, rng, history, tok)
        last_good = cfg.resume
    elif cfg.init_from:
        _init_from(cfg.init_from, model)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.ckpt")

    floor = data.meta.get("val_floor_nats_per_token")
    print(f"data {data.name}: {len(data.train):,} train / {len(data.val):,} val tokens, "
          f"vocab {tok.vocab_size}, {data.bytes_per_token:.2f} bytes/token"
          + (f", entropy floor {floor:.4f} nats/token ({data.meta['val_floor_bits_per_byte']:.4f} bits/byte)"
             if floor is not None else ""))
    mc = model.config
    shape = (f"H={mc.num_heads}{' ternary-QK' if mc.ternary_qk else ''} " if cfg.arch == "transformer" else "")
    print(f"model: {cfg.arch} weights={mc.weights} {shape}D={cfg.hidden_size} L={cfg.num_layers} I={mc.intermediate_size} "
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
                f"Last good checkpoint: {_last_good(last_good)}. "
                f"Try a lower lr (now {cfg.lr}) or grad_clip" + (", or resume from that checkpoint." if last_good
                                                                 else "."))
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
            finite = all(np.isfinite(p).all() for p in model.params.values())
            val_batch_loss = _checkpoint_is_good(model, data, cfg) if finite else float("nan")
            if not math.isfinite(val_batch_loss):
                bar.close()                          # never overwrite the last good checkpoint with this
                raise NonFiniteLossError(
                    f"after step {step} the " + ("parameters are" if not finite else "loss on a validation "
                    "batch is") + f" not finite, so no checkpoint was written; last good checkpoint: "
                    f"{_last_good(last_good)}" + (" (kept)" if last_good else ""))
            _save(ckpt_path, model, opt, tok, cfg, step, rng, history)
            last_good = ckpt_path
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
    """The command line; errors become one-line messages (exit 2 for usage, 1 for a failed run)."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.train")


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("options (--key=value):")
        for f in dataclasses.fields(TrainConfig):
            print(f"  --{f.name}={f.default!r}")
        print(f"presets: {', '.join(all_presets())}")
        return 0
    sweep = [a for a in argv if a.startswith("--lr_sweep=")]
    cfg = config_from_args([a for a in argv if not a.startswith("--lr_sweep=")])
    if sweep:                                          # one resumable run per rate (mmf/experiments/lr_sweep.py)
        from mmf.experiments.lr_sweep import lr_sweep, parse_lrs
        lr_sweep(cfg, parse_lrs(sweep[-1].split("=", 1)[1]))
        return 0
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
