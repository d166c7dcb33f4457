"""kernels_numba binds each OpenMP thread to a CPU of its own (OMP_PROC_BIND=true, set before the
pool starts; kernels_numba/__init__.py says why). Read from the kernel's own record: after a parallel
call, the pool's threads each allow exactly one CPU, and different ones."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import glob, numpy as np, kernels_numba
p = kernels_numba.pack_ternary(np.ones((256, 256), np.int8))
kernels_numba.ternary_matvec(p, np.ones(256, np.int8))             # starts the OpenMP pool
masks = []
for status in glob.glob("/proc/self/task/*/status"):
    fields = dict(line.split(":", 1) for line in open(status) if ":" in line)
    masks.append(fields["Cpus_allowed_list"].strip())
print(";".join(masks))
"""

needs_two_cpus = pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                                    reason="reads /proc/self/task (Linux) and needs two CPUs to bind to")


def thread_cpu_masks(extra_env):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "NUMBA_NUM_THREADS")}
    env.update(extra_env, PYTHONPATH=ROOT, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split(";")


def single_cpu(mask):
    return mask.isdigit()                                            # "3", not "0-1" or "0,2"


@needs_two_cpus
def test_the_pool_threads_each_run_on_one_cpu_of_their_own():
    bound = [m for m in thread_cpu_masks({}) if single_cpu(m)]
    assert len(bound) >= 2 and len(set(bound)) == len(bound)


@needs_two_cpus
def test_a_users_own_setting_wins_and_leaves_them_unbound():
    # negative control: the same probe with OMP_PROC_BIND=false finds no thread held to one CPU
    assert not [m for m in thread_cpu_masks({"OMP_PROC_BIND": "false"}) if single_cpu(m)]
