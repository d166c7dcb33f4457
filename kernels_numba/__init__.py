"""kernels_numba: the fast tier of mmf. Packed ternary weights, add/subtract kernels over int8
activations, fused RMSNorm + quantization, MLGRU scans, a Numba backend for mmf and a decoding Engine.

    pack_ternary(w)              int8 (out, in) of -1/0/+1 -> PackedTernary (2 bits per weight)
    ternary_matvec(packed, x_q)  int8 (in,)    -> int32 (out,)
    ternary_matmul(packed, X_q)  int8 (n, in)  -> int32 (n, out)
    Engine(model)                loads an mmf.MMfreeLM once in packed form; .generate(ids, max_new_tokens)
    Engine.from_pretrained(dir)  the same from a Hugging Face checkpoint, packed tensor by tensor

`mmf` never imports this package unless asked (MMfreeLM(..., backend="numba")).

Files, one concept each:
    packing.py         the 2-bit bit-plane layout (and the base-3 layout of the lookup-table kernel)
    products.py        the add/subtract products, numbered versions 0-6, validated and timed
    simd.py            the inner loops of versions 4-6 in LLVM IR: AVX-512 mask registers +
                       VPSADBW; bit-sliced activations + VPOPCNTQ; lookup tables + VPERMW
    expf.py            a float32 exp Numba can vectorize (gates, softmax)
    fused.py           row kernels: norm + quantize, RMSNorm, cross-entropy, gate nonlinearities,
                       ternary W~, the embedding gradient
    scan.py            the MLGRU recurrence over T tokens and for one decoding step
    mixers.py          a training block's elementwise stages (MLGRU gates + scan + output gate, GLU,
                       residual + norm), one pass each, forward and backward
    block.py           the E9 block for training on those kernels (the fused mode: less memory held)
    adamw.py           AdamW's update of one parameter in one pass
    heap.py            keep freed memory in the process between training steps (no page faults)
    backend.py         NumbaBackend, mmf's switch to all of the above
    step_profile.py    a training step's time per phase against its float-GEMM floor
    step_memory.py     a training step's peak resident memory, fused vs caching, in fresh processes
    engine.py          Engine: a packed model decoding with carried state
    bench.py           the measurements of the README's "Measured" table (python -m kernels_numba.bench)
    budget.py          what bounds version 8's GEMV: its instructions per weight, counted in its machine
                       code, and the core's rate on them (python -m kernels_numba.budget)
    peers.py           bench --peers: mmf beside PyTorch and the machine's limits, one process per contender
    peer_torch.py      the PyTorch peer: the same MMfree LM as a PyTorch user writes it (imports torch)
"""
import os

import mmf.threads                   # noqa: F401 (first: sets OpenBLAS's idle spin before NumPy loads)

# Numba's OpenMP threads wait for the next parallel region by spinning, by default for ~3 ms (GNU
# OpenMP). On a shared 2-core machine that spinning steals the core OpenBLAS's threads (or a
# neighbour) need, and whole training steps ran several times slower. Sleeping at once (passive)
# costs a thread wake-up per launch, measured ~40 us against ~2.5 us: a decoding step launches ~100
# kernels, so it ran 13 ms instead of 6. A short spin, ~30 us (GOMP counts ~100 spins per us), keeps
# back-to-back launches cheap and releases the core almost at once. It must be set before the pool
# starts; a user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT win. The price: a parallel call after an idle
# pause of more than the spin waits ~0.35 ms for the sleeping thread to wake (bench --peers, P3);
# OMP_WAIT_POLICY=ACTIVE removes that, for a process that is alone on the machine.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
# Threads are NOT bound to CPUs, although binding (OMP_PROC_BIND=true) removes one slow mode: unbound,
# the kernel sometimes wakes the sleeping worker on the CPU of the thread that woke it, and every
# parallel call then runs both halves on one CPU until the scheduler moves it (bench --peers P3, 4096^2
# GEMV back to back after 20 ms pauses: 0.31-0.39 ms unbound, 0.08-0.12 ms bound). The price made it
# a user's choice: libgomp binds Python's own thread too, and every process it starts inherits that one
# CPU (measured: a bench --peers run with binding ran every contender, BLAS included, at half speed).
# For a process that decodes and starts no others, export OMP_PROC_BIND=true.

from .packing import PackedTernary, pack_ternary, unpack_ternary
from .products import ternary_matmul, ternary_matvec


def __getattr__(name):
    if name == "Engine":                      # lazy: the engine pulls in mmf and compiles more kernels
        from .engine import Engine
        return Engine
    raise AttributeError(f"module 'kernels_numba' has no attribute {name!r}")


__all__ = ["PackedTernary", "pack_ternary", "unpack_ternary", "ternary_matvec", "ternary_matmul", "Engine"]
