"""Run a snippet in a fresh interpreter, so a segfault or an abort is a test failure, not the end of pytest."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, timeout=300, args=(), env=None):
    """Run `code` with the repo importable (env: extra variables); returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def assert_no_crash(proc):
    """The interpreter exited by itself (rc >= 0 and not the 134 of abort()): no signal, no heap corruption."""
    assert proc.returncode >= 0 and proc.returncode != 134, (
        f"the subprocess crashed (return code {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
