"""Compress a trained float checkpoint to ~1 bit per weight and compare the methods.

    python -m mmf.compress --checkpoint=runs/shakespeare_float/ckpt.ckpt \\
        --methods=rtn-ternary,rtn-binary,billm,onebit --out_dir=runs/compress
    python -m mmf.compress --checkpoint=FILE --methods=all --out_dir=DIR --smoke     # seconds, for CI

Each method compresses the block projections of the float model (mmf/compression/), the result is
evaluated on the validation set of the checkpoint's own data and saved as DIR/<method>[-s<seed>].ckpt
(an ordinary checkpoint: `mmf.load` and `python -m mmf.sample` read it; extra["compression"] says what
was done). DIR/results.csv and results.md hold one row per method, DIR/quality_vs_bits.png the plot.
`--qat=LABEL=FILE,...` adds rows for models trained quantized (`python -m mmf.train --weights=...`),
evaluated the same way, so the two roads share one table; `--methods=none --append` adds only those
rows to an existing table (training runs that finish later).

Methods (block projections only; embedding and LM head stay float):
  rtn-ternary, rtn-ternary-channel   absmean ternary per tensor (E3) / per output channel
  rtn-binary, rtn-binary-channel     sign binary per tensor (E3b) / per output channel
  rtn-ternary-native                 the float weights in a weights='ternary' model: every BitLinear,
                                     the LM head too, E3-quantized, int8 activations (runs in the engine)
  billm, billm-no-obc                BiLLM-style, with / without the OBC error compensation
  onebit-svd, onebit-nmf             OneBit's SVID alone (rank-1 of |W| by SVD / by NMF)
  onebit                             OneBit: SVID (NMF, as the reference code) + knowledge distillation;
                                     also reports the row before distillation (onebit-nmf)
  onebit-ln                          the same with OneBit's whole layer: a parameter-free LayerNorm on
                                     every block projection's output (mmf/layers/output_norm.py), in the
                                     distillation, the evaluation and the saved model; before: onebit-nmf-ln

Every row records which model it came from (`model`: architecture and weights, `float_seed`: the float
model's training seed) and its own `seed` (calibration windows, distillation batches, QAT training).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time

import numpy as np

METHODS = ("rtn-ternary", "rtn-ternary-channel", "rtn-binary", "rtn-binary-channel", "rtn-ternary-native",
           "billm", "billm-no-obc", "onebit-svd", "onebit-nmf", "onebit", "onebit-ln")
SEEDED = ("billm", "billm-no-obc", "onebit", "onebit-ln")  # use calibration or training data: one row per seed
FLOAT_BITS = 32                                           # mmf stores float32 weights
COLUMNS = ("model", "float_seed", "method", "seed", "bits_per_weight", "val_loss", "bits_per_char", "bits_per_char_int8_act",
           "seconds", "total_seconds", "extra_train_tokens", "note")


@dataclasses.dataclass
class Options:
    calib_sequences: int = 256       # BiLLM calibration: random training windows of block_size tokens
    block_size: int = 128            # tokens per calibration / evaluation / distillation window
    eval_windows: int = 0            # validation windows (0 = all of them)
    billm_block: int = 128           # BiLLM/GPTQ column block
    billm_max_salient: int = 32      # salient-column counts searched per block
    kd_steps: int = 100              # OneBit distillation steps (batch_size x block_size tokens each)
    kd_lr: float = 1e-3
    batch_size: int = 16


SMOKE = Options(calib_sequences=8, block_size=32, eval_windows=4, billm_block=16, billm_max_salient=4,
                kd_steps=3, batch_size=4)


def parse_methods(text: str) -> list[str]:
    if text == "none":                                    # only the float row and --qat rows
        return []
    names = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or text!r}; choose from {', '.join(METHODS)}, "
                         "'all' or 'none'")
    return names


def load_float_checkpoint(path: str, backend="numpy"):
    """(checkpoint, model) of a float checkpoint; a quantized one is refused with what to do."""
    from mmf.compression.common import require_float
    from mmf.training.checkpoint import load_checkpoint
    ck = load_checkpoint(path)
    model = ck.build_model(backend=backend)
    require_float(model, f"compressing {path}")
    return ck, model


def load_data(ck, calib_data: str = ""):
    """The checkpoint's own dataset (from its train_config), or the prepared dataset `calib_data`;
    refuses data whose tokenizer is not the model's."""
    from mmf.text.corpus import load_dataset, prepare
    vocab = ck.config.vocab_size
    if calib_data:
        data = load_dataset(calib_data)
    else:
        tc = ck.train_config
        if not tc:
            raise ValueError(f"{ck.path} has no train_config to find its data; pass --calib_data=NAME "
                             "(a dataset prepared by data/prepare.py)")
        data = prepare(tc["corpus"], tc["tokenizer"], tc["vocab_size"], out_dir=tc["data_dir"],
                       seed=tc["data_seed"], story_bytes=tc["story_bytes"], val_fraction=tc["val_fraction"],
                       ts_path=tc.get("ts_path") or None, progress=False)
    if data.tokenizer.vocab_size != vocab:
        raise ValueError(f"data {data.name!r} has a vocabulary of {data.tokenizer.vocab_size} tokens but the "
                         f"model in {ck.path} has {vocab}: it was tokenized for another model")
    if ck.tokenizer is not None and data.tokenizer.to_dict() != ck.tokenizer:
        raise ValueError(f"data {data.name!r} was tokenized with another tokenizer than the one stored in "
                         f"{ck.path}; use the checkpoint's own training data")
    return data


# ----------------------------------------------------------------------------------------------
# one method

def run_method(method, float_model, data, opts: Options, seed=0, progress=False):
    """Compress a copy of float_model with `method`; returns [(row label, model, summary dict, seconds)].
    summary holds bits_per_weight and the method's facts (stored in the checkpoint's extra)."""
    from mmf.compression import billm, calibration, common, distill, onebit, rtn
    model = _copy(float_model)
    t0 = time.time()
    if method.startswith("rtn-") and method != "rtn-ternary-native":
        kind = "ternary" if "ternary" in method else "binary"
        results = rtn.compress_rtn(model, kind, "channel" if method.endswith("channel") else "tensor")
        common.apply(model, results)
        return [(method, model, common.summary(results), time.time() - t0)]
    if method == "rtn-ternary-native":
        native = rtn.as_native_ternary(model)
        names = common.compressible_weights(model)
        results = {n: rtn.rtn_ternary(model.params[n], "tensor") for n in names}
        return [(method, native, {**common.summary(results), "lm_head": "ternary", "activations": "int8"},
                 time.time() - t0)]
    if method in ("billm", "billm-no-obc"):
        batches = calibration.calibration_batches(data.train, model.config.vocab_size, opts.calib_sequences,
                                                  opts.block_size, seed=seed, batch_size=opts.batch_size)
        results = billm.compress_billm(model, batches, opts.billm_block, opts.billm_max_salient,
                                       compensate=method == "billm", progress=progress)
        s = common.summary(results)
        s["salient_columns"] = int(sum(c.info["salient_columns"] for c in results.values()))
        s["calibration_tokens"] = opts.calib_sequences * opts.block_size
        return [(method, model, s, time.time() - t0)]
    if method in ("onebit-svd", "onebit-nmf"):
        results = onebit.compress_onebit(model, method.split("-")[1])
        common.apply(model, results)
        return [(method, model, common.summary(results), time.time() - t0)]
    if method in ("onebit", "onebit-ln"):
        results = onebit.compress_onebit(model, "nmf")
        suffix = "-ln" if method == "onebit-ln" else ""
        if suffix:                              # OneBit's whole layer: the output norm on every projection
            model = _copy(model, projection_output_norm=True)
        before = _copy(common.apply(model, results))
        summary = common.summary(results)
        summary["output_norm"] = "layernorm, no parameters (0 bits)" if suffix else "none"
        rows = [("onebit-nmf" + suffix, before, dict(summary), time.time() - t0)]
        svid = {n: (c.info["a"], c.info["b"], common.sign(float_model.params[n].astype(np.float64)))
                for n, c in results.items()}
        cfg = distill.DistillConfig(steps=opts.kd_steps, batch_size=opts.batch_size,
                                    block_size=opts.block_size, lr=opts.kd_lr, seed=seed)
        student = distill.OneBitStudent(model, svid)
        history = distill.distill(float_model, student, data.train, cfg, progress=progress)
        s = dict(summary)                                 # same storage: signs + the two scale vectors
        s.update(kd_steps=cfg.steps, kd_loss_first=history["loss"][0], kd_loss_last=history["loss"][-1],
                 extra_train_tokens=cfg.steps * cfg.batch_size * cfg.block_size)
        rows.append((method, model, s, time.time() - t0))
        return rows
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _copy(model, **config_changes):
    """A new model with model's parameters (copied); config_changes e.g. projection_output_norm=True."""
    from mmf.models.registry import build_model
    out = build_model(dataclasses.replace(model.config, **config_changes), dtype=model.dtype)
    for k, v in model.params.items():
        out.params[k] = v.copy()
    return out


def save_compressed(path, model, ck, summary: dict):
    from mmf.models.registry import config_to_dict
    from mmf.training.checkpoint import save_checkpoint
    save_checkpoint(path, params=model.params, model_config=config_to_dict(model.config),
                    train_config=ck.train_config, tokenizer=ck.tokenizer, step=ck.step,
                    extra={"compression": summary, "compressed_from": os.path.abspath(ck.path)})


# ----------------------------------------------------------------------------------------------
# rows, table, plot

def train_seconds(ck) -> float:
    h = ck.extra.get("history") or {}
    return float(h["val_seconds"][-1]) if h.get("val_seconds") else float("nan")


def model_label(model) -> str:
    """The table's `model` column: the architecture ('mmfree', 'transformer')."""
    return type(model.config).arch


def evaluate_row(label, model, data, opts, seed, seconds, total_seconds, extra_tokens, bpw, note,
                 arch="", float_seed=""):
    from mmf.compression.evaluation import validation_loss
    windows = opts.eval_windows or None
    loss = validation_loss(model, data.val, opts.block_size, windows, opts.batch_size)
    row = {"model": arch or model_label(model), "float_seed": float_seed, "method": label, "seed": seed, "bits_per_weight": bpw, "val_loss": loss,
           "bits_per_char": data.bits_per_char(loss), "bits_per_char_int8_act": "",
           "seconds": seconds, "total_seconds": total_seconds, "extra_train_tokens": extra_tokens,
           "note": note}
    if model.config.weights == "float":
        row["bits_per_char_int8_act"] = data.bits_per_char(
            validation_loss(model, data.val, opts.block_size, windows, opts.batch_size, activations="int8"))
    return row


def qat_bits(model) -> float:
    """Bits per block-projection weight of a model trained quantized: codes + one scale per tensor."""
    from mmf.compression.common import SCALE_BITS, TERNARY_BITS, compressible_weights
    names = compressible_weights(model)
    n = sum(model.params[k].size for k in names)
    if model.config.weights == "float":
        return float(FLOAT_BITS)
    per_code = TERNARY_BITS if model.config.weights == "ternary" else 1.0
    return (n * per_code + len(names) * SCALE_BITS) / n


def read_table(path) -> list[dict]:
    """The rows of a results.csv (numbers back as floats), or [] when there is none."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("bits_per_weight", "val_loss", "bits_per_char", "bits_per_char_int8_act", "seconds",
                  "total_seconds"):
            r[k] = float(r[k]) if r[k] != "" else ""
    return rows


def write_table(rows, out_dir):
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown_table(rows))


def group_rows(rows) -> list[list[dict]]:
    """Rows of the same (model, method), in order of first appearance: one method's runs (float seeds and
    seeds), which the markdown table and the plot show as one line with their mean."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    return list(groups.values())


def _mean(values):
    return sum(values) / len(values)


def markdown_table(rows) -> str:
    """One line per (model, method): runs as `float seed·seed` ('–' where none applies), the mean over
    the runs and, with more than one run, every run's bits/char in the order of the runs column."""
    head = ("| model | method | runs (float seed·seed) | bits/weight | val bits/char: mean (each run) | "
            "bits/char, int8 act. | seconds | incl. float training | extra training tokens |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for g in group_rows(rows):
        runs = ", ".join(f"{r['float_seed'] if r['float_seed'] != '' else '–'}·"
                         f"{r['seed'] if r['seed'] != '' else '–'}" for r in g)
        bpc = f"{_mean([r['bits_per_char'] for r in g]):.3f}"
        if len(g) > 1:
            bpc += " (" + " / ".join(f"{r['bits_per_char']:.3f}" for r in g) + ")"
        int8 = [r["bits_per_char_int8_act"] for r in g]
        int8 = "=" if "" in int8 else f"{_mean(int8):.3f}"
        lines.append(f"| {g[0]['model']} | {g[0]['method']} | {runs} | {_mean([r['bits_per_weight'] for r in g]):.2f} "
                     f"| {bpc} | {int8} | {_mean([r['seconds'] for r in g]):.0f} | "
                     f"{_mean([r['total_seconds'] for r in g]):.0f} | {g[0]['extra_train_tokens']} |\n")
    return head + "".join(lines)


def plot(rows, path):
    """Bits/char against bits/weight, one panel per model, one point per method at the mean of its runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = group_rows(rows)
    models = list(dict.fromkeys(g[0]["model"] for g in groups))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.5), squeeze=False)
    for ax, name in zip(axes[0], models):
        for g in (g for g in groups if g[0]["model"] == name):
            qat = g[0]["method"].startswith("qat")
            x, y = _mean([r["bits_per_weight"] for r in g]), _mean([r["bits_per_char"] for r in g])
            ax.scatter(x, y, marker="s" if qat else "o", color="tab:red" if qat else "tab:blue")
            ax.annotate(f"{g[0]['method']} ({_mean([r['total_seconds'] for r in g]):.0f} s)", (x, y),
                        fontsize=6, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("bits per block weight (codes + scales + masks; log scale)")
    axes[0][0].set_ylabel("validation bits/char, mean of the runs (lower is better)")
    fig.suptitle("quality vs size; label: compute seconds incl. the float model's training; "
                 "circles: compress after training, squares: trained quantized (QAT)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# command line

def build_parser():
    p = argparse.ArgumentParser(prog="python -m mmf.compress", description=__doc__.splitlines()[0],
                                epilog="methods: " + ", ".join(METHODS))
    p.add_argument("--checkpoint", required=True, help="a float model's checkpoint (weights='float')")
    p.add_argument("--methods", default="rtn-ternary,rtn-binary,billm,onebit", help="comma-separated, or 'all'")
    p.add_argument("--out_dir", "--out-dir", required=True)
    p.add_argument("--seeds", default="0", help="seeds for the methods that draw data (billm, onebit), e.g. 0,1")
    p.add_argument("--qat", default="", help="LABEL=FILE,... checkpoints trained quantized, evaluated alongside")
    p.add_argument("--calib_data", "--calib-data", default="", help="a prepared dataset name (default: the "
                   "checkpoint's own training data)")
    p.add_argument("--kd_steps", "--kd-steps", type=int, default=None)
    p.add_argument("--calib_sequences", "--calib-sequences", type=int, default=None)
    p.add_argument("--eval_windows", "--eval-windows", type=int, default=None)
    p.add_argument("--append", action="store_true", help="add the new rows to DIR/results.csv instead of "
                   "starting it (e.g. QAT rows once those runs finish); the float row is kept once")
    p.add_argument("--smoke", action="store_true", help="tiny settings: seconds (CI)")
    p.add_argument("--progress", action="store_true", help="tqdm bars on the long steps")
    return p


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    # every check before any work: mistakes raise, and mmf.cli turns them into one line and exit 2
    methods = parse_methods(args.methods)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    qat = [item.split("=", 1) for item in args.qat.split(",") if item.strip()]
    if any(len(q) != 2 for q in qat):
        raise ValueError(f"--qat must be LABEL=FILE,..., got {args.qat!r}")
    opts = dataclasses.replace(SMOKE if args.smoke else Options(), **{
        k: v for k, v in (("kd_steps", args.kd_steps), ("calib_sequences", args.calib_sequences),
                          ("eval_windows", args.eval_windows)) if v is not None})
    ck, float_model = load_float_checkpoint(args.checkpoint)
    data = load_data(ck, args.calib_data)
    qat_models = []
    from mmf.training.checkpoint import load_checkpoint
    for label, path in qat:
        qck = load_checkpoint(path)
        qat_models.append((label, qck, qck.build_model()))
        if qck.config.vocab_size != ck.config.vocab_size:
            raise ValueError(f"--qat {label}: {path} has vocabulary {qck.config.vocab_size}, the float "
                             f"model {ck.config.vocab_size}: not the same data")

    os.makedirs(args.out_dir, exist_ok=True)
    float_seconds = train_seconds(ck)
    arch, float_seed = model_label(float_model), (ck.train_config or {}).get("seed", "")
    rows = read_table(os.path.join(args.out_dir, "results.csv")) if args.append else []
    if not any(r["method"] == "float" and r["model"] == arch and str(r["float_seed"]) == str(float_seed)
               for r in rows):                              # this float model's own row, once
        rows.append(evaluate_row("float", float_model, data, opts, "", 0.0, float_seconds, 0,
                                 float(FLOAT_BITS), "the trained float model", arch, float_seed))
    for method in methods:
        for seed in (seeds if method in SEEDED else [""]):
            for label, model, summary, secs in run_method(method, float_model, data, opts, seed or 0,
                                                          args.progress):
                row_seed = seed if label in SEEDED else ""      # onebit's row before distillation: no seed
                if row_seed == "" and any(r["method"] == label and r["model"] == arch
                                          and str(r["float_seed"]) == str(float_seed) for r in rows):
                    continue                                    # deterministic, already in the table
                name = label + (f"-s{row_seed}" if row_seed != "" else "")
                save_compressed(os.path.join(args.out_dir, name + ".ckpt"), model, ck,
                                {"method": label, "seed": row_seed, **summary})
                rows.append(evaluate_row(label, model, data, opts, row_seed, secs, float_seconds + secs,
                                         summary.get("extra_train_tokens", 0), summary["bits_per_weight"],
                                         "LM head ternary, int8 act." if label == "rtn-ternary-native" else "",
                                         arch, float_seed))
                print(f"{name}: {rows[-1]['bits_per_weight']:.3f} bits/weight, "
                      f"{rows[-1]['bits_per_char']:.4f} bits/char ({secs:.1f} s)", flush=True)
    for label, qck, model in qat_models:
        secs = train_seconds(qck)
        init = (qck.train_config or {}).get("init_from")
        tokens = qck.step * qck.train_config["batch_size"] * qck.train_config["block_size"] if init else 0
        init_seed = (load_checkpoint(init).train_config or {}).get("seed", "") if init else ""
        init_seconds = train_seconds(load_checkpoint(init)) if init else 0.0
        rows.append(evaluate_row(label, model, data, opts, qck.train_config.get("seed", ""), secs,
                                 secs + init_seconds, tokens, qat_bits(model),
                                 f"trained {qck.config.weights}; LM head {qck.config.weights}, int8 act.",
                                 model_label(model), init_seed))
        print(f"{label}: {rows[-1]['bits_per_char']:.4f} bits/char", flush=True)
    write_table(rows, args.out_dir)
    plot(rows, os.path.join(args.out_dir, "quality_vs_bits.png"))
    print(markdown_table(rows))
    return 0


def main(argv=None) -> int:
    """Exit 0 done, 2 a usage error (unknown method, a quantized checkpoint, data of another vocabulary),
    1 a failed run; one line on stderr, `--debug` for the traceback (mmf/cli.py)."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.compress")


if __name__ == "__main__":
    sys.exit(main())
