"""The scaling study (mmf/experiments/scaling.py): a smoke grid killed at a random point and re-run,
bad input, and the README's results recomputed from the committed CSV."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

import mmf
from mmf.experiments import scaling
from mmf.experiments.flops import training_compute
from mmf.experiments.runner import read_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--smoke", "--only=mmfree-ternary", "--no_plots", "--no_progress"]


def _snapshot(out):
    """{run folder: (bytes, mtime_ns) of its result.json} for every finished run."""
    snap = {}
    for name in sorted(os.listdir(out)):
        res = os.path.join(out, name, "result.json")
        if os.path.isfile(res):
            with open(res, "rb") as f:
                snap[name] = (f.read(), os.stat(res).st_mtime_ns)
    return snap


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A smoke grid (one architecture, 6 runs) killed with SIGKILL while a run has a checkpoint but no
    result, after at least one run finished; then re-run in-process; and an uninterrupted grid."""
    out = str(tmp_path_factory.mktemp("scaling") / "grid")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-m", "mmf.scaling", *ARGS, f"--out_dir={out}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim, deadline = None, time.time() + 120
    while victim is None and proc.poll() is None and time.time() < deadline:
        if os.path.isdir(out):
            names = [n for n in os.listdir(out) if os.path.isdir(os.path.join(out, n))]
            done = [n for n in names if os.path.exists(os.path.join(out, n, "result.json"))]
            open_ = [n for n in names if n not in done and os.path.exists(os.path.join(out, n, "ckpt.ckpt"))]
            if done and open_:
                proc.send_signal(signal.SIGKILL)
                victim = open_[0]
        time.sleep(0.005)
    proc.wait()
    if victim is None:
        pytest.fail(f"the grid ended before a run was caught between checkpoint and result "
                    f"(rc {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    before = _snapshot(out)
    assert victim not in before
    # a second kill at a random moment of the re-run (seeded: reproducible), wherever it lands
    proc = subprocess.Popen([sys.executable, "-m", "mmf.scaling", *ARGS, f"--out_dir={out}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(14).uniform(1.0, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    middle = _snapshot(out)
    assert scaling.main([*ARGS, f"--out_dir={out}"]) == 0
    clean = str(tmp_path_factory.mktemp("scaling") / "clean")
    assert scaling.main([*ARGS, f"--out_dir={clean}"]) == 0
    return dict(out=out, victim=victim, before=before, middle=middle, after=_snapshot(out),
                rows=read_csv(os.path.join(out, "runs.csv")), clean=read_csv(os.path.join(clean, "runs.csv")))


def test_finished_runs_are_untouched_and_the_interrupted_one_resumed(killed):
    after, before, middle = killed["after"], killed["before"], killed["middle"]
    for name, snap in before.items():
        assert middle[name] == snap, f"{name} was rewritten by the killed re-run"
    for name, snap in middle.items():
        assert after[name] == snap, f"{name} was rewritten by the last re-run"
    with open(os.path.join(killed["out"], killed["victim"], "result.json")) as f:
        assert json.load(f)["resumed_from"] == "interrupted"
    assert len(after) == len(killed["rows"]) == len(scaling.runs_of(["mmfree-ternary"], list(scaling.SMOKE_SIZES), True))


def test_resumed_grid_equals_an_uninterrupted_one(killed):
    """The trainer's resume is exact, so the killed-and-resumed grid gives the same losses bit for bit."""
    keep = ("name", "params", "tokens", "flops", "val_loss", "best_val_loss", "best_val_step", "train_loss")
    assert [{k: r[k] for k in keep} for r in killed["rows"]] == [{k: r[k] for k in keep} for r in killed["clean"]]


def test_csv_columns_and_flops_match_the_compute_accounting(killed):
    for r in killed["rows"]:
        for col in ("arch", "weights", "seed", "params", "params_nonembedding", "tokens", "flops", "val_loss",
                    "bits_per_char", "wall_s", "train_loss", "best_val_loss", "best_val_step"):
            assert r[col] != "", col
        D, L, _ = scaling.SMOKE_SIZES[r["size"]]
        V = (r["params"] - r["params_nonembedding"]) // (2 * D)
        cfg = mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=L,
                               intermediate_size=scaling.intermediate_size(D))
        assert r["flops"] == training_compute(cfg, r["tokens"], scaling.SMOKE_BASE["block_size"]).flops
        assert r["best_val_loss"] <= r["val_loss"]


def test_a_corrupt_run_folder_stops_with_its_name(killed, tmp_path, capsys):
    import shutil
    out = str(tmp_path / "grid")
    shutil.copytree(killed["out"], out)
    name = killed["rows"][0]["name"]
    with open(os.path.join(out, name, "result.json"), "w") as f:
        f.write("{not json")
    assert scaling.main([*ARGS, f"--out_dir={out}"]) == 1
    assert name in capsys.readouterr().err


def test_another_grid_in_the_folder_is_refused(killed, tmp_path, capsys):
    import shutil
    out = str(tmp_path / "grid")
    shutil.copytree(killed["out"], out)
    assert scaling.main(["--only=mmfree-ternary", "--sizes=d48l2", "--no_plots", f"--out_dir={out}"]) == 1
    assert "smoke" in capsys.readouterr().err
    # a runs.csv of another study (the baselines CSV layout) in a fresh folder
    other = tmp_path / "other"
    other.mkdir()
    rows = killed["rows"]
    header = [k for k in rows[0] if k not in scaling.GRID_COLUMNS]
    (other / "runs.csv").write_text(",".join(header) + "\n" + ",".join(str(rows[0][k]) for k in header) + "\n")
    assert scaling.main([*ARGS, f"--out_dir={other}"]) == 2
    assert "not a scaling-study CSV" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--only=gpt5"], "unknown architecture"),
    (["--sizes=d4096l96"], "unknown size"),
    (["--smoke", "--sizes=d48l2"], "unknown size"),
    (["--bogus"], "unknown argument"),
])
def test_bad_arguments_are_usage_errors(args, message, capsys):
    assert scaling.main([*args, "--plan"]) == 2
    assert message in capsys.readouterr().err


def test_plan_estimates_come_from_the_published_runs():
    """--plan's time of each default-grid run lies within the wall times the published grid measured
    for that architecture at that width (it divides tokens by their median rate)."""
    rows = read_csv(scaling.RESULTS_CSV)
    for p, run in zip(scaling.plan(scaling.DEFAULT_ARCHS, list(scaling.SIZES)),
                      scaling.runs_of(scaling.DEFAULT_ARCHS, list(scaling.SIZES), False)):
        D = scaling.SIZES[run.tags["size"]][0]
        same = [r["wall_s"] / r["tokens"] for r in rows if r["variant"] == run.tags["variant"] and r["hidden_size"] == D]
        assert same, p["name"]
        assert min(same) * (1 - 1e-9) <= p["est_s"] / p["tokens"] <= max(same) * (1 + 1e-9), p["name"]
    assert scaling.estimate_seconds("mmfree-ternary", "d48l2", 1000, rates={}) is None


def test_default_grid_shape():
    """>= 4 sizes spanning >= 8x in non-embedding parameters, 2 seeds at the two smallest, 3 architectures."""
    ne = [scaling.param_counts("mmfree-ternary", s)[1] for s in scaling.SIZES]
    assert len(ne) >= 4 and max(ne) / min(ne) >= 8 and ne == sorted(ne)
    runs = scaling.runs_of(scaling.DEFAULT_ARCHS, list(scaling.SIZES))
    two = [s for s in scaling.SIZES][:2]
    for r in runs:
        expect = 2 if r.tags["size"] in two else 1
        assert sum(q.tags["size"] == r.tags["size"] and q.tags["variant"] == r.tags["variant"] for q in runs) == expect
        tokens = r.overrides["max_steps"] * scaling.BASE["batch_size"] * scaling.BASE["block_size"]
        assert tokens >= 2 * scaling.param_counts(r.tags["variant"], r.tags["size"])[1]


def test_readme_results_are_recomputed_from_the_committed_csv():
    rows = scaling.check_scaling_csv(read_csv(scaling.RESULTS_CSV), scaling.RESULTS_CSV)
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    m = re.search(r"<!-- scaling-results:begin -->\n(.*?)<!-- scaling-results:end -->", readme, re.S)
    assert m, "README.md lacks the scaling-results markers"
    assert m.group(1) == scaling.results_markdown(rows)
    if any(r["grid"] == "smoke" for r in rows):
        assert "SMOKE DATA" in m.group(1)


def test_readme_energy_table_is_current():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    m = re.search(r"<!-- scaling-energy:begin -->\n(.*?)<!-- scaling-energy:end -->", readme, re.S)
    assert m and m.group(1) == scaling.energy_markdown()
