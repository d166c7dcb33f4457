"""Issue 11, item 10: the fuzzing suite (tests/fuzz_targets.py, hypothesis, derandomized). Each target
runs in its own interpreter so that a segfault is a failed test; the negative control disables the
packed-matrix validation and shows the same fuzzing then finds a failure."""
import os
import subprocess
import sys

import pytest

from isolated import REPO

TARGETS = ["packed_products", "engine_entries", "generate_options", "train_config_values",
           "assembler_programs", "checkpoint_bytes"]


def _run(code_or_target, broken=None):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.path.join(REPO, "tests")}
    if broken is None:
        cmd = [sys.executable, os.path.join(REPO, "tests", "fuzz_targets.py"), code_or_target]
    else:
        cmd = [sys.executable, "-c", f"import fuzz_targets\n{broken}\nfuzz_targets.{code_or_target}()"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(target):
    proc = _run(target)
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"{target}: ok" in proc.stdout


def test_negative_control_a_broken_check_is_found():
    """Without PackedTernary's validation, hand-made planes reach the unchecked kernels: the fuzzer
    must report a failure (a wrong product, or the interpreter dying: rc < 0 or 134)."""
    proc = _run("packed_products", broken="import kernels_numba.packing as pk\npk._validate = lambda p: None")
    assert proc.returncode != 0, proc.stdout[-2000:]
    found = ("Falsifying example" in proc.stderr or "Failing test case" in proc.stderr)    # hypothesis's report
    assert proc.returncode < 0 or proc.returncode == 134 or found, proc.stderr[-3000:]
