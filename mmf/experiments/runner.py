"""A resumable grid of training runs: the machinery under every experiment (baselines, scaling, ...).

    runs = [Run("mmfree-ternary_lr3e-3_s0", {"arch": "mmfree", "lr": 3e-3, ...}, {"variant": "..."}), ...]
    rows = run_grid(runs, base=PRESETS["shakespeare"], out_dir="runs/baselines")

Each run is a named `TrainConfig` (a base dict plus the run's overrides) trained in its own folder

    out_dir/NAME/run.json      the run's TrainConfig, written before it starts (its identity)
    out_dir/NAME/ckpt.ckpt     the trainer's resumable checkpoint (every checkpoint_interval steps)
    out_dir/NAME/log.json ...  the trainer's logs and loss curve
    out_dir/NAME/result.json   written last, atomically: the run's CSV row and its curves
    out_dir/runs.csv           one row per finished run of the grid, rewritten after every run

Re-running the same grid skips every run with a result.json, resumes every run with a checkpoint but no
result (bit-exactly: the trainer's resume is exact), and starts the others. A run folder whose run.json
holds a different configuration, or whose files are unreadable, stops the grid with a RunFolderError
naming the folder: finished runs are never overwritten. A run whose loss goes non-finite is recorded
as "diverged" (a learning-rate sweep expects some), and the grid goes on.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from mmf.atomic import remove_stale_temp_files, write_text_atomic
from mmf.training.checkpoint import CheckpointError, load_checkpoint
from mmf.training.trainer import NonFiniteLossError, TrainConfig, train

# fields that say where and how a run executes, not what it computes: they may differ between re-runs
LOCAL_FIELDS = ("out_dir", "resume", "progress", "stop_at", "data_dir", "ts_path", "sample_prompts",
                "allow_changed_optim", "rebuild_data")

# the CSV's columns after `name` and the grid's tag columns (issue 14 reads the same ones)
RESULT_COLUMNS = ("arch", "weights", "seed", "lr", "hidden_size", "num_layers", "params",
                  "params_nonembedding", "tokens", "steps", "init_loss", "val_loss", "bits_per_char",
                  "bits_per_byte", "wall_s", "status")


class RunFolderError(ValueError):
    """A run folder the grid cannot use (the message names the folder and what to do)."""


@dataclass
class Run:
    name: str                                   # folder name under out_dir; letters, digits, - _ . = only
    overrides: dict                             # TrainConfig fields that differ from the grid's base
    tags: dict = field(default_factory=dict)    # extra CSV columns (e.g. variant, phase); same keys in a grid

    def __post_init__(self):
        if not self.name or any(not (c.isalnum() or c in "-_.=") for c in self.name) or self.name[0] == ".":
            raise ValueError(f"run name {self.name!r}: use letters, digits and - _ . = only")


# ----------------------------------------------------------------------------------------------
# parameter counts


def count_params(model) -> tuple[int, int]:
    """(all parameters, non-embedding parameters). Non-embedding leaves out the (V, D) token embedding
    and LM-head matrices, which every architecture here has alike, so equal non-embedding counts mean
    equal bodies (the convention of scaling-law papers, e.g. Kaplan et al. 2020)."""
    V = model.config.vocab_size
    total = sum(p.size for p in model.params.values())
    vocab_tables = sum(p.size for p in model.params.values() if p.ndim == 2 and p.shape[0] == V)
    return int(total), int(total - vocab_tables)


# ----------------------------------------------------------------------------------------------
# small file helpers


def _read_json(path: str, folder: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"run folder {folder!r}: cannot read {os.path.basename(path)} ({e}); "
                             "delete the folder to redo this run") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"run folder {folder!r}: {os.path.basename(path)} is not a JSON object; "
                             "delete the folder to redo this run")
    return value


def _identity(cfg: TrainConfig) -> dict:
    """What a run computes: its TrainConfig without the fields in LOCAL_FIELDS."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in LOCAL_FIELDS}


def run_config(run: Run, base: dict, out_dir: str, progress: bool = False) -> TrainConfig:
    """The TrainConfig of one run of the grid: base, then the run's overrides, then its folder."""
    merged = {**base, **run.overrides, "out_dir": os.path.join(out_dir, run.name), "progress": progress,
              "resume": "", "stop_at": 0}
    merged.setdefault("sample_prompts", "")
    return TrainConfig(**merged)


# ----------------------------------------------------------------------------------------------
# one run


def run_state(folder: str, cfg: TrainConfig) -> str:
    """'finished', 'interrupted' (a checkpoint, no result), 'started' (run.json only) or 'new'.
    Raises RunFolderError for a folder that belongs to another configuration or is corrupt."""
    if not os.path.isdir(folder):
        return "new"
    spec_path = os.path.join(folder, "run.json")
    remove_stale_temp_files(folder)              # a writer killed mid-write (e.g. of run.json) left these
    if not os.path.exists(spec_path):
        if os.listdir(folder):
            raise RunFolderError(f"run folder {folder!r} has files but no run.json, so it was not made by "
                                 "this runner; move it away or choose another out_dir")
        return "new"
    stored, wanted = _read_json(spec_path, folder), _identity(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for k in set(wanted) - set(stored):          # a field TrainConfig gained after the run was made: the
        if wanted[k] == defaults.get(k):         # run is the same if this grid asks for its default
            stored[k] = wanted[k]
    if stored != wanted:
        diff = {k: (stored.get(k, "<missing>"), wanted.get(k, "<missing>"))
                for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)}
        raise RunFolderError(f"run folder {folder!r} holds a different configuration (stored vs wanted: "
                             f"{diff}); finished runs are never overwritten: delete the folder or use "
                             "another out_dir")
    if os.path.exists(os.path.join(folder, "result.json")):
        result = _read_json(os.path.join(folder, "result.json"), folder)
        if "row" not in result:
            raise RunFolderError(f"run folder {folder!r}: result.json has no 'row'; delete the folder "
                                 "to redo this run")
        return "finished"
    ckpt = os.path.join(folder, "ckpt.ckpt")
    if os.path.exists(ckpt):
        try:
            load_checkpoint(ckpt)
        except CheckpointError as e:
            raise RunFolderError(f"run folder {folder!r}: its checkpoint is unusable ({e}); delete the "
                                 "folder to redo this run") from None
        return "interrupted"
    return "started"


def _row(run: Run, cfg: TrainConfig, summary: dict | None, status: str, wall_s: float) -> dict:
    row = {"name": run.name, **run.tags, "arch": cfg.arch, "weights": cfg.weights, "seed": cfg.seed,
           "lr": cfg.lr, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers}
    if summary is None:                                  # diverged: no summary from the trainer
        row.update(params="", params_nonembedding="", tokens="", steps="", init_loss="",
                   val_loss=math.nan, bits_per_char=math.nan, bits_per_byte=math.nan)
    else:
        h = summary["history"]
        params, params_ne = count_params(summary["model"])
        row.update(params=params, params_nonembedding=params_ne,
                   tokens=summary["steps"] * cfg.batch_size * cfg.block_size, steps=summary["steps"],
                   init_loss=h["train_loss"][0], val_loss=summary["val_loss"],
                   bits_per_char=summary["val_bits_per_char"], bits_per_byte=summary["val_bits_per_byte"])
    row.update(wall_s=round(wall_s, 1), status=status)
    return row


def run_one(run: Run, cfg: TrainConfig) -> dict:
    """Train (or resume) one run in cfg.out_dir and write its result.json; returns the result."""
    folder = cfg.out_dir
    state = run_state(folder, cfg)
    if state == "finished":
        return _read_json(os.path.join(folder, "result.json"), folder)
    os.makedirs(folder, exist_ok=True)
    if state == "new":
        write_text_atomic(os.path.join(folder, "run.json"), json.dumps(_identity(cfg), indent=1))
    if state == "interrupted":
        cfg = dataclasses.replace(cfg, resume=os.path.join(folder, "ckpt.ckpt"))
    try:
        summary = train(cfg)
    except NonFiniteLossError as e:
        result = {"row": _row(run, cfg, None, "diverged", 0.0), "error": str(e), "curves": {}}
    else:
        h = summary["history"]
        wall = h["val_seconds"][-1] if h["val_seconds"] else summary["train_seconds"]
        result = {"row": _row(run, cfg, summary, "ok", wall), "resumed_from": state,
                  "curves": {"step": h["step"], "train_loss": h["train_loss"], "val_step": h["val_step"],
                             "val_loss": h["val_loss"]}}
    write_text_atomic(os.path.join(folder, "result.json"), json.dumps(result))
    return result


# ----------------------------------------------------------------------------------------------
# the grid


def csv_text(rows: list[dict]) -> str:
    """The grid's CSV: name, the tag columns (in first-seen order), then RESULT_COLUMNS."""
    tags = []
    for r in rows:
        tags += [k for k in r if k not in ("name", *RESULT_COLUMNS) and k not in tags]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=["name", *tags, *RESULT_COLUMNS], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    return out.getvalue()


def read_csv(path: str) -> list[dict]:
    """Rows of a grid CSV with numbers as numbers; a file that is not one names itself in the error."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the results CSV ({e})") from None
    if not rows or any(c not in rows[0] for c in ("name", *RESULT_COLUMNS)):
        raise ValueError(f"{path}: not a results CSV of mmf.experiments.runner (needs the columns name, "
                         f"{', '.join(RESULT_COLUMNS)})")

    def number(s):
        for kind in (int, float):
            try:
                return kind(s)
            except ValueError:
                pass
        return s
    return [{k: number(v) for k, v in r.items()} for r in rows]


def run_grid(runs: list[Run], base: dict, out_dir: str, csv_name: str = "runs.csv",
             progress: bool = True, run_progress: bool = False, extra=None) -> list[dict]:
    """Run every run of the grid in order (skipping finished ones, resuming interrupted ones) and keep
    out_dir/csv_name equal to the rows of the finished runs. Returns those rows in grid order.

    base         -- TrainConfig fields shared by the grid (e.g. a preset); each run overrides some
    progress     -- a tqdm bar over the grid; run_progress -- each run's own tqdm bar
    extra        -- optional extra(run, cfg, result) -> dict of more CSV columns computed from a finished
                    run's result (e.g. the scaling study's FLOPs); placed after the tag columns
    """
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique in a grid; repeated: "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    configs = [run_config(r, base, out_dir, run_progress) for r in runs]   # validates every run first
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temp_files(out_dir)                                       # e.g. a runs.csv cut off by kill -9
    csv_path = os.path.join(out_dir, csv_name)
    if os.path.exists(csv_path):                                           # never overwrite a foreign file
        try:
            read_csv(csv_path)
        except ValueError as e:
            raise RunFolderError(f"{e}; move it away or choose another out_dir") from None
    finished = {}                                                          # name -> row, kept in grid order
    for run, cfg in zip(runs, configs):                                    # refuse bad folders up front
        if run_state(cfg.out_dir, cfg) == "finished":
            result = _read_json(os.path.join(cfg.out_dir, "result.json"), cfg.out_dir)
            finished[run.name] = {**result["row"], **(extra(run, cfg, result) if extra else {})}
    bar = tqdm(list(zip(runs, configs)), desc="grid", unit="run", disable=not progress, dynamic_ncols=True)
    for run, cfg in bar:
        bar.set_postfix_str(run.name)
        result = run_one(run, cfg)
        finished[run.name] = {**result["row"], **(extra(run, cfg, result) if extra else {})}
        write_text_atomic(csv_path, csv_text([finished[r.name] for r in runs if r.name in finished]))
    bar.close()
    return [finished[r.name] for r in runs]


def load_results(runs: list[Run], base: dict, out_dir: str) -> list[dict]:
    """The result.json of every finished run of the grid (unfinished ones are left out)."""
    out = []
    for run in runs:
        cfg = run_config(run, base, out_dir)
        if run_state(cfg.out_dir, cfg) == "finished":
            out.append(_read_json(os.path.join(cfg.out_dir, "result.json"), cfg.out_dir))
    return out
