"""kernels_numba: the fast tier of mmf. Packed ternary weights, add/subtract kernels over int8
activations, fused RMSNorm + quantization, MLGRU scans, a Numba backend for mmf and a decoding Engine.

    pack_ternary(w)              int8 (out, in) of -1/0/+1 -> PackedTernary (2 bits per weight)
    ternary_matvec(packed, x_q)  int8 (in,)    -> int32 (out,)
    ternary_matmul(packed, X_q)  int8 (n, in)  -> int32 (n, out)
    Engine(model)                loads an mmf.MMfreeLM once in packed form; .generate(ids, max_new_tokens)

`mmf` never imports this package unless asked (MMfreeLM(..., backend="numba")).
"""
import os

# Numba's OpenMP thread pool spins after every parallel region by default; on a shared 2-core machine
# that spinning steals the core the next kernel (or BLAS) needs and a 0.05 ms kernel can take 10 ms.
# Passive waiting costs a thread wake-up per launch (a decoding step alone runs ~25% faster with a
# short spin, GOMP_SPINCOUNT=100000), but spinning threads also fight OpenBLAS's threads whenever
# the two alternate, which made both several times slower here. Must be set before the pool starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .packing import PackedTernary, pack_ternary, unpack_ternary
from .ternary_matmul import ternary_matmul, ternary_matvec


def __getattr__(name):
    if name == "Engine":                      # lazy: the engine pulls in mmf and compiles more kernels
        from .engine import Engine
        return Engine
    raise AttributeError(f"module 'kernels_numba' has no attribute {name!r}")


__all__ = ["PackedTernary", "pack_ternary", "unpack_ternary", "ternary_matvec", "ternary_matmul", "Engine"]
