"""The paper's baselines beside the MatMul-free LM, trained by the same code on the same data.

    python -m mmf.experiments.baselines             # learning-rate sweep, then 2 seeds at each best rate
    python -m mmf.experiments.baselines --sweep     # only the sweep (1 seed, 3 learning rates per variant)
    python -m mmf.experiments.baselines --only=mmfree-ternary,mmfree-float
    python -m mmf.experiments.baselines --table     # the results table from the committed CSV
    python -m mmf.experiments.baselines --publish   # copy runs.csv and the curves to docs/results/

Seven variants at one size (D = 256, two blocks: about 1.7M non-embedding parameters each, matched within
a few percent; `--counts` prints them), the same Tiny Shakespeare tokens (BPE 2048, the shakespeare
preset's data), the same token budget and schedule; only the learning rate is tuned per variant:

  mmfree-ternary     the MatMul-free LM (MLGRU + GLU, ternary BitLinears)
  mmfree-float       the same network with both quantizers off
  transformer-float  Transformer++ (a Llama: RoPE, SwiGLU, RMSNorm), the paper's baseline
  bitnet-b1.58       that Transformer with ternary BitLinears (embedding and LM head float)
  bitnet-binary      the same with binary weights (BitNet, 2023)
  ternary-qk         the float Transformer with ternary Q and K (the paper's "MatMul-free Transformer++")
  rwkv4-ternary      the paper's third contender: RWKV-4 with ternary BitLinears (mmf.RWKV4LM, F = 4D)

The runs go through `mmf.experiments.runner`, so an interrupted study resumes where it stopped.
Every run is small (70-506 s each here, on a 2-core machine shared with other jobs; the CSV has each
run's wall time): the results say how these models compare after ~150k tokens, not at the paper's scale.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys

from mmf.experiments.runner import Run, read_csv, run_grid
from mmf.models.registry import ARCHITECTURES
from mmf.training.trainer import PRESETS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS_CSV = os.path.join(REPO_ROOT, "docs", "results", "baselines.csv")
CURVES_JSON = os.path.join(REPO_ROOT, "docs", "results", "baselines_curves.json")

# name -> (label, TrainConfig fields that make the variant)
VARIANTS: dict[str, tuple[str, dict]] = {
    "mmfree-ternary": ("MMfree, ternary", dict(arch="mmfree", weights="ternary")),
    "mmfree-float": ("MMfree, float", dict(arch="mmfree", weights="float")),
    "transformer-float": ("Transformer++, float", dict(arch="transformer", weights="float", num_heads=4)),
    "bitnet-b1.58": ("BitNet b1.58 (ternary Transformer)",
                     dict(arch="transformer", weights="ternary", num_heads=4)),
    "bitnet-binary": ("BitNet (binary Transformer)", dict(arch="transformer", weights="binary", num_heads=4)),
    "ternary-qk": ("Transformer++ with ternary Q, K", dict(arch="transformer", weights="float", num_heads=4,
                                                          ternary_qk=True)),
    "rwkv4-ternary": ("MatMul-free RWKV-4, ternary", dict(arch="rwkv4", weights="ternary")),
}

# the data, size, budget and schedule every variant shares: the shakespeare preset's data, 150 steps of
# 8 x 128 tokens (153,600 tokens, about 0.44 epochs), validation on the first 128 windows (16,384 tokens)
BASE = {**PRESETS["shakespeare"], "hidden_size": 256, "num_layers": 2, "batch_size": 8, "block_size": 128,
        "max_steps": 150, "warmup_steps": 15, "eval_interval": 50, "checkpoint_interval": 50,
        "eval_windows": 128, "backend": "numba", "sample_prompts": ""}

# learning rates swept per variant (3 each, 1 seed; extended along LADDER while the best is at an edge):
# quantized weights like larger steps than float ones
SWEEP_LRS = {"ternary": (1e-3, 3e-3, 1e-2), "binary": (1e-3, 3e-3, 1e-2), "float": (3e-4, 1e-3, 3e-3)}
SWEEP_SEED = 0
# half-decade steps: a sweep whose best rate is at its edge is extended one step along this ladder
LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
MAX_EXTENSIONS = 2
# what the sweep picked (docs/results/baselines.csv; tests/test_baselines.py keeps the two equal): the
# learning rates of the presets `python -m mmf.train --preset=baseline-<variant>`
CHOSEN_LRS = {"mmfree-ternary": 3e-3, "mmfree-float": 3e-3, "transformer-float": 3e-3, "bitnet-b1.58": 3e-3,
              "bitnet-binary": 3e-3, "ternary-qk": 3e-3, "rwkv4-ternary": 1e-2}
FINAL_SEEDS = (0, 1)            # seed 0 at the best rate is the sweep's own run (same config, same folder)

# seconds-long version for CI and notebooks in smoke mode: the stories smoke data, a 32-wide model
SMOKE_BASE = {**PRESETS["smoke"], "max_steps": 12, "eval_interval": 6, "checkpoint_interval": 6,
              "backend": "numpy", "sample_prompts": ""}
SMOKE_LRS = (3e-3, 1e-2)


def presets() -> dict[str, dict]:
    """TrainConfig presets `baseline-<variant>`: the study's data, size and budget at the chosen rate."""
    return {f"baseline-{v}": {**BASE, **fields, "lr": CHOSEN_LRS[v], "out_dir": f"runs/baseline-{v}",
                              "sample_prompts": "ROMEO:|First Citizen:"}
            for v, (_, fields) in VARIANTS.items()}


def available(variant: str) -> bool:
    """Is this variant's architecture registered (the Transformer arrives with its own module)?"""
    return VARIANTS[variant][1]["arch"] in ARCHITECTURES


def check_variants(names) -> list[str]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    missing = [n for n in names if not available(n)]
    if missing:
        raise ValueError(f"variant(s) {missing} need an architecture that is not registered here "
                         f"({sorted({VARIANTS[n][1]['arch'] for n in missing})}); known architectures: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return list(names)


def run_name(variant: str, lr: float, seed: int) -> str:
    return f"{variant}_lr{lr:g}_s{seed}"


def sweep_runs(variants, smoke: bool = False, extra: dict | None = None) -> list[Run]:
    """Seed-0 runs at each variant's swept rates, plus `extra` {variant: [rates]} (edge extensions)."""
    out = []
    for v in variants:
        fields = VARIANTS[v][1]
        lrs = (SMOKE_LRS if smoke else SWEEP_LRS[fields["weights"]]) + tuple((extra or {}).get(v, ()))
        for lr in lrs:
            out.append(Run(run_name(v, lr, SWEEP_SEED), {**fields, "lr": lr, "seed": SWEEP_SEED},
                           {"variant": v}))
    return out


def edge_extensions(rows: list[dict]) -> dict[str, float]:
    """{variant: next rate} for every variant whose best seed-0 rate is the smallest or the largest it
    was swept at, and whose neighbour beyond it on LADDER has not been run: a best rate at the edge of
    a sweep says the optimum may lie outside it."""
    out = {}
    for v, best in best_lrs(rows).items():
        tried = sorted(r["lr"] for r in rows if r["variant"] == v and r["seed"] == SWEEP_SEED)
        k = min(range(len(LADDER)), key=lambda i: abs(math.log(LADDER[i] / best)))
        for edge, step in ((tried[-1], 1), (tried[0], -1)):
            if best == edge and 0 <= k + step < len(LADDER) and LADDER[k + step] not in tried:
                out[v] = LADDER[k + step]
    return out


def best_lrs(rows: list[dict]) -> dict[str, float]:
    """Each variant's learning rate with the lowest validation loss among its seed-0 runs (the sweep);
    diverged runs (NaN loss) never win."""
    best: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r["seed"] != SWEEP_SEED or not isinstance(r["val_loss"], (int, float)) or math.isnan(r["val_loss"]):
            continue
        if r["variant"] not in best or r["val_loss"] < best[r["variant"]][1]:
            best[r["variant"]] = (r["lr"], r["val_loss"])
    return {v: lr for v, (lr, _) in best.items()}


def final_runs(variants, lrs: dict[str, float], seeds=FINAL_SEEDS) -> list[Run]:
    return [Run(run_name(v, lrs[v], s), {**VARIANTS[v][1], "lr": lrs[v], "seed": s}, {"variant": v})
            for v in variants if v in lrs for s in seeds]


def run_study(variants, out_dir: str, sweep_only: bool = False, smoke: bool = False,
              progress: bool = True) -> list[dict]:
    """The sweep, then the final seeds at each variant's best rate; returns every finished row."""
    base = SMOKE_BASE if smoke else BASE
    extra: dict[str, list[float]] = {}
    for _ in range(MAX_EXTENSIONS + 1):                     # the sweep, extended while a best rate is at an edge
        sweep = sweep_runs(variants, smoke, extra)
        rows = run_grid(sweep, base, out_dir, progress=progress)
        more = {} if smoke else edge_extensions(rows)
        if not more:
            break
        for v, lr in more.items():
            extra.setdefault(v, []).append(lr)
    if sweep_only:
        return rows
    finals = [r for r in final_runs(variants, best_lrs(rows)) if r.name not in {s.name for s in sweep}]
    return run_grid(sweep + finals, base, out_dir, progress=progress)


# ----------------------------------------------------------------------------------------------
# the results table (README) and the verdicts, computed from the CSV alone


def summarize(rows: list[dict]) -> dict:
    """Per variant: best lr, the final seeds' bits/char (values, mean, half-range), the initial loss.
    Plus the MMfree-ternary vs Transformer++ gap and the ternary-QK convergence verdict."""
    lrs = best_lrs(rows)
    out = {"variants": {}}
    for v, lr in lrs.items():
        final = sorted((r for r in rows if r["variant"] == v and r["lr"] == lr and r["seed"] in FINAL_SEEDS),
                       key=lambda r: r["seed"])
        bpc = [r["bits_per_char"] for r in final]
        loss = [r["val_loss"] for r in final]
        out["variants"][v] = {
            "lr": lr, "seeds": [r["seed"] for r in final], "bits_per_char": bpc, "val_loss": loss,
            "bpc_mean": sum(bpc) / len(bpc), "bpc_halfrange": (max(bpc) - min(bpc)) / 2,
            "loss_mean": sum(loss) / len(loss), "init_loss": sum(r["init_loss"] for r in final) / len(final),
            "params": final[0]["params"], "params_nonembedding": final[0]["params_nonembedding"],
            "tokens": final[0]["tokens"], "wall_s": sum(r["wall_s"] for r in final) / len(final),
            "sweep": {r["lr"]: r["val_loss"] for r in rows if r["variant"] == v and r["seed"] == SWEEP_SEED},
        }
    V = out["variants"]
    if "mmfree-ternary" in V and "transformer-float" in V:
        a, b = V["mmfree-ternary"], V["transformer-float"]
        out["gap"] = {"bpc": a["bpc_mean"] - b["bpc_mean"], "spread": a["bpc_halfrange"] + b["bpc_halfrange"],
                      "pairs": [x - y for x in a["bits_per_char"] for y in b["bits_per_char"]]}
    if "ternary-qk" in V and "transformer-float" in V:
        qk, tf = V["ternary-qk"], V["transformer-float"]
        to_init, to_float = abs(qk["loss_mean"] - qk["init_loss"]), abs(qk["loss_mean"] - tf["loss_mean"])
        out["ternary_qk"] = {"init_loss": qk["init_loss"], "final_loss": qk["loss_mean"],
                             "float_final_loss": tf["loss_mean"], "converged": to_float < to_init,
                             "fraction_of_float_progress": (qk["init_loss"] - qk["loss_mean"])
                             / (qk["init_loss"] - tf["loss_mean"])}
    return out


def results_markdown(rows: list[dict]) -> str:
    """The README's table and the sentences under it (regenerated by a test from the committed CSV)."""
    s = summarize(rows)
    lines = ["| variant | weights | non-embedding params | best lr (swept) | val bits/char, 2 seeds | mean ± half-range |",
             "|---|---|---|---|---|---|"]
    for v, d in s["variants"].items():
        label, fields = VARIANTS[v]
        swept = ", ".join(f"{lr:g}" + ("*" if lr == d["lr"] else "") for lr in sorted(d["sweep"]))
        lines.append(f"| {label} | {fields['weights']}{' + ternary QK' if fields.get('ternary_qk') else ''} "
                     f"| {d['params_nonembedding']:,} | {d['lr']:g} ({swept}) | "
                     f"{', '.join(f'{b:.3f}' for b in d['bits_per_char'])} | "
                     f"{d['bpc_mean']:.3f} ± {d['bpc_halfrange']:.3f} |")
    any_v = next(iter(s["variants"].values()), None)
    if any_v:
        lines.append("")
        ok = [r for r in rows if r["status"] == "ok"]
        lines.append(f"Each run: {any_v['tokens']:,} training tokens; * marks the learning rate the sweep "
                     f"picked (lowest seed-0 validation loss). {len(rows)} runs, "
                     f"{sum(r['wall_s'] for r in ok) / 60:.0f} min of training in all on this shared machine "
                     f"(the sum of each run's wall time; {min(r['wall_s'] for r in ok):.0f}-"
                     f"{max(r['wall_s'] for r in ok):.0f} s per run).")
    if "gap" in s:
        g = s["gap"]
        lines.append(f"MMfree ternary minus Transformer++ float: {g['bpc']:+.3f} bits/char (seed pairs "
                     f"{min(g['pairs']):+.3f} to {max(g['pairs']):+.3f}; the two half-ranges add to "
                     f"{g['spread']:.3f}, so the gap is {'larger' if abs(g['bpc']) > g['spread'] else 'not larger'}"
                     " than the seed spread).")
    if "rwkv4-ternary" in s["variants"] and "mmfree-ternary" in s["variants"]:
        a, b = s["variants"]["rwkv4-ternary"], s["variants"]["mmfree-ternary"]
        gap, spread = a["bpc_mean"] - b["bpc_mean"], a["bpc_halfrange"] + b["bpc_halfrange"]
        lines.append(f"MatMul-free RWKV-4 ternary minus MMfree ternary: {gap:+.3f} bits/char (the two half-ranges "
                     f"add to {spread:.3f}, so the gap is {'larger' if abs(gap) > spread else 'not larger'} than "
                     "the seed spread).")
    if "ternary_qk" in s:
        q = s["ternary_qk"]
        verdict = ("converged at this scale" if q["converged"] else "did not converge")
        lines.append(f"Ternary Q, K {verdict}: validation loss {q['final_loss']:.3f} nats/token after the "
                     f"budget, from {q['init_loss']:.3f} at step 0, against {q['float_final_loss']:.3f} for the "
                     f"float Transformer++ ({100 * q['fraction_of_float_progress']:.0f}% of the float model's "
                     "progress).")
    return "\n".join(lines) + "\n"


def publish(variants, out_dir: str, csv_path: str = RESULTS_CSV, curves_path: str = CURVES_JSON) -> None:
    """Copy out_dir/runs.csv to docs/results/ and write every run's curves beside it."""
    os.makedirs(os.path.dirname(csv_path), exist_ok=True)
    shutil.copyfile(os.path.join(out_dir, "runs.csv"), csv_path)
    curves = {}
    for row in read_csv(csv_path):
        with open(os.path.join(out_dir, row["name"], "result.json")) as f:
            c = json.load(f).get("curves") or {}
        if c:
            curves[row["name"]] = {"val_step": c["val_step"], "val_loss": c["val_loss"], "step": c["step"],
                                   "train_loss": [round(x, 4) for x in c["train_loss"]]}
    with open(curves_path, "w") as f:
        json.dump(curves, f, indent=0)


def parameter_counts(variants) -> dict[str, tuple[int, int]]:
    """(params, non-embedding params) of every variant at the study's size, from freshly built models."""
    from mmf.experiments.runner import count_params
    from mmf.training.trainer import TrainConfig, model_config_of
    from mmf.models.registry import build_model
    out = {}
    for v in variants:
        cfg = TrainConfig(**{**BASE, **VARIANTS[v][1]})
        out[v] = count_params(build_model(model_config_of(cfg, BASE["vocab_size"])))
    return out


def main(argv=None) -> int:
    """The command line; errors become one-line messages (exit 2 for usage errors and unusable run folders)."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.experiments.baselines")


def _main(argv) -> int:
    opts = {"only": ",".join(VARIANTS), "out_dir": "runs/baselines"}
    flags = set()
    for a in argv:
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a in ("--sweep", "--smoke", "--table", "--publish", "--counts", "--no_progress"):
            flags.add(a[2:])
        elif a.startswith("--") and "=" in a and a[2:].split("=", 1)[0] in opts:
            k, v = a[2:].split("=", 1)
            opts[k] = v
        else:
            raise ValueError(f"unknown argument {a!r}; see python -m mmf.experiments.baselines --help")
    if "table" in flags:
        print(results_markdown(read_csv(RESULTS_CSV)), end="")
        return 0
    names = [n for n in opts["only"].split(",") if n]
    if opts["only"] == ",".join(VARIANTS):                  # default: every variant this checkout has
        names = [n for n in names if available(n)]
    variants = check_variants(names)
    if "counts" in flags:
        for v, (p, ne) in parameter_counts(variants).items():
            print(f"{v:18s} {p:>10,} params, {ne:>10,} non-embedding")
        return 0
    rows = run_study(variants, opts["out_dir"], sweep_only="sweep" in flags, smoke="smoke" in flags,
                     progress="no_progress" not in flags)
    if "publish" in flags:
        publish(variants, opts["out_dir"])
    if "sweep" not in flags:
        print(results_markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
