"""What bounds version 8's GEMV on this CPU: its instructions, counted in its machine code and timed on
one core (`python -m kernels_numba.budget`).

A GEMV reads each weight once. It is bound either by the bus (bytes of codes per second) or by the
core: the instructions it issues per weight, divided by the instructions the core retires per cycle.
This module measures the second bound, to put beside the bench's read bandwidth:

  1. count: compile version 8's GEMV, find its hot loop in the machine code (the self-looping block
     with the most VPSHUFB), and sort its instructions by what they do, per 1024 weights; the same
     for its many-token kernel (batched steps, prefills), per 1024 weight-tokens;
  2. time: run that loop (pair_chunk1, the GEMV's inner call) on one thread over codes and tables that
     fit in L1 (no memory traffic, no thread launch), then on two threads each with its own copy;
  3. divide: nanoseconds per 1024 weights, and, with the clock measured by a chain of dependent
     one-cycle operations, cycles per 1024 weights and vector instructions per cycle.

Outside the hot loop, once per NIBBLE_BYTE_GROUPS groups, the byte sums are widened into word sums
(simd._nibble_codegen: an add, a shift and an add per byte-sum vector, 12 instructions per 1024
weight-tokens, for one token as for four); `WIDENING_PER_1024` adds them to the count.
"""
import sys

import numba
import numpy as np
from numba import njit, prange

from . import simd
from .bench import FULL
from .packing import pack_ternary
from .products import _v8_matmul_kernel, _v8_matvec_kernel, compiled_code, nibble_tables_of, pack_pairs, timings
from .simd import NIBBLE_BYTE_GROUPS, NIBBLE_ROWS, NIBBLE_TOKENS, PAIR_BLOCKS, pair_chunk1

# what each instruction of the hot loop does (the first matching rule wins)
ROLES = (
    ("lookups", lambda op, args: op == "vpshufb"),
    ("byte adds", lambda op, args: op == "vpaddb"),
    ("code split", lambda op, args: op in ("vpand", "vpsrlw")),
    ("table loads", lambda op, args: op == "vbroadcasti128"),
    ("spills", lambda op, args: op.startswith("vmov") and "%rsp" in args),
    ("other loads", lambda op, args: op.startswith("vmov") and "(" in args),   # codes, constants
    ("other vector", lambda op, args: op.startswith("v")),
    ("scalar", lambda op, args: True),
)
VECTOR_ALU = ("lookups", "byte adds", "code split", "other vector")   # what runs on the vector pipes
# per byte-sum vector and widening: VPADDW (the whole words), VPSRLW (the odd bytes), VPADDW; each token
# and block of 32 rows has two byte-sum vectors (low and high nibbles), widened every NIBBLE_BYTE_GROUPS
# groups of 2 weights
WIDENING_PER_1024 = 3 * 2 * 1024 // (NIBBLE_BYTE_GROUPS * NIBBLE_ROWS * 2)


def hot_loop(asm):
    """The instructions (op, operands) of the basic block of `asm` (from a label to the first jump) that
    jumps back to its own label and holds the most VPSHUFB: a version 8 kernel's inner loop. ValueError
    if no such block exists."""
    blocks, label, body = [], None, []
    for line in asm.splitlines():
        s = line.split("#")[0].strip()
        if not s or s.startswith(".") and not s.endswith(":"):
            continue                                                 # comments and directives
        if s.endswith(":"):
            blocks.append((label, body))
            label, body = s[:-1], []
            continue
        op, _, args = s.partition("\t") if "\t" in s else s.partition(" ")
        body.append((op.strip(), args.strip()))
        if op.startswith("j"):                                       # a jump ends a block; what follows
            blocks.append((label, body))                             # without a label is another one
            label, body = None, []
    blocks.append((label, body))
    loops = [body for label, body in blocks
             if label and body and body[-1][0].startswith("j") and body[-1][1] == label]
    loops = [b for b in loops if any(op == "vpshufb" for op, _ in b)]
    if not loops:
        raise ValueError("no self-looping block with VPSHUFB in this machine code")
    return max(loops, key=lambda b: sum(op == "vpshufb" for op, _ in b))


def classify(instructions):
    """{role: count} of (op, operands) pairs, by ROLES."""
    counts = {role: 0 for role, _ in ROLES}
    for op, args in instructions:
        role = next(role for role, rule in ROLES if rule(op, args))
        counts[role] += 1
    return counts


def loop_budget(tokens=1):
    """Version 8's hot loop, counted: ({role: instructions per 1024 weight-tokens}, weight-tokens per
    iteration), for the GEMV (tokens 1) or the many-token kernel (tokens 4: each load and split of
    codes serves NIBBLE_TOKENS tokens). Each VPSHUFB looks up one nibble half of a 2-weight group for
    32 rows and one token, so an iteration with n of them covers 32 n weight-tokens."""
    rng = np.random.default_rng(0)
    W = rng.integers(-1, 2, (2 * NIBBLE_ROWS * PAIR_BLOCKS, 1024)).astype(np.int8)
    pairs = pack_pairs(pack_ternary(W))
    X = rng.integers(-128, 128, (tokens, 1024)).astype(np.int8)
    tables = nibble_tables_of(X, pairs.n_blocks, pad=1 if tokens == 1 else NIBBLE_TOKENS)
    kernel = _v8_matvec_kernel if tokens == 1 else _v8_matmul_kernel
    _, asm = compiled_code(kernel, pairs.codes, pairs.offset, tables, np.empty((tokens, W.shape[0]), np.int32))
    counts = classify(hot_loop(asm))
    weights = 32 * counts["lookups"]
    return {role: n * 1024 / weights for role, n in counts.items()}, weights


@njit(cache=True)
def _chain(n):
    """n rounds of three dependent one-cycle integer operations (shift, xor, add): 3 n cycles."""
    x = np.uint64(n)
    for i in range(n):
        x = (x ^ (x >> np.uint64(7))) + np.uint64(i)
    return x


def clock_hz(n=20_000_000, repeats=5):
    """The core's clock, from the fastest of `repeats` runs of _chain(n)."""
    return 3 * n / timings(lambda: _chain(n), repeats).min()


@njit(cache=True)
def _loop(codes, tables, acc, reps):
    """The GEMV's inner calls over all row blocks of `codes`, reps times (one thread, no launch)."""
    for _ in range(reps):
        for rb in range(0, codes.shape[0], PAIR_BLOCKS):
            pair_chunk1(codes[rb:rb + PAIR_BLOCKS], tables, acc, 0, 0, 0, codes.shape[1])


@njit(parallel=True, cache=True)
def _loop_threads(codes, tables, acc, reps):
    """_loop on each thread, each over its own copy: codes (threads, ...), acc (threads, 1, 64)."""
    for k in prange(codes.shape[0]):
        _loop(codes[k], tables[k], acc[k], reps)


def core_rate(columns=512, rows=2 * NIBBLE_ROWS * PAIR_BLOCKS, reps=20_000, rounds=7, threads=None):
    """Weights per second of the GEMV's inner loop with its codes and tables in L1 (16 and 8 KiB at the
    defaults), on 1 and on 2 threads (where Numba has two) each over its own copy: {threads: (median,
    best)}, the rounds alternated."""
    threads = threads or ((1, 2) if numba.config.NUMBA_NUM_THREADS >= 2 else (1,))
    rng = np.random.default_rng(1)
    most = max(threads)
    W = rng.integers(-1, 2, (rows, columns)).astype(np.int8)
    codes = pack_pairs(pack_ternary(W)).codes
    tables = nibble_tables_of(rng.integers(-128, 128, (1, columns)).astype(np.int8), columns // 64, pad=1)
    codes_k = np.ascontiguousarray(np.broadcast_to(codes, (most, *codes.shape)))
    tables_k = np.ascontiguousarray(np.broadcast_to(tables, (most, *tables.shape)))
    acc = np.zeros((most, 1, NIBBLE_ROWS * PAIR_BLOCKS), np.int32)
    previous = numba.get_num_threads()
    seconds = {t: [] for t in threads}
    try:
        for t in threads:                                            # compile and warm up
            numba.set_num_threads(t)
            _loop_threads(codes_k[:t], tables_k[:t], acc[:t], 10)
        for r in range(rounds):
            for t in (threads if r % 2 == 0 else threads[::-1]):
                numba.set_num_threads(t)
                seconds[t].append(timings(lambda: _loop_threads(codes_k[:t], tables_k[:t], acc[:t], reps), 1, 0)[0])
    finally:
        numba.set_num_threads(previous)
    work = rows * columns * reps
    return {t: (t * work / float(np.median(s)), t * work / min(s)) for t, s in seconds.items()}


def vector_instructions(per_1024):
    """Instructions on the vector pipes per 1024 weight-tokens: the hot loop's and the widening's."""
    return sum(per_1024[r] for r in VECTOR_ALU) + WIDENING_PER_1024


def report(rates, budgets, hz, weights_per_token=None):
    """The lines that python -m kernels_numba.budget prints. budgets: {tokens: loop_budget(tokens)},
    the GEMV's (1) first; rates: core_rate()."""
    lines = []
    for tokens, (per_1024, weights) in budgets.items():
        what = "GEMV" if tokens == 1 else f"{tokens}-token kernel"
        unit = "weights" if tokens == 1 else "weight-tokens"
        lines += [f"version 8 {what}, hot loop ({weights} {unit} per iteration), instructions per 1024 {unit}:",
                  "  " + ", ".join(f"{role} {n:g}" for role, n in per_1024.items() if n),
                  f"  + widening outside the loop {WIDENING_PER_1024}: {vector_instructions(per_1024):g} on the "
                  f"vector pipes"]
    gemv = vector_instructions(budgets[1][0])
    for tokens, (per_1024, _) in budgets.items():
        if tokens > 1:
            lines.append(f"so per weight-token a batch issues {vector_instructions(per_1024) / gemv:.2f}x the GEMV's "
                         f"instructions: where both are compute-bound, a batch's products run at most "
                         f"{gemv / vector_instructions(per_1024):.2f}x batch 1's tokens per second")
    one = rates[1][0]
    cycles = 1024 / one * hz
    lines.append(f"clock {hz / 1e9:.2f} GHz (a chain of dependent one-cycle operations)")
    for t, (median, best) in rates.items():
        lines.append(f"GEMV on {t} thread{'s' if t > 1 else ' '}, codes and tables in L1: {median / 1e9:5.1f} G "
                     f"weights/s (best {best / 1e9:.1f})" + (f" = {cycles:.1f} cycles per 1024 weights, "
                                                             f"{gemv / cycles:.2f} vector instructions per cycle"
                                                             if t == 1 else f" = {median / one:.2f}x one thread"))
    if weights_per_token:
        best_t = max(rates)
        lines.append(f"a step of {weights_per_token / 1e6:.0f}M weights at the {best_t}-thread rate: "
                     f"{weights_per_token / rates[best_t][0] * 1e3:.2f} ms of products -> at most "
                     f"{rates[best_t][0] / weights_per_token:.0f} tok/s from the core (the bus: bench --peers)")
    return lines


def ternary_weights(config):
    """The ternary weights one decoding step reads, for a model config dict (bench.FULL["decode"]): per layer
    i/f/g and o (4 D x D), gate/up and down (3 I x D), then the head (V x D)."""
    D, I = config["hidden_size"], config["intermediate_size"]
    return config["num_layers"] * (4 * D * D + 3 * I * D) + config["vocab_size"] * D


WEIGHTS_370M = ternary_weights(FULL["decode"])                        # the bench's 370M shape: 341M


def main(argv):
    """python -m kernels_numba.budget [ROUNDS]: the count, then ROUNDS alternated timing rounds (7)."""
    if len(argv) > 1 or (argv and not (argv[0].isdigit() and int(argv[0]) >= 1)):
        raise ValueError(f"usage: python -m kernels_numba.budget [ROUNDS], ROUNDS a whole number >= 1 of "
                         f"timing rounds; got {' '.join(argv)!r}")
    if not simd.AVX2:
        print("version 8's GEMV is AVX2 code (VPSHUFB) and this CPU has no AVX2: nothing to count", file=sys.stderr)
        return 1
    budgets = {tokens: loop_budget(tokens) for tokens in (1, NIBBLE_TOKENS)}
    hz = clock_hz()
    rates = core_rate(rounds=int(argv[0]) if argv else 7)
    print("\n".join(report(rates, budgets, hz, WEIGHTS_370M)))
    return 0


if __name__ == "__main__":
    from mmf.cli import run
    sys.exit(run(main, None, "python -m kernels_numba.budget"))
