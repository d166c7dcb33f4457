"""The notebooks' sources: each .ipynb is exactly what its Jupytext `.py` defines (no outputs, fixed ids)."""
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")


def load_sync():
    spec = importlib.util.spec_from_file_location("notebook_sync", os.path.join(NOTEBOOKS, "sync.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = load_sync()


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def run_sync(folder, *args):
    """notebooks/sync.py's main on `folder`, in this process (one jupytext import for all the tests)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = SYNC.main(list(args), folder=str(folder))
    return Result(code, err.getvalue())


def test_the_command_line_exits_non_zero_naming_the_notebook(copy_of_notebooks):
    path = os.path.join(copy_of_notebooks, "02_mlgru_and_glu.py")
    with open(path, "a") as f:
        f.write("\n# %%\nprint('new')\n")
    result = subprocess.run([sys.executable, os.path.join(copy_of_notebooks, "sync.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "02_mlgru_and_glu.ipynb" in result.stderr


@pytest.fixture()
def copy_of_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return str(folder)


def test_committed_notebooks_agree_with_their_sources():
    result = run_sync(NOTEBOOKS, "--check")
    assert result.returncode == 0, result.stderr


def test_rebuild_is_byte_identical(copy_of_notebooks):
    before = {n: open(os.path.join(copy_of_notebooks, n), "rb").read()
              for n in os.listdir(copy_of_notebooks) if n.endswith(".ipynb")}
    assert before, "no notebooks found"
    assert run_sync(copy_of_notebooks).returncode == 0
    after = {n: open(os.path.join(copy_of_notebooks, n), "rb").read() for n in before}
    assert after == before


def test_check_names_a_notebook_with_outputs(copy_of_notebooks):
    name = "03_train_a_tiny_lm.ipynb"
    path = os.path.join(copy_of_notebooks, name)
    nb = json.load(open(path))
    code_cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code_cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    code_cell["execution_count"] = 1
    json.dump(nb, open(path, "w"), indent=1)
    result = run_sync(copy_of_notebooks, "--check")
    assert result.returncode == 1
    assert name in result.stderr and "outputs" in result.stderr


def test_check_names_a_notebook_whose_source_changed(copy_of_notebooks):
    source = os.path.join(copy_of_notebooks, "01_ternary_quantization_and_bitlinear.py")
    with open(source, "a") as f:
        f.write("\n# %%\nprint('a new cell')\n")
    result = run_sync(copy_of_notebooks, "--check")
    assert result.returncode == 1
    assert "01_ternary_quantization_and_bitlinear.ipynb" in result.stderr
    assert "02_" not in result.stderr          # only the changed notebook is named
    # and a rebuild brings it back in line
    assert run_sync(copy_of_notebooks).returncode == 0
    assert run_sync(copy_of_notebooks, "--check").returncode == 0


def test_check_refuses_a_notebook_without_source(copy_of_notebooks):
    shutil.copy(os.path.join(copy_of_notebooks, "02_mlgru_and_glu.ipynb"),
                os.path.join(copy_of_notebooks, "99_orphan.ipynb"))
    result = run_sync(copy_of_notebooks, "--check")
    assert result.returncode == 1 and "99_orphan.ipynb" in result.stderr


def test_notebook_03_shows_its_loss_curve_with_the_default_backend(tmp_path):
    """Executed as a learner would (no MPLBACKEND), the training cell must display its loss curve: a
    library call that switched matplotlib's backend would leave it without any image output."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["MMF_SMOKE"] = "1"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                             "--ExecutePreprocessor.timeout=600", "--output-dir", str(tmp_path),
                             os.path.join(NOTEBOOKS, "03_train_a_tiny_lm.ipynb")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    nb = json.load(open(tmp_path / "03_train_a_tiny_lm.ipynb"))
    training = [c for c in nb["cells"] if c["cell_type"] == "code" and "run = train(ts_cfg)" in "".join(c["source"])]
    assert len(training) == 1
    images = [o for o in training[0]["outputs"]
              if o["output_type"] == "display_data" and "image/png" in o.get("data", {})]
    assert images, "the training cell displayed no image"
