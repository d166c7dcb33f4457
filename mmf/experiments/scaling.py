"""The paper's central claim at CPU scale: loss against training compute, per architecture and size.

    python -m mmf.scaling                        # the default grid (runs/scaling): MMfree ternary, MMfree
                                                 #   float, Transformer++ float at 5 sizes; resumable
    python -m mmf.scaling --full                 # + BitNet b1.58 and binary BitNet (and any other
                                                 #   architecture of FULL_EXTRA that this checkout registers)
    python -m mmf.scaling --smoke                # seconds: the stories smoke data, tiny sizes (CI)
    python -m mmf.scaling --only=mmfree-ternary,transformer-float --sizes=d48l2,d64l2
    python -m mmf.scaling --plan                 # the grid, its counts and the time estimate; no training
    python -m mmf.scaling --table                # the README's results from docs/results/scaling.csv
    python -m mmf.scaling --energy               # the README's energy-per-token table
    python -m mmf.scaling --publish              # copy DIR/runs.csv to docs/results/scaling.csv

The study (Zhu et al. 2024 fit loss against compute and find the MatMul-free curve steeper than the
Transformer++ one, crossing near 1e23 FLOPs; here the same question at 1e11-1e13 FLOPs):

  data        Tiny Shakespeare with the 2048-token BPE (the shakespeare preset), batches of 8 x 128 tokens;
              validation on the first 128 windows of the held-out split (16,384 tokens)
  sizes       SIZES: width D and depth L; GLU / SwiGLU width I = 8D/3 rounded up to a multiple of 32
              (the E8 rule's 256-granularity would make sizes jump at these widths); Transformer heads
              32 wide (16 at D = 48)
  budget      tokens = TOKENS_PER_PARAM x non-embedding parameters, rounded up to whole steps: one
              rule for every run (so the smallest models see ~100k tokens, the largest ~1.2M, ~3.5 epochs)
  recipe      one per architecture: the learning rate the baselines sweep picked for it
              (mmf.experiments.baselines.CHOSEN_LRS), the trainer's schedule (warmup 10%, cosine, halved
              at the midpoint), weight decay 0.1
  seeds       2 at the two smallest sizes (to see the noise), 1 elsewhere
  compute     mmf/experiments/flops.py: 6 N_matmul tokens + the causal attention term, and the split
              into float multiplies, float adds and integer additions
  loss        the best validation point of each run (6 evaluations), in nats/token and bits/char

Every run has its own folder under DIR (mmf.experiments.runner): re-running skips finished runs and
resumes interrupted ones from their last checkpoint; finished runs are never overwritten; DIR/runs.csv
lists the finished ones, DIR/grid.json names the grid (a smoke grid and a real one never share a folder).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys

import numpy as np

from mmf.atomic import write_text_atomic
from mmf.experiments.baselines import CHOSEN_LRS
from mmf.experiments.energy import RELEASED_SHAPES, energy_per_token, fpga_energy_per_token
from mmf.experiments.fit import crossing_distribution, crossings, fit_power_law, residual_runs
from mmf.experiments.flops import MATMUL_TABLES, training_compute
from mmf.experiments.runner import Run, RunFolderError, count_params, read_csv, run_grid
from mmf.models.registry import ARCHITECTURES, build_model
from mmf.training.trainer import PRESETS, TrainConfig, model_config_of

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_CSV = os.path.join(REPO_ROOT, "docs", "results", "scaling.csv")

# ----------------------------------------------------------------------------------------------
# the grid: architectures and sizes are tables

# name -> (label, TrainConfig fields). The learning rate is the baselines sweep's choice for the name.
ARCHS: dict[str, tuple[str, dict]] = {
    "mmfree-ternary": ("MMfree, ternary", dict(arch="mmfree", weights="ternary")),
    "mmfree-float": ("MMfree, float", dict(arch="mmfree", weights="float")),
    "transformer-float": ("Transformer++, float", dict(arch="transformer", weights="float")),
    "bitnet-b1.58": ("BitNet b1.58", dict(arch="transformer", weights="ternary")),
    "bitnet-binary": ("BitNet (binary)", dict(arch="transformer", weights="binary")),
    "rwkv4-ternary": ("MatMul-free RWKV-4, ternary", dict(arch="rwkv4", weights="ternary")),
}
DEFAULT_ARCHS = ("mmfree-ternary", "mmfree-float", "transformer-float")
FULL_EXTRA = ("bitnet-b1.58", "bitnet-binary", "rwkv4-ternary")

# name -> (D, L, transformer heads)
SIZES: dict[str, tuple[int, int, int]] = {
    "d48l2": (48, 2, 3), "d64l2": (64, 2, 2), "d96l2": (96, 2, 3), "d96l3": (96, 3, 3), "d128l3": (128, 3, 4),
    "d160l4": (160, 4, 5), "d192l4": (192, 4, 6),
}
SMOKE_SIZES: dict[str, tuple[int, int, int]] = {
    "d8l1": (8, 1, 1), "d16l1": (16, 1, 1), "d24l1": (24, 1, 1), "d32l1": (32, 1, 1),
}
TWO_SEED_SIZES = 2                                  # the smallest this-many sizes get seeds 0 and 1
TOKENS_PER_PARAM = 2.0                              # tokens per non-embedding parameter, every run
EVALS_PER_RUN = 6

# data, batch and evaluation shared by every run (the shakespeare preset's data)
BASE = {**PRESETS["shakespeare"], "batch_size": 8, "block_size": 128, "eval_windows": 128,
        "backend": "numba", "sample_prompts": "", "progress": False}
SMOKE_BASE = {**PRESETS["smoke"], "batch_size": 4, "block_size": 32, "backend": "numpy",
              "sample_prompts": "", "eval_windows": 4}
SMOKE_TOKENS_PER_PARAM = 0.12                      # smoke: a handful of steps per run


def intermediate_size(D: int) -> int:
    """8D/3 rounded up to a multiple of 32 (a finer rounding than E8's 256, for these small widths)."""
    return 32 * math.ceil(8 * D / 3 / 32)


def available(arch: str) -> bool:
    """Is the architecture registered in this checkout, with a compute-accounting rule?"""
    fields = ARCHS[arch][1]
    return fields["arch"] in ARCHITECTURES and fields["arch"] in MATMUL_TABLES


def check_names(archs, sizes, smoke: bool) -> tuple[list[str], list[str]]:
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise ValueError(f"unknown architecture(s) {unknown} in --only; known: {', '.join(ARCHS)}")
    missing = [a for a in archs if not available(a)]
    if missing:
        raise ValueError(f"architecture(s) {missing} are not registered in this checkout; known "
                         f"architectures: {', '.join(sorted(ARCHITECTURES))}")
    table = SMOKE_SIZES if smoke else SIZES
    bad = [s for s in sizes if s not in table]
    if bad:
        raise ValueError(f"unknown size(s) {bad} in --sizes for the {'smoke' if smoke else 'real'} grid; "
                         f"known: {', '.join(table)}")
    if not archs or not sizes:
        raise ValueError("the grid is empty: give at least one architecture (--only) and one size (--sizes)")
    return list(archs), list(sizes)


def _fields(arch: str, size: str, smoke: bool) -> dict:
    D, L, heads = (SMOKE_SIZES if smoke else SIZES)[size]
    f = {**ARCHS[arch][1], "hidden_size": D, "num_layers": L, "intermediate_size": intermediate_size(D)}
    if f["arch"] == "transformer":
        f["num_heads"] = heads
    if f["arch"] == "rwkv4":
        f["intermediate_size"] = 4 * D        # RWKV-4's own channel-mixing width (its body is then ~13 D^2
                                              # per layer against MMfree's and Transformer++'s ~12 D^2)
    return f


def model_config(arch: str, size: str, smoke: bool = False):
    base = SMOKE_BASE if smoke else BASE
    vocab = base.get("vocab_size", TrainConfig.vocab_size)
    return model_config_of(TrainConfig(**{**base, **_fields(arch, size, smoke)}), vocab)


def param_counts(arch: str, size: str, smoke: bool = False) -> tuple[int, int]:
    """(parameters, non-embedding parameters) of a freshly built model (the vocabulary the preset asks
    for: the BPE may learn a few ids fewer, so the CSV's counts come from the trained model)."""
    return count_params(build_model(model_config(arch, size, smoke)))


def runs_of(archs, sizes, smoke: bool = False) -> list[Run]:
    """The grid's runs in order: for each size (small first), each architecture, each seed."""
    base = SMOKE_BASE if smoke else BASE
    per_param = SMOKE_TOKENS_PER_PARAM if smoke else TOKENS_PER_PARAM
    table = SMOKE_SIZES if smoke else SIZES
    two_seed = [s for s in table][:TWO_SEED_SIZES]
    step_tokens = base["batch_size"] * base["block_size"]
    out = []
    for size in sizes:
        for arch in archs:
            _, ne = param_counts(arch, size, smoke)
            steps = max(4, math.ceil(per_param * ne / step_tokens))
            every = max(1, steps // EVALS_PER_RUN)
            for seed in ((0, 1) if size in two_seed else (0,)):
                if arch not in CHOSEN_LRS:
                    raise ValueError(f"no learning rate for {arch!r}: the baselines sweep "
                                     "(mmf.experiments.baselines.CHOSEN_LRS) has none; sweep it first")
                lr = CHOSEN_LRS[arch]
                over = {**_fields(arch, size, smoke), "lr": lr, "seed": seed, "max_steps": steps,
                        "warmup_steps": max(1, steps // 10), "eval_interval": every, "checkpoint_interval": every}
                out.append(Run(f"{arch}_{size}_s{seed}", over,
                               {"grid": "smoke" if smoke else "scaling", "variant": arch, "size": size}))
    return out


# ----------------------------------------------------------------------------------------------
# extra columns of every finished run: compute, the best validation point, the final train loss


def extra_columns(run: Run, cfg: TrainConfig, result: dict) -> dict:
    row, curves = result["row"], result.get("curves") or {}
    if row["status"] != "ok" or not curves.get("val_loss"):
        return {"flops": "", "flops_attention": "", "float_mul": "", "float_add": "", "int_add": "",
                "n_matmul": "", "train_loss": "", "best_val_loss": math.nan, "best_val_step": "",
                "best_bits_per_char": math.nan}
    model_cfg = model_config_of(cfg, _trained_vocab(row))
    comp = training_compute(model_cfg, row["tokens"], cfg.block_size)
    v = curves["val_loss"]
    k = int(np.argmin(v))
    tail = curves["train_loss"][-max(1, len(curves["train_loss"]) // 10):]   # last 10% of the steps
    counts = {k: int(round(getattr(comp, k))) for k in ("flops", "flops_attention", "float_mul", "float_add",
                                                        "int_add", "n_matmul")}   # whole numbers, exact in the CSV
    return {**counts,
            "train_loss": float(np.mean(tail)), "best_val_loss": float(v[k]),
            "best_val_step": curves["val_step"][k],
            "best_bits_per_char": float(v[k]) * row["bits_per_char"] / row["val_loss"]}


def _trained_vocab(row: dict) -> int:
    """The vocabulary of the trained model, recovered from its two parameter counts: params - ne = 2 V D
    (embedding and LM head, both V x D)."""
    return (row["params"] - row["params_nonembedding"]) // (2 * row["hidden_size"])


GRID_COLUMNS = ("grid", "variant", "size", "flops", "flops_attention", "float_mul", "float_add", "int_add",
                "n_matmul", "train_loss", "best_val_loss", "best_val_step", "best_bits_per_char")


def check_grid_dir(out_dir: str, smoke: bool) -> None:
    """Refuse a folder holding another grid: DIR/grid.json names the grid, and a DIR/runs.csv must be a
    scaling CSV of the same grid."""
    want = "smoke" if smoke else "scaling"
    spec = os.path.join(out_dir, "grid.json")
    if os.path.exists(spec):
        try:
            with open(spec) as f:
                got = json.load(f).get("grid")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise RunFolderError(f"{spec}: unreadable ({e}); delete it or choose another --out_dir") from None
        if got != want:
            raise RunFolderError(f"{out_dir!r} holds the {got!r} grid, not {want!r}; choose another --out_dir")
    csv_path = os.path.join(out_dir, "runs.csv")
    if os.path.exists(csv_path):
        check_scaling_csv(read_csv(csv_path), csv_path, want)


def check_scaling_csv(rows: list[dict], path: str, grid: str | None = None) -> list[dict]:
    """Rows of a scaling CSV, or a ValueError naming the file when it comes from another grid."""
    if rows and any(c not in rows[0] for c in GRID_COLUMNS):
        raise ValueError(f"{path}: not a scaling-study CSV (needs the columns {', '.join(GRID_COLUMNS)}); "
                         "it is another grid's")
    grids = {r["grid"] for r in rows}
    if grid is not None and grids - {grid}:
        raise ValueError(f"{path}: rows of the {sorted(grids)} grid, expected {grid!r}; choose another --out_dir")
    for r in rows:
        table = SMOKE_SIZES if r["grid"] == "smoke" else SIZES
        if r["variant"] not in ARCHS or r["size"] not in table:
            raise ValueError(f"{path}: row {r['name']!r} names an architecture or size this study does not "
                             f"know ({r['variant']!r}, {r['size']!r})")
    return rows


def run_study(archs, sizes, out_dir: str, smoke: bool = False, progress: bool = True) -> list[dict]:
    archs, sizes = check_names(archs, sizes, smoke)
    runs = runs_of(archs, sizes, smoke)
    os.makedirs(out_dir, exist_ok=True)
    check_grid_dir(out_dir, smoke)
    write_text_atomic(os.path.join(out_dir, "grid.json"), json.dumps({"grid": "smoke" if smoke else "scaling"}))
    return run_grid(runs, SMOKE_BASE if smoke else BASE, out_dir, progress=progress, run_progress=progress,
                    extra=extra_columns)                       # tqdm over the grid and within each run


# ----------------------------------------------------------------------------------------------
# the time estimate (--plan)


def measured_rates(path: str = RESULTS_CSV) -> dict:
    """{variant: {D: training tokens/s}} from the published grid's own runs (tokens / wall_s of every
    finished run in docs/results/scaling.csv, the median over seeds and layer counts at each width).
    Those runs shared 2 cores two by two with other jobs, so the rates are cautious."""
    if not os.path.exists(path):
        return {}
    by = {}
    for r in read_csv(path):
        if r.get("status") == "ok" and isinstance(r.get("wall_s"), (int, float)) and r["wall_s"] > 0:
            by.setdefault(r["variant"], {}).setdefault(int(r["hidden_size"]), []).append(r["tokens"] / r["wall_s"])
    return {v: {d: float(np.median(x)) for d, x in widths.items()} for v, widths in by.items()}


def estimate_seconds(arch: str, size: str, tokens: int, rates: dict | None = None) -> float | None:
    """Seconds of one run: tokens / the rate the published grid measured for this architecture at the
    nearest width >= D (the widest measured one beyond); None for an architecture never measured."""
    rates = (measured_rates() if rates is None else rates).get(arch)
    if not rates:
        return None
    D = SIZES[size][0]
    nearest = min((d for d in rates if d >= D), default=max(rates))
    return tokens / rates[nearest]


def plan(archs, sizes, smoke: bool = False) -> list[dict]:
    base = SMOKE_BASE if smoke else BASE
    out, rates = [], ({} if smoke else measured_rates())
    for run in runs_of(archs, sizes, smoke):
        arch, size = run.tags["variant"], run.tags["size"]
        p, ne = param_counts(arch, size, smoke)
        tokens = run.overrides["max_steps"] * base["batch_size"] * base["block_size"]
        comp = training_compute(model_config(arch, size, smoke), tokens, base["block_size"])
        out.append({"name": run.name, "params": p, "params_nonembedding": ne, "tokens": tokens,
                    "flops": comp.flops, "est_s": None if smoke else estimate_seconds(arch, size, tokens, rates)})
    return out


# ----------------------------------------------------------------------------------------------
# analysis from the CSV alone: per-size summaries, fits, the gap, energy


def _ok(rows):
    return [r for r in rows if r["status"] == "ok" and isinstance(r["best_val_loss"], float)
            and math.isfinite(r["best_val_loss"])]


def by_size(rows: list[dict]) -> dict:
    """{(variant, size): {"loss": [...], "bpc": [...], "flops", "ne", "tokens"}} over seeds."""
    out = {}
    for r in _ok(rows):
        d = out.setdefault((r["variant"], r["size"]), {"loss": [], "bpc": [], "flops": r["flops"],
                                                      "ne": r["params_nonembedding"], "tokens": r["tokens"]})
        d["loss"].append(r["best_val_loss"])
        d["bpc"].append(r["best_bits_per_char"])
    return out


def fits(rows: list[dict], form: str = "saturating", bootstrap: int = 200) -> dict:
    """Per variant with >= 3 sizes: the fit of best validation loss against FLOPs, bootstrapped over
    sizes and seeds."""
    out = {}
    ok = _ok(rows)
    for v in dict.fromkeys(r["variant"] for r in ok):
        pts = [r for r in ok if r["variant"] == v]
        if len({r["size"] for r in pts}) < 3:
            continue
        C = np.array([r["flops"] for r in pts], dtype=np.float64)
        L = np.array([r["best_val_loss"] for r in pts], dtype=np.float64)
        groups = np.array([r["size"] for r in pts])
        try:
            out[v] = fit_power_law(C, L, form, groups=groups, bootstrap=bootstrap, seed=0)
        except ValueError:
            continue
        out[v].points = (C, L)
    return out


def gap_by_size(rows: list[dict], a: str = "mmfree-ternary", b: str = "transformer-float") -> list[dict]:
    """Validation-loss gap a - b at each size both have: mean difference and the spread of all seed pairs."""
    s = by_size(rows)
    out = []
    for (v, size), d in s.items():
        if v != a or (b, size) not in s:
            continue
        e = s[(b, size)]
        pairs = [x - y for x in d["loss"] for y in e["loss"]]
        pairs_bpc = [x - y for x in d["bpc"] for y in e["bpc"]]
        out.append({"size": size, "ne": d["ne"], "gap_loss": float(np.mean(pairs)), "gap_bpc": float(np.mean(pairs_bpc)),
                    "pair_min": min(pairs_bpc), "pair_max": max(pairs_bpc), "seeds": (len(d["loss"]), len(e["loss"]))})
    return sorted(out, key=lambda g: g["ne"])


def _fmt_loss(values):
    m = float(np.mean(values))
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ± {(max(values) - min(values)) / 2:.3f}"


def results_markdown(rows: list[dict], bootstrap: int = 200) -> str:
    """The README's results (regenerated by a test from the committed CSV)."""
    smoke = any(r["grid"] == "smoke" for r in rows)
    lines = []
    if smoke:
        lines += ["**SMOKE DATA** (`python -m mmf.scaling --smoke`: seconds-long runs on the stories smoke corpus; "
                  "these numbers only show the pipeline works, they are not results).", ""]
    lines += ["| architecture | size | non-embedding params | tokens | training FLOPs | best val loss (nats/token) | bits/char |",
              "|---|---|---|---|---|---|---|"]
    s = by_size(rows)
    for (v, size), d in sorted(s.items(), key=lambda kv: (list(ARCHS).index(kv[0][0]), kv[1]["ne"])):
        lines.append(f"| {ARCHS[v][0]} | {size} | {d['ne']:,} | {d['tokens']:,} | {d['flops']:.2e} | "
                     f"{_fmt_loss(d['loss'])} | {_fmt_loss(d['bpc'])} |")
    lines.append("")
    ok = _ok(rows)
    wall = sum(r["wall_s"] for r in ok)
    lines.append(f"(mean ± half-range over seeds where a size has two.) {len(ok)} finished runs, "
                 + (f"{wall:.1f} s" if wall < 120 else f"{wall / 3600:.2f} h")
                 + " of training wall time in all (the sum of each run's).")
    gaps = gap_by_size(rows)
    if gaps:
        lines.append("")
        lines.append("MMfree ternary minus Transformer++ float, best validation loss: " + "; ".join(
            f"{g['size']} {g['gap_loss']:+.3f} nats/token = {g['gap_bpc']:+.3f} bits/char "
            f"(seed pairs {g['pair_min']:+.3f} to {g['pair_max']:+.3f})" for g in gaps) + ".")
        two = [g for g in gaps if g["seeds"] == (2, 2)]
        noise = max((g["pair_max"] - g["pair_min"]) / 2 for g in two) if two else float("nan")
        change = gaps[-1]["gap_bpc"] - gaps[0]["gap_bpc"]
        verdict = ("shrinks" if change < 0 else "grows") + (" by more than" if abs(change) > noise else
                                                            " by no more than")
        lines.append(f"From the smallest to the largest size the gap {verdict} the seed noise "
                     f"({change:+.3f} bits/char against a seed half-range of up to {noise:.3f}).")
    F = fits(rows, bootstrap=bootstrap)
    if F:
        lines.append("")
        lines.append("Fits of L(C) = a·C^(−b) + c (least squares; 68% intervals from a bootstrap over sizes and "
                     "seeds; residual sign runs out of points, few runs = a wrong form):")
        lines.append("")
        for v, f in F.items():
            lo, hi = f.interval("b")
            clo, chi = f.interval("c")
            lines.append(f"- {ARCHS[v][0]}: b = {f.b:.3f} [{lo:.3f}, {hi:.3f}], c = {f.c:.3f} [{clo:.3f}, {chi:.3f}]; "
                         f"residual rms {np.sqrt(np.mean(f.residuals ** 2)):.4f}, "
                         f"{residual_runs(f.residuals[np.argsort(f.points[0], kind='stable')])} runs / {len(f.residuals)} points")
        if "mmfree-ternary" in F and "transformer-float" in F:
            f1, f2 = F["mmfree-ternary"], F["transformer-float"]
            Cs = np.concatenate([f1.points[0], f2.points[0]])
            lo_in = max(f1.points[0].min(), f2.points[0].min())
            hi_in = min(f1.points[0].max(), f2.points[0].max())
            inside = crossings(f1, f2, lo_in, hi_in) if lo_in < hi_in else []
            lines.append("")
            if inside:
                lines.append(f"The fitted curves cross inside the measured range at C ≈ {inside[0]:.2e} FLOPs.")
            else:
                lines.append(f"The fitted curves do not cross inside the measured range "
                             f"({lo_in:.2e}-{hi_in:.2e} FLOPs, where both were measured).")
            d = crossing_distribution(f1, f2, Cs.max(), 1e30)
            if d["fraction"] > 0 and "p50" in d:
                lines.append(f"Extrapolated (an illustration, not a result): {100 * d['fraction']:.0f}% of bootstrap "
                             f"replicates cross between {Cs.max():.1e} and 1e30 FLOPs, median {d['p50']:.1e} "
                             f"(16-84%: {d['p16']:.1e}-{d['p84']:.1e}).")
            else:
                lines.append("Extrapolated to 1e30 FLOPs, no bootstrap replicate crosses (an illustration only).")
    return "\n".join(lines) + "\n"


def energy_rows(archs, smoke: bool = False, context: int | None = None) -> list[dict]:
    """J/token for inference at every grid size and at the released shapes, per architecture."""
    from mmf.models.registry import ARCHITECTURES as A
    context = context or (SMOKE_BASE if smoke else BASE)["block_size"]
    out = []
    table = SMOKE_SIZES if smoke else SIZES
    for arch in archs:
        for size in table:
            cfg = model_config(arch, size, smoke)
            out.append({"variant": arch, "size": size, "context": context,
                        **energy_per_token(cfg, context), "fpga_j": fpga_energy_per_token(cfg)})
        for name, shape in RELEASED_SHAPES.items():
            fields = ARCHS[arch][1]
            config_cls = A[fields["arch"]][0]
            kw = dict(shape, weights=fields["weights"])
            if fields["arch"] == "transformer":
                kw["num_heads"] = shape["hidden_size"] // 64
            cfg = config_cls(**kw)
            out.append({"variant": arch, "size": name, "context": 2048,
                        **energy_per_token(cfg, 2048), "fpga_j": fpga_energy_per_token(cfg)})
    return out


def energy_markdown(archs=DEFAULT_ARCHS) -> str:
    """The README's energy table: J/token at the grid's sizes (context 128) and the released shapes
    (context 2048), computed from the configs alone (mmf/experiments/energy.py)."""
    lines = ["| architecture | size | context | int adds | float mul+add | arithmetic fp16 (J) | DRAM (J, 162-325 pJ/B) | FPGA model (J, board; 512-bit bursts) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in energy_rows(archs):
        fpga = f"{e['fpga_j']:.2e}" if e["fpga_j"] is not None else "n/a"
        lines.append(f"| {ARCHS[e['variant']][0]} | {e['size']} | {e['context']} | {e['int_add']:.2e} | "
                     f"{e['float_mul'] + e['float_add']:.2e} | {e['arith_j_fp16']:.2e} | "
                     f"{e['memory_j_low']:.2e}-{e['memory_j_high']:.2e} | {fpga} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# plots


def plot_all(out_dir: str, rows: list[dict], archs, smoke: bool = False) -> list[str]:
    """loss_curves.png (validation curves per size), loss_vs_compute.png (points, fits, bands,
    residuals) and energy.png in out_dir; returns the paths."""
    from matplotlib.figure import Figure          # no pyplot: files only, whatever the session's backend
    paths = []
    colors = {a: f"C{i}" for i, a in enumerate(ARCHS)}
    # 1. validation curves per size
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig = Figure(figsize=(3.2 * max(1, len(sizes)), 3))
    axes = fig.subplots(1, max(1, len(sizes)), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for r in rows:
            if r["size"] != size:
                continue
            res = os.path.join(out_dir, r["name"], "result.json")
            try:
                with open(res) as f:
                    c = json.load(f).get("curves") or {}
            except OSError:
                continue
            if c.get("val_loss"):
                ax.plot(np.array(c["val_step"]) * r["tokens"] / max(1, r["steps"]), c["val_loss"],
                        color=colors[r["variant"]], ls="-" if r["seed"] == 0 else "--",
                        label=f"{r['variant']} s{r['seed']}")
        ax.set_title(size)
        ax.set_xlabel("tokens")
    axes[0][0].set_ylabel("validation loss (nats/token)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "loss_curves.png"))
    fig.savefig(paths[-1], dpi=110)
    # 2. loss vs compute with fits, bands and residuals
    F = fits(rows)
    fig = Figure(figsize=(6, 6))
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for v in dict.fromkeys(r["variant"] for r in _ok(rows)):
        pts = [r for r in _ok(rows) if r["variant"] == v]
        C = np.array([r["flops"] for r in pts])
        ax.scatter(C, [r["best_val_loss"] for r in pts], color=colors[v], s=14, label=ARCHS[v][0])
        if v in F:
            f = F[v]
            grid = np.geomspace(C.min(), C.max(), 100)
            ax.plot(grid, f(grid), color=colors[v], lw=1, label=f"fit b={f.b:.3f}")
            lo, hi = f.band(grid)
            ax.fill_between(grid, lo, hi, color=colors[v], alpha=0.2)
            axr.scatter(f.points[0], f.residuals, color=colors[v], s=10)
    axr.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_ylabel("best validation loss (nats/token)")
    axr.set_xlabel("training FLOPs (6 N_matmul tokens + attention)")
    axr.set_ylabel("residual")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "loss_vs_compute.png"))
    fig.savefig(paths[-1], dpi=110)
    # 3. energy per token
    E = energy_rows(archs, smoke)
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for v in archs:
        er = [e for e in E if e["variant"] == v]
        x = np.arange(len(er))
        ax.plot(x, [e["arith_j_fp16"] for e in er], "o-", color=colors[v], label=f"{v}: arithmetic")
        ax.plot(x, [e["memory_j_low"] for e in er], "s--", color=colors[v], label=f"{v}: DRAM (low)")
        fp = [(i, e["fpga_j"]) for i, e in enumerate(er) if e["fpga_j"] is not None]
        if fp:
            ax.plot(*zip(*fp), "^:", color=colors[v], label=f"{v}: FPGA model (board)")
        ax.set_xticks(x, [e["size"] for e in er], rotation=30, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("J per generated token")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "energy.png"))
    fig.savefig(paths[-1], dpi=110)
    return paths


# ----------------------------------------------------------------------------------------------
# command line


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = {"only": "", "sizes": "", "out_dir": ""}
    flags = set()
    for a in argv:
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a in ("--smoke", "--full", "--plan", "--table", "--energy", "--publish", "--no_progress",
                 "--no_plots"):
            flags.add(a[2:])
        elif a.startswith("--") and "=" in a and a[2:].split("=", 1)[0] in opts:
            k, v = a[2:].split("=", 1)
            opts[k] = v
        else:
            print(f"error: unknown argument {a!r}; see python -m mmf.scaling --help", file=sys.stderr)
            return 2
    smoke = "smoke" in flags
    try:
        if "table" in flags:
            print(results_markdown(check_scaling_csv(read_csv(RESULTS_CSV), RESULTS_CSV)), end="")
            return 0
        if "energy" in flags:
            print(energy_markdown(), end="")
            return 0
        if opts["only"]:
            archs = [a for a in opts["only"].split(",") if a]
        else:
            archs = [a for a in DEFAULT_ARCHS + (FULL_EXTRA if "full" in flags else ()) if available(a)]
        sizes = [s for s in opts["sizes"].split(",") if s] if opts["sizes"] else list(SMOKE_SIZES if smoke else SIZES)
        archs, sizes = check_names(archs, sizes, smoke)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = opts["out_dir"] or ("runs/scaling-smoke" if smoke else "runs/scaling")
    if "plan" in flags:
        total = 0.0
        for p in plan(archs, sizes, smoke):
            est = p["est_s"]
            total += est or 0.0
            print(f"{p['name']:34s} {p['params']:>9,} params {p['params_nonembedding']:>9,} non-emb "
                  f"{p['tokens']:>9,} tokens {p['flops']:.2e} FLOPs" + (f"  ~{est / 60:.1f} min" if est else ""))
        if not smoke:
            unmeasured = sorted({a for a in archs if a not in measured_rates()})
            print(f"estimated total, one process: {total / 3600:.2f} h (at the rates of {os.path.relpath(RESULTS_CSV, REPO_ROOT)})"
                  + (f"; no measured rate for {', '.join(unmeasured)}: their runs are not in this total"
                     if unmeasured else ""))
        return 0
    try:
        rows = run_study(archs, sizes, out_dir, smoke=smoke, progress="no_progress" not in flags)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "no_plots" not in flags:
        for p in plot_all(out_dir, rows, archs, smoke):
            print(f"wrote {p}")
    if "publish" in flags:
        os.makedirs(os.path.dirname(RESULTS_CSV), exist_ok=True)
        shutil.copyfile(os.path.join(out_dir, "runs.csv"), RESULTS_CSV)
        print(f"wrote {RESULTS_CSV}")
    print(results_markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
