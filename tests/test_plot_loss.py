"""plot_loss writes the loss curve without touching matplotlib's global backend (a notebook's inline
plots keep working after a training run)."""
import subprocess
import sys

SCRIPT = r"""
import sys, matplotlib
matplotlib.use("svg")                      # any backend the caller chose; plot_loss must leave it alone
from mmf.training.trainer import plot_loss
summary = {"history": {"step": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "val_step": [3], "val_loss": [1.7]},
           "meta": {"val_floor_nats_per_token": 1.0}, "dataset": "unit", "num_params": 1234}
plot_loss(summary, sys.argv[1])
backend = matplotlib.get_backend()
assert backend == "svg", f"plot_loss switched the backend to {backend!r}"
assert "matplotlib.pyplot" not in sys.modules, "plot_loss imported pyplot (global figure state)"
print("ok")
"""


def run(path, patch=""):
    return subprocess.run([sys.executable, "-c", patch + SCRIPT, str(path)], capture_output=True, text=True)


def test_plot_loss_keeps_the_callers_backend_and_writes_a_png(tmp_path):
    png = tmp_path / "loss.png"
    result = run(png)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_check_catches_a_backend_switch(tmp_path):
    # negative control: a plot_loss that calls matplotlib.use("Agg") (the old bug) must fail the check
    patch = ("import matplotlib, mmf.training.trainer as tr\n"
             "_orig = tr.plot_loss\n"
             "def _bad(s, p):\n    matplotlib.use('Agg'); _orig(s, p)\n"
             "tr.plot_loss = _bad\n")
    result = run(tmp_path / "loss.png", patch)    # the script then imports the patched plot_loss by name
    assert result.returncode != 0 and "switched the backend" in result.stderr
