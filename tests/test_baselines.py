"""mmf.experiments.baselines: the summary (best rate, seed spread, gap, ternary-QK verdict) on a hand-made
CSV, the command lines' bad input, and the README table regenerated from the committed CSV."""
import math
import os
import re

import pytest

from mmf.experiments import baselines
from mmf.experiments.runner import csv_text, read_csv
from mmf.training import trainer


def row(variant, lr, seed, loss, init=7.6):
    bpc = loss / math.log(2) / 4.0                      # 4 characters per token in this made-up data
    return {"name": baselines.run_name(variant, lr, seed), "variant": variant, "arch": "x", "weights": "ternary",
            "seed": seed, "lr": lr, "hidden_size": 8, "num_layers": 1, "params": 100, "params_nonembedding": 50,
            "tokens": 1000, "steps": 10, "init_loss": init, "val_loss": loss, "bits_per_char": bpc,
            "bits_per_byte": bpc, "wall_s": 1.0, "status": "ok"}


def synthetic_rows():
    return [row("mmfree-ternary", 1e-3, 0, 5.0), row("mmfree-ternary", 3e-3, 0, 4.6), row("mmfree-ternary", 1e-2, 0, math.nan),
            row("mmfree-ternary", 3e-3, 1, 4.8),
            row("transformer-float", 1e-3, 0, 4.4), row("transformer-float", 3e-3, 0, 4.5),
            row("transformer-float", 1e-3, 1, 4.2),
            row("ternary-qk", 1e-3, 0, 7.0), row("ternary-qk", 3e-3, 0, 7.2), row("ternary-qk", 1e-3, 1, 6.8)]


def test_summary_by_hand(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(csv_text(synthetic_rows()))
    rows = read_csv(str(path))                                    # through the CSV, as the README test does
    s = baselines.summarize(rows)
    assert baselines.best_lrs(rows) == {"mmfree-ternary": 3e-3, "transformer-float": 1e-3, "ternary-qk": 1e-3}
    # best at an edge of its sweep -> one more rate beyond it; interior (mmfree-ternary) -> none
    assert baselines.edge_extensions(rows) == {"transformer-float": 3e-4, "ternary-qk": 3e-4}
    t = s["variants"]["mmfree-ternary"]
    k = 1 / math.log(2) / 4.0
    assert t["seeds"] == [0, 1] and t["val_loss"] == [4.6, 4.8]
    assert t["bpc_mean"] == pytest.approx(4.7 * k) and t["bpc_halfrange"] == pytest.approx(0.1 * k)
    assert s["gap"]["bpc"] == pytest.approx((4.7 - 4.3) * k) and s["gap"]["spread"] == pytest.approx(0.2 * k)
    # ternary QK: 6.9 mean vs initial 7.6 (0.7 away) and float 4.3 (2.6 away): not converged
    q = s["ternary_qk"]
    assert q["converged"] is False and q["fraction_of_float_progress"] == pytest.approx(0.7 / 3.3)
    md = baselines.results_markdown(rows)
    assert "did not converge" in md and "larger than the seed spread" in md
    assert "| 0.003 (0.001, 0.003*, 0.01) |" in md                  # the swept rates, the pick starred


def test_command_lines_refuse_bad_input(capsys):
    assert trainer.main(["--arch=lstm"]) == 2
    assert "unknown architecture 'lstm'" in capsys.readouterr().err
    assert trainer.main(["--weights=int4"]) == 2
    assert "weights must be one of 'ternary', 'binary', 'float', got 'int4'" in capsys.readouterr().err
    assert trainer.main(["--preset=smoke", "--lr_sweep=1e-3"]) == 2
    assert "need at least two distinct learning rates" in capsys.readouterr().err
    assert trainer.main(["--preset=smoke", "--lr_sweep=fast,slow"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert baselines.main(["--only=mmfree-ternary,lstm"]) == 2
    assert "unknown variant(s) ['lstm']" in capsys.readouterr().err
    assert baselines.main(["--bogus=1"]) == 2
    assert "unknown argument '--bogus=1'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# the committed results


def test_readme_baselines_table_is_generated_from_the_committed_csv():
    rows = read_csv(baselines.RESULTS_CSV)
    readme = open(os.path.join(baselines.REPO_ROOT, "README.md")).read()
    block = re.search(r"<!-- baselines-table:begin -->\n(.*?)<!-- baselines-table:end -->", readme, re.S)
    assert block, "README.md lacks the <!-- baselines-table:begin/end --> block"
    assert block.group(1) == baselines.results_markdown(rows), \
        "README's baselines table is stale: paste `python -m mmf.experiments.baselines --table`"


def test_presets_record_the_swept_learning_rates():
    best = baselines.best_lrs(read_csv(baselines.RESULTS_CSV))
    assert best == baselines.CHOSEN_LRS
    presets = trainer.all_presets()
    for variant, lr in best.items():
        preset = presets[f"baseline-{variant}"]
        assert preset["lr"] == lr, f"preset baseline-{variant} has lr {preset['lr']}, the sweep picked {lr}"
        for k, v in baselines.VARIANTS[variant][1].items():
            assert preset[k] == v


def test_a_corrupt_run_folder_stops_the_study_with_its_name(tmp_path, capsys):
    """The study's command line on an out_dir whose run folder is unreadable: exit 2 (an input that is not
    what it claims to be, as for a corrupt checkpoint), the folder named."""
    folder = tmp_path / baselines.run_name("mmfree-ternary", baselines.SMOKE_LRS[0], 0)
    folder.mkdir()
    (folder / "run.json").write_text("{truncated")
    assert baselines.main(["--smoke", "--only=mmfree-ternary", f"--out_dir={tmp_path}", "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "run.json" in err
