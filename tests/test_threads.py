"""mmf sets OpenBLAS's idle spin (mmf/threads.py) before NumPy loads OpenBLAS, which reads it only
then; a user's own value wins. A meta-path hook records the variable at the moment `numpy` is first
imported, in a fresh process."""
import os
import subprocess
import sys

import pytest

from mmf.threads import BLAS_IDLE_SPIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCH = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and not seen:
            seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"))
        return None
sys.meta_path.insert(0, Watch())
{imports}
print(seen[0] if seen else "numpy never imported")
"""


def value_when_numpy_loads(imports, user_value=None):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["PYTHONPATH"] = ROOT
    if user_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_value
    out = subprocess.run([sys.executable, "-c", WATCH.format(imports=imports)], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


@pytest.mark.parametrize("imports", ["import mmf", "import kernels_numba", "from mmf.training import trainer"])
def test_the_spin_is_set_before_numpy_loads(imports):
    assert value_when_numpy_loads(imports) == BLAS_IDLE_SPIN


def test_a_users_own_value_wins():
    assert value_when_numpy_loads("import mmf", user_value="20") == "20"


def test_the_watch_sees_numpy_imported_first():
    # negative control: NumPy loaded before mmf gets the default, and the hook must say so
    assert value_when_numpy_loads("import numpy\nimport mmf") == "unset"
