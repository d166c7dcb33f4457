"""mmf.experiments.runner: a 2-run grid interrupted in the middle of its second run and resumed (the finished
run is skipped, the interrupted one continues bit-exactly from its checkpoint), corrupt or foreign run
folders refused with their name, diverged runs recorded, and the results CSV."""
import json
import math
import os
import shutil

import pytest

import mmf.training.trainer as trainer
from mmf.experiments import runner
from mmf.experiments.runner import Run, RunFolderError, read_csv, run_grid, run_state
from mmf.training.trainer import PRESETS, NonFiniteLossError

STEPS = 8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    return {**PRESETS["smoke"], "story_bytes": 30_000, "max_steps": STEPS, "eval_interval": 4,
            "checkpoint_interval": 4, "eval_windows": 2, "data_dir": str(data), "sample_prompts": ""}


GRID = [Run("a_lr0.01", {"lr": 1e-2}, {"variant": "a"}), Run("b_lr0.003", {"lr": 3e-3, "seed": 1}, {"variant": "b"})]


class Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def resumed(base, tmp_path_factory):
    """Run GRID, kill it at step 6 of the second run (after its step-4 checkpoint), then run it again."""
    out = str(tmp_path_factory.mktemp("grid"))
    calls, real_get_batch = [0], trainer.get_batch

    def dying_get_batch(*a, **k):
        calls[0] += 1
        if calls[0] > STEPS + 6:
            raise Interrupt()
        return real_get_batch(*a, **k)

    trainer.get_batch = dying_get_batch
    try:
        with pytest.raises(Interrupt):
            run_grid(GRID, base, out, progress=False)
    finally:
        trainer.get_batch = real_get_batch
    states = {r.name: run_state(os.path.join(out, r.name), runner.run_config(r, base, out)) for r in GRID}
    rows_after_kill = read_csv(os.path.join(out, "runs.csv"))
    result_a = os.path.join(out, "a_lr0.01", "result.json")
    mtime_a = os.stat(result_a).st_mtime_ns

    trained, real_train = [], runner.train

    def recording_train(cfg):
        trained.append((os.path.basename(cfg.out_dir), cfg.resume))
        return real_train(cfg)

    runner.train = recording_train
    try:
        rows = run_grid(GRID, base, out, progress=False)
    finally:
        runner.train = real_train
    return dict(out=out, states=states, rows_after_kill=rows_after_kill, rows=rows, trained=trained,
                a_untouched=os.stat(result_a).st_mtime_ns == mtime_a)


def test_interrupted_grid_resumes_and_skips_finished_runs(resumed):
    assert resumed["states"] == {"a_lr0.01": "finished", "b_lr0.003": "interrupted"}
    assert [r["name"] for r in resumed["rows_after_kill"]] == ["a_lr0.01"]         # one row per finished run
    assert resumed["trained"] == [("b_lr0.003", os.path.join(resumed["out"], "b_lr0.003", "ckpt.ckpt"))]
    assert resumed["a_untouched"]
    result = json.load(open(os.path.join(resumed["out"], "b_lr0.003", "result.json")))
    assert result["resumed_from"] == "interrupted"
    csv_rows = read_csv(os.path.join(resumed["out"], "runs.csv"))
    assert [r["name"] for r in csv_rows] == ["a_lr0.01", "b_lr0.003"]
    row = csv_rows[1]
    assert (row["variant"], row["seed"], row["lr"], row["steps"], row["tokens"]) == ("b", 1, 3e-3, STEPS, STEPS * 4 * 32)
    assert row["params"] > row["params_nonembedding"] > 0 and row["status"] == "ok"
    assert 0 < row["bits_per_char"] < row["val_loss"] / math.log(2)              # several chars per token


def test_resumed_run_equals_an_uninterrupted_one(resumed, base, tmp_path):
    fresh = run_grid(GRID[1:], base, str(tmp_path), progress=False)[0]
    resumed_row = resumed["rows"][1]
    assert fresh["val_loss"] == resumed_row["val_loss"] and fresh["init_loss"] == resumed_row["init_loss"]


def test_a_third_run_is_a_no_op(resumed, base):
    csv_path = os.path.join(resumed["out"], "runs.csv")

    def no_training(cfg):
        raise AssertionError("a finished grid must not train again")
    real, runner.train = runner.train, no_training
    try:
        rows = run_grid(GRID, base, resumed["out"], progress=False)
    finally:
        runner.train = real
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in resumed["rows"]]


def test_the_csv_keeps_every_finished_run_while_a_grid_runs(resumed, base):
    """Re-running with a new run first: while it trains, the CSV already lists the finished ones."""
    seen = []
    real = runner.train

    def peeking_train(cfg):
        seen.append([r["name"] for r in read_csv(os.path.join(resumed["out"], "runs.csv"))])
        return real(cfg)
    runner.train = peeking_train
    try:
        run_grid([Run("c_lr0.02", {"lr": 2e-2}, {"variant": "c"})] + GRID, base, resumed["out"], progress=False)
    finally:
        runner.train = real
    assert seen == [["a_lr0.01", "b_lr0.003"]]
    assert [r["name"] for r in read_csv(os.path.join(resumed["out"], "runs.csv"))] == ["c_lr0.02", "a_lr0.01", "b_lr0.003"]


# ----------------------------------------------------------------------------------------------
# folders the grid must refuse


def copy_grid(resumed, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(resumed["out"], out)
    return out


def test_corrupt_result_json_is_refused_with_the_folder_name(resumed, base, tmp_path):
    out = copy_grid(resumed, tmp_path)
    with open(os.path.join(out, "a_lr0.01", "result.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(RunFolderError, match=r"a_lr0\.01.*result\.json.*delete the folder"):
        run_grid(GRID, base, out, progress=False)


def test_corrupt_checkpoint_of_an_interrupted_run_is_refused(resumed, base, tmp_path):
    out = copy_grid(resumed, tmp_path)
    os.remove(os.path.join(out, "b_lr0.003", "result.json"))               # interrupted again ...
    ckpt = os.path.join(out, "b_lr0.003", "ckpt.ckpt")
    with open(ckpt, "r+b") as f:                                             # ... with a truncated checkpoint
        f.truncate(os.path.getsize(ckpt) // 2)
    with pytest.raises(RunFolderError, match=r"b_lr0\.003.*checkpoint is unusable"):
        run_grid(GRID, base, out, progress=False)


def test_a_changed_configuration_never_overwrites_a_finished_run(resumed, base, tmp_path):
    out = copy_grid(resumed, tmp_path)
    before = open(os.path.join(out, "a_lr0.01", "result.json")).read()
    changed = [Run("a_lr0.01", {"lr": 2e-2}, {"variant": "a"})]
    with pytest.raises(RunFolderError, match=r"a_lr0\.01.*different configuration.*'lr': \(0\.01, 0\.02\)"):
        run_grid(changed, base, out, progress=False)
    assert open(os.path.join(out, "a_lr0.01", "result.json")).read() == before


def test_foreign_folder_and_bad_grids_are_refused(base, tmp_path):
    os.makedirs(tmp_path / "a_lr0.01")
    (tmp_path / "a_lr0.01" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"a_lr0\.01.*no run\.json"):
        run_grid(GRID[:1], base, str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="unique.*'x'"):
        run_grid([Run("x", {}), Run("x", {})], base, str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="run name"):
        Run("../escape", {})
    with pytest.raises(ValueError, match="weights must be one of"):
        run_grid([Run("y", {"weights": "int4"})], base, str(tmp_path), progress=False)
    (tmp_path / "other.csv").write_text("step,loss\n1,2\n")
    with pytest.raises(ValueError, match="other.csv: not a results CSV"):
        read_csv(str(tmp_path / "other.csv"))
    with pytest.raises(RunFolderError, match="other.csv: not a results CSV.*another out_dir"):
        run_grid(GRID[:1], base, str(tmp_path), csv_name="other.csv", progress=False)


def test_a_folder_left_by_a_writer_killed_mid_run_json_is_a_new_run(base, tmp_path):
    """kill -9 between the temporary run.json and its rename leaves `run.json.tmp-<dead pid>` alone in the
    folder: the runner removes it and starts the run; a temp file of a live writer is still refused."""
    cfg = runner.run_config(GRID[0], base, str(tmp_path))
    os.makedirs(cfg.out_dir)
    dead = 2 ** 22 + 12345                           # above Linux's default pid_max: no such process
    stale = os.path.join(cfg.out_dir, f"run.json.tmp-{dead}")
    with open(stale, "w") as f:
        f.write('{"lr": 0.0')                       # cut off mid-write
    assert run_state(cfg.out_dir, cfg) == "new"
    assert not os.path.exists(stale)
    live = os.path.join(cfg.out_dir, f"run.json.tmp-{os.getppid()}")
    with open(live, "w") as f:
        f.write("{}")
    with pytest.raises(RunFolderError, match=r"a_lr0\.01.*no run\.json"):
        run_state(cfg.out_dir, cfg)


def test_a_diverged_run_is_recorded_and_the_grid_goes_on(base, tmp_path):
    def diverging(cfg):
        raise NonFiniteLossError("non-finite loss (nan) at step 3")
    real, runner.train = runner.train, diverging
    try:
        rows = run_grid(GRID[:1], base, str(tmp_path), progress=False)
    finally:
        runner.train = real
    assert rows[0]["status"] == "diverged" and math.isnan(rows[0]["val_loss"])
    assert read_csv(str(tmp_path / "runs.csv"))[0]["status"] == "diverged"


def test_a_field_added_to_trainconfig_later_keeps_finished_runs(resumed, base, tmp_path):
    """A run.json written before TrainConfig had a field matches a grid asking for that field's default,
    and not one asking for another value."""
    out = copy_grid(resumed, tmp_path)
    spec_path = os.path.join(out, "a_lr0.01", "run.json")
    spec = json.load(open(spec_path))
    del spec["grad_clip"]                                    # as if grad_clip (default 1.0) were new
    json.dump(spec, open(spec_path, "w"))
    assert run_state(os.path.join(out, "a_lr0.01"), runner.run_config(GRID[0], base, out)) == "finished"
    other = Run("a_lr0.01", {"lr": 1e-2, "grad_clip": 0.5}, {"variant": "a"})
    with pytest.raises(RunFolderError, match=r"'grad_clip': \('<missing>', 0\.5\)"):
        run_state(os.path.join(out, "a_lr0.01"), runner.run_config(other, base, out))
