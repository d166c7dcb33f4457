"""Idle BLAS threads: how long they spin before they sleep, set before NumPy loads OpenBLAS.

NumPy's matrix products run on OpenBLAS's threads. When a product ends, its idle threads keep
spinning, by default for 2^28 cycles (about 0.1 s), waiting for the next one. A training step
alternates products with other work (the Numba backend's two-thread kernels, NumPy's elementwise
code), and on a 2-core machine a spinning BLAS thread takes the core that work needs. Measured on
this project's machine (V=2048 D=256 L=4 B=16 T=128, fwd + bwd + AdamW, medians of 10 steps in
alternated processes): Numba backend 370-383 ms per step by default against 309-323 ms with
OPENBLAS_THREAD_TIMEOUT=16, the NumPy reference 834 against 681 ms.

OPENBLAS_THREAD_TIMEOUT=n makes idle threads spin 2^n cycles (n = 4..30): 16 is ~25 us, the same
short spin kernels_numba gives its own OpenMP threads. OpenBLAS reads it once, when NumPy loads it,
so `import mmf` sets it first thing; a value of your own wins, and it has no effect if NumPy was
imported before mmf (then set it in the shell: `export OPENBLAS_THREAD_TIMEOUT=16`). In Jupyter,
`%matplotlib inline` loads NumPy: import mmf before it (notebook 04 does).
"""
import os
import sys

BLAS_IDLE_SPIN = "16"                 # OPENBLAS_THREAD_TIMEOUT: idle BLAS threads spin 2^16 cycles


def quiet_blas_threads() -> bool:
    """Set OPENBLAS_THREAD_TIMEOUT unless it is set already; True if it can still take effect (NumPy,
    and with it OpenBLAS, not loaded yet)."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_IDLE_SPIN)
    return "numpy" not in sys.modules
