"""kernels_numba leaves its OpenMP threads unbound unless asked (kernels_numba/__init__.py says why: a
bound Python thread hands its single CPU to every process it starts). Read from the kernel's own
record after a parallel call: the threads' allowed CPUs in /proc; OMP_PROC_BIND=true is the control
that binds them, and a child process started afterwards inherits the one CPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import glob, subprocess, sys, numpy as np, kernels_numba
p = kernels_numba.pack_ternary(np.ones((256, 256), np.int8))
kernels_numba.ternary_matvec(p, np.ones(256, np.int8))             # starts the OpenMP pool
masks = []
for status in glob.glob("/proc/self/task/*/status"):
    fields = dict(line.split(":", 1) for line in open(status) if ":" in line)
    masks.append(fields["Cpus_allowed_list"].strip())
child = subprocess.run([sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
                       capture_output=True, text=True).stdout.strip()
print(";".join(masks) + "|" + child)
"""

needs_two_cpus = pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                                    reason="reads /proc/self/task (Linux) and needs two CPUs to bind to")


def probe(extra_env):
    """-> (the CPU list each thread may run on, how many CPUs a child process started afterwards gets)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "NUMBA_NUM_THREADS")}
    env.update(extra_env, PYTHONPATH=ROOT, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    masks, child = out.stdout.strip().splitlines()[-1].split("|")
    return masks.split(";"), int(child)


def single_cpu(mask):
    return mask.isdigit()                                            # "3", not "0-1" or "0,2"


@needs_two_cpus
def test_threads_stay_unbound_and_children_get_every_cpu():
    masks, child_cpus = probe({})
    assert not [m for m in masks if single_cpu(m)]
    assert child_cpus == len(os.sched_getaffinity(0))


@needs_two_cpus
def test_binding_when_asked_pins_each_thread_and_a_child_inherits_one_cpu():
    # the control: OMP_PROC_BIND=true binds the pool's threads to distinct CPUs, and a process started
    # afterwards is confined to the first thread's one CPU (why mmf does not bind by default)
    masks, child_cpus = probe({"OMP_PROC_BIND": "true"})
    bound = [m for m in masks if single_cpu(m)]
    assert len(bound) >= 2 and len(set(bound)) == len(bound)
    assert child_cpus == 1
