# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · MatMul-free kernels: packed ternary weights, additions only
#
# The paper's claim is that a ternary layer's matrix product needs **no multiplications**: with weights in
# {-1, 0, +1} (E3), the product `q · Wtᵀ` in `y = (q · Wtᵀ) · β / s` (E4) is a sum of some int8 activations
# minus a sum of others (the norm, the quantizer and the rescale around it still multiply, O(D) per token;
# notebook 01 counts them). The
# official code never shows it (it keeps bf16 weights and calls a float matmul). `kernels_numba` does:
#
# 1. packs ternary weights in **2 bits**, laid out so that a CPU works on 64 of them at once;
# 2. multiplies by **adding and subtracting** int8 activations (int32 results, exact);
# 3. fuses RMSNorm + int8 quantization, recomputes x̃ in the backward (E5), and compiles the MLGRU scans;
# 4. plugs into `mmf` by one switch (`MMfreeLM(..., backend="numba")`) and decodes with `Engine(model)`.
#
# This notebook pictures the layout, reads the compiled code to show there is no multiply, checks
# exactness, and measures speed and memory. `MMF_SMOKE=1` (CI) uses small sizes.

# %%
import mmf   # before anything loads NumPy (the plotting magic below does): mmf shortens OpenBLAS's idle spin,
             # which OpenBLAS reads once, when NumPy loads it (mmf/threads.py); the training timings need it
# %matplotlib inline
import os, sys, inspect, re
import numpy as np
import matplotlib.pyplot as plt
import numba

import kernels_numba
from kernels_numba import pack_ternary, unpack_ternary, ternary_matvec, ternary_matmul, Engine
from kernels_numba import bench
from kernels_numba.packing import BLOCK, activation_words
import kernels_numba.products as tm

SMOKE = os.environ.get("MMF_SMOKE") == "1"
print("numba", numba.__version__, "| threads:", numba.get_num_threads(), "| smoke mode:", SMOKE)

# %% [markdown]
# ## 1. Packing: two bit planes, 2 bits per weight
#
# A row of ternary weights is cut into blocks of 64 columns. Each block becomes two `uint64` words:
# `nonzero` (bit set where w ≠ 0) and `negative` (bit set where w = −1). The bit for column
# `64b + 8i + j` sits at position `8j + i`. Why that odd order: the 8 activations of columns
# `64b + 8i + 0..7` are 8 consecutive bytes, i.e. **one** `uint64`, and `(plane >> i) & 0x0101…01`
# lands each of their 8 weight bits in the low bit of the matching byte. Below: a 3 × 130 ternary
# matrix and its planes (130 columns → 3 blocks; the padding columns are zeros).

# %%
rng = np.random.default_rng(0)
W = rng.integers(-1, 2, (3, 130)).astype(np.int8)
p = pack_ternary(W)
print("planes:", p.nonzero.shape, p.nonzero.dtype, "| bytes:", p.nbytes, "vs float32", W.size * 4)
assert np.array_equal(unpack_ternary(p), W)

def plane_bits(plane):                     # (rows, blocks) uint64 -> bit image (rows, 64 * blocks)
    return np.unpackbits(plane.view(np.uint8), bitorder="little").reshape(plane.shape[0], -1)

W_shown = np.full((3, 64 * p.n_blocks), np.nan); W_shown[:, :130] = W     # padding columns left blank
fig, ax = plt.subplots(3, 1, figsize=(11, 4.2))
ax[0].imshow(W_shown, cmap="bwr", vmin=-1, vmax=1, aspect="auto"); ax[0].set_title("ternary W by column (red +1, blue -1; 62 padding columns blank)")
ax[1].imshow(plane_bits(p.nonzero), cmap="Greys", aspect="auto"); ax[1].set_title("nonzero plane, bit position 8j+i inside each 64-bit word")
ax[2].imshow(plane_bits(p.negative), cmap="Greys", aspect="auto"); ax[2].set_title("negative plane")
for a in ax:
    a.set_yticks([]); [a.axvline(64 * k - 0.5, color="orange") for k in (1, 2)]
plt.tight_layout(); plt.show()

# %% [markdown]
# The order, spelled out for block 0 of row 0: column `8i + j` ↔ bit `8j + i`.

# %%
col = np.arange(64).reshape(8, 8)          # [i, j] -> column 8i + j
bit = 8 * np.arange(8)[None, :] + np.arange(8)[:, None]
for i in (0, 1, 7):
    print(f"word i={i}: columns {col[i].tolist()} -> bits {bit[i].tolist()}")
nz_bits = plane_bits(p.nonzero)[0, :64]
assert all(nz_bits[bit[i, j]] == (W[0, 8 * i + j] != 0) for i in range(8) for j in range(8))

# %% [markdown]
# **Try this.** Change one weight and look at what moves in the planes. Column `64b + 8i + j` lives in
# block `b` at bit `8j + i`, so *expect* exactly one block's words to change, at that bit (in `nonzero`,
# `negative` or both, depending on the old and new value). Pick another column or value:

# %%
row, column, new_value = 0, 70, 0 if W[0, 70] != 0 else -1          # change these
W2 = W.copy(); W2[row, column] = new_value
p2 = pack_ternary(W2)
b_, c_ = divmod(column, 64); i_, j_ = divmod(c_, 8)
for plane in ("nonzero", "negative"):
    changed = np.argwhere(plane_bits(getattr(p2, plane)) != plane_bits(getattr(p, plane)))
    print(f"{plane:8s} plane: changed (row, bit) {changed.tolist()}")
    assert all(r == row and bit == 64 * b_ + 8 * j_ + i_ for r, bit in changed)
print(f"column {column} = block {b_}, i = {i_}, j = {j_} -> bit {8 * j_ + i_} of block {b_}")

# %% [markdown]
# ## 2. The inner loop: shifts, ands, xors and adds
#
# Activations go in as **offset binary** bytes `u = q + 128 ∈ [0, 255]`. For each weight the kernel
# keeps `u` (w = +1), `~u = 255 − u = 127 − q` (w = −1) or 0 (w = 0):
# `v = (u XOR negmask) AND nzmask`. Then Σ v = Σ₊ q − Σ₋ q + 128·n₊ + 127·n₋, and the constant
# `128·n₊ + 127·n₋` of each row is stored at packing time (`offset`). Byte sums are formed 8 lanes at a
# time inside a 64-bit integer (SWAR): pairs of bytes into 16-bit lanes, then 32-bit lanes. These
# are the helpers the kernel inlines:

# %%
for f in (tm._byte_mask, tm._pair_sums, tm._word, tm._fold):
    print(inspect.getsource(f.py_func))
print(inspect.getsource(tm._v3_matvec_kernel.py_func))

# %% [markdown]
# One activation word by hand, checked against the integer dot product:

# %%
q = np.array([-128, -1, 0, 5, 127, 100, -77, 3], np.int8)          # 8 activations = one word
w = np.array([-1, 1, 0, -1, 1, 1, 0, -1], np.int8)                 # their 8 weights
pw = pack_ternary(w[None, :])                                      # 8 columns: block 0, word i = 0
xw = activation_words(q[None, :], 1)[0]                            # (8 words, 1 block)
v = (xw[0, 0] ^ tm._byte_mask(pw.negative[0, 0], 0)) & tm._byte_mask(pw.nonzero[0, 0], 0)
bytes_v = np.array([v], np.uint64).view(np.uint8)
print("selected bytes:", bytes_v.tolist(), "sum:", int(bytes_v.sum()), "offset:", int(pw.offset[0]))
print("sum - offset =", int(bytes_v.sum()) - int(pw.offset[0]), "| q . w =", int(q.astype(int) @ w.astype(int)))
assert int(bytes_v.sum()) - int(pw.offset[0]) == int(q.astype(int) @ w.astype(int))

# %% [markdown]
# ## 3. No multiply in the compiled code
#
# Numba compiles through LLVM; we read both the LLVM IR and the machine code of the GEMV kernel.
# `tm.multiplies` lists every `fmul`, every `mul` on vectors, and every vector multiply /
# multiply-add / FMA instruction in the assembly. (A first version smeared a bit into a byte mask as
# `(t << 8) − t`; LLVM recognised that as `t * 255` and wrote a `mul` into the IR. The kernel now
# uses `(0x80 − t) XOR 0x80`, which is not a multiplication in any form.) The loop is vectorized: it
# works on `<8 x i64>` values, 512 bits = 64 weights per instruction.

# %%
Wt, X = tm.random_case(np.random.default_rng(1), 2, 16, 200)
pk = pack_ternary(Wt)
xw = activation_words(X, pk.n_blocks)
ir, asm = tm.compiled_code(tm._v3_matvec_kernel, pk.nonzero, pk.negative, pk.offset, xw[0], np.empty(16, np.int32))
vector_ops = [l.strip() for l in ir.splitlines() if "<8 x i64>" in l and " = " in l]
ops = sorted({l.split(" = ")[1].split()[0] for l in vector_ops})
print(len(vector_ops), "vector instructions in the IR; kinds:", ops)
arith = [l for l in vector_ops if l.split(" = ")[1].split()[0] in ("xor", "and", "sub", "lshr", "add")]
print("\n".join(arith[:14]))                   # the selection: shift, and, subtract, xor; then the sums
print("multiplications on data:", tm.multiplies(ir, asm))
assert tm.multiplies(ir, asm) == []

# %% [markdown]
# Negative control: the same check on a plain dot product `acc += W[r, k] * x[k]` finds its multiplies.

# %%
print(inspect.getsource(tm.dot_with_multiplies.py_func))
ir_d, asm_d = tm.compiled_code(tm.dot_with_multiplies, np.ones((8, 64), np.int32), np.ones(64, np.int32),
                               np.zeros(8, np.int32))
found = tm.multiplies(ir_d, asm_d)
print(len(found), "multiplies found, e.g.:", found[:2])
assert found

# %% [markdown]
# ## 3b. Version 4: the planes *are* mask registers
#
# AVX-512 has 64-bit mask registers (`k0`–`k7`): one bit per byte lane of a 512-bit vector. A plane
# word is exactly such a mask, so version 4 skips the mask arithmetic above. For each block of 64
# weights it loads the two plane words into `k` registers, flips the bytes under `negative`
# (`~u`), zeroes the bytes outside `nonzero`, and sums bytes with **VPSADBW** ("sum of absolute
# differences" against zero, i.e. eight sums of eight unsigned bytes: additions only): a handful of
# instructions per 64 weights (counted below from the compiled loop) instead of ~2 per weight. Numba's
# auto-vectorizer does not find this,
# so `kernels_numba/simd.py` writes the loop in LLVM IR as a Numba `@intrinsic`. On a CPU without
# AVX-512BW the same IR compiles to portable code; with AVX2 the public API then runs version 5 for
# one token and version 4 for several (measured faster there than version 3; `products.BEST`).
# The activations are re-ordered once per call (`activation_bytes`) so that byte `k` of a block sits
# under bit `k` of the plane words.

# %%
from kernels_numba import simd
print("AVX-512BW here:", simd.AVAILABLE, "| the public API runs version", tm.BEST)
print(inspect.getsource(simd._emit_sums))
Wt4, X4 = tm.random_case(np.random.default_rng(3), 1, 16, 512)
pk4 = pack_ternary(Wt4)
ir4, asm4 = tm.compiled_code(tm._v4_matvec_kernel, pk4.nonzero, pk4.negative, pk4.offset,
                             tm.activation_bytes(X4, pk4.n_blocks), np.empty(16, np.int32))
lines = asm4.splitlines()
first = next(i for i, l in enumerate(lines) if "vpsadbw" in l or "psadbw" in l)
print("\n".join(l for l in lines[first - 8:first + 6] if l.strip()))   # the inner loop's instructions
print("multiplications on data:", tm.multiplies(ir4, asm4))
assert tm.multiplies(ir4, asm4) == []
# count the instructions of the inner loop (from its label to the jump back), per VPSADBW = per 64 weights
top = max(k for k in range(first) if lines[k].rstrip().endswith(":") and not lines[k].startswith("\t"))
label = lines[top].strip()[:-1]
bottom = next(k for k in range(first, len(lines))
              if lines[k].split() and lines[k].split()[0].startswith("j") and label in lines[k])
body = [l.split()[0] for l in lines[top + 1:bottom + 1] if l.strip() and not l.strip().startswith((".", "#"))]
kinds = {op: body.count(op) for op in sorted(set(body))}
blocks_per_pass = body.count("vpsadbw")
print(f"loop body: {len(body)} instructions for {blocks_per_pass} blocks of 64 weights = "
      f"{len(body) / blocks_per_pass:.2f} per 64 weights (loop counter and jump included): {kinds}")

# %% [markdown]
# ## 3c. Version 5: count bits instead of adding bytes
#
# Version 4 adds *bytes* under the weight bits. Version 5 turns that around: it cuts each token's
# activation bytes into their 8 *bit planes* once (plane `k` of a block is a 64-bit word whose bit
# `m` is bit `k` of byte `m`: `bit_planes`, eight byte-tests per block), and then, for every row,
#
#     sum of selected bytes = Σ_k 2^k · popcount(nonzero AND (plane_k XOR negative))
#
# because a selected byte is `u` under a +1 weight and `~u` (every bit flipped) under a −1 weight.
# The 8 planes of a block fit one 512-bit vector, so a block of one row is three instructions:
# one **VPTERNLOGQ** (the AND/XOR), one **VPOPCNTQ** (8 bit counts), one add; the powers of two come
# in once per row, as shifts. Counting bits is additions too: nothing multiplies. The integers are
# version 4's to the last bit. Where the CPU has AVX-512 VPOPCNTDQ the public API runs it.

# %%
print("VPOPCNTQ here:", simd.POPCNT, "| the public API runs version", tm.BEST)
print(inspect.getsource(simd._emit_sliced_sums))
ir5, asm5 = tm.compiled_code(tm._v5_matvec_kernel, pk4.nonzero, pk4.negative, pk4.offset,
                             tm.activation_planes(X4, pk4.n_blocks), np.empty(16, np.int32))
print("multiplications on data:", tm.multiplies(ir5, asm5))
assert tm.multiplies(ir5, asm5) == []
ops5 = [l.split()[0] for l in asm5.splitlines() if l.strip() and not l.strip().startswith((".", "#"))]
print({op: ops5.count(op) for op in ("vpternlogq", "vpopcntq", "vpsadbw", "kmovq")})
# the two in one run, alternated, on a matrix that stays in cache
Wc, Xc = tm.random_case(np.random.default_rng(4), 1, 1024 if SMOKE else 2048, 1024 if SMOKE else 2048)
pc = pack_ternary(Wc)
for v in (4, 5):
    print(f"version {v}: {tm.fmt(tm.time_it(lambda: tm.MATMULS[v](pc, Xc), repeats=50))}")

# %% [markdown]
# ## 3d. Version 6: look the sums up, for many tokens at once
#
# A prompt multiplies each matrix by hundreds of tokens, and then a table pays. Three ternary
# weights have only 3³ = 27 patterns, so for each token and each group of three activations
# `x0, x1, x2` one table of 32 int16 holds all 27 sums `±x0 ±x1 ±x2` (five entries unused), built
# with ANDs and adds (`simd.group_tables`). Each row's group of three weights becomes one byte, its
# base-3 code `9·(w0+1) + 3·(w1+1) + (w2+1)`, read straight from the bit planes (3 `nonzero` bits and
# 3 `negative` bits → `CODES_OF_BITS`). **VPERMW** takes 32 such codes as indices and returns the 32
# table entries they name: 32 rows × 3 weights of one token in one instruction, and one add. The
# int16 sums are widened into int32 every 85 groups, before they could overflow (85 · 3 · 128 < 2¹⁵).
# The tables cost 21 bytes per activation and the codes are derived at every call, so it pays only
# for long prompts: `Engine.prefill` runs it from `LOOKUP_FROM` tokens on and reuses its buffers.

# %%
# one token; the first group's activations sit under bits 0, 1, 2 of the plane words, which are
# columns 0, 8, 16 (packing.py's bit order)
x3 = np.zeros((1, 64), np.int8)
x3[0, [0, 8, 16]] = (5, -7, 100)
t6 = tm.lookup_tables(x3, 1)                                     # (tokens padded to 4, 22 groups, 32)
for w in ((1, 1, 1), (1, -1, 0), (-1, 0, 1)):
    code = 9 * (w[0] + 1) + 3 * (w[1] + 1) + (w[2] + 1)
    print(f"weights {w}: code {code:2d}, table entry {t6[0, 0, code]:5d} = {w[0] * 5 + w[1] * -7 + w[2] * 100}")
# a prompt-sized product, version 5 against version 6, same integers
n6, d6 = (128, 512) if SMOKE else (512, 1024)
W6, X6 = tm.random_case(np.random.default_rng(6), n6, d6, d6)
p6 = pack_ternary(W6)
assert np.array_equal(tm.matmul_v6(p6, X6), tm.matmul_v5(p6, X6))
tables6 = tm.lookup_tables(X6, p6.n_blocks)
out6 = np.empty((n6, d6), np.int32)
ir6, asm6 = tm.compiled_code(tm._v6_matmul_kernel, p6.nonzero, p6.negative, tm.CODES_OF_BITS, tables6,
                             np.empty(tm.lookup_codes_bytes(d6, n6, p6.n_blocks), np.uint8), out6)
print("multiplications on data:", tm.multiplies(ir6, asm6), "| vpermw in the kernel:", "vpermw" in asm6)
print(f"version 5: {tm.fmt(tm.time_it(lambda: tm.matmul_v5(p6, X6), repeats=10))}")
print(f"version 6, tables ready: {tm.fmt(tm.time_it(lambda: tm.lookup_product(p6.nonzero, p6.negative, tables6, out6), repeats=10))}")

# %% [markdown]
# ## 3e. Version 7: the same idea with AVX2's VPSHUFB
#
# Most laptops have AVX2 but no AVX-512, and so no VPERMW. AVX2's table lookup is **VPSHUFB**: 16
# one-byte entries per 16-byte half. Two ternary weights need only 16 indices if each row's group
# is the 4-bit pair (2 `nonzero` bits | 2 `negative` bits << 2), straight from the planes. A byte
# cannot hold `±x0 ±x1`, so version 7 splits each offset-binary activation `u = x + 128` into its
# low and high nibble: a +1 weight counts `v`, a −1 weight counts `15 − v` (the same `u` or `255 − u`
# as versions 4 and 5), and each table entry is at most 30. One group has two 16-byte tables, the
# low-nibble sums and the high-nibble sums; each is broadcast to both halves of a vector, so that
# with 32 rows' codes in a vector one VPSHUFB per table gives 32 rows × 2 weights, one nibble each,
# and a VPADDB adds them into that nibble's 32 byte sums. The bytes are widened every 8 groups
# (8 · 30 < 256) without crossing a half: each 16-bit word (even byte + 256 · odd byte) is added
# whole into one word sum and its odd byte (a shift) into another. Once at the end the odd bytes'
# share comes back out of the first sum (exact modulo 2^16: the sums stay below 2^15), the words go
# back in row order, and `16 · high + low` is a shift and an add.

# %%
x7 = np.zeros((1, 64), np.int8)
x7[0, [0, 8]] = (5, -7)                                          # under bits 0 and 1 of the planes
t7 = tm.nibble_tables_of(x7, 1)                                  # (tokens padded to 4, 32 groups, 32)
u7 = np.array([5, -7]) + 128
for w in ((1, 1), (1, -1), (-1, 0)):
    code = sum(1 << i for i in range(2) if w[i]) | sum(4 << i for i in range(2) if w[i] < 0)
    s7 = sum(u7[i] if w[i] > 0 else 255 - u7[i] for i in range(2) if w[i])
    print(f"weights {w}: code {code:2d}, 16 * {t7[0, 0, 16 + code]} + {t7[0, 0, code]} = "
          f"{16 * int(t7[0, 0, 16 + code]) + int(t7[0, 0, code])} = the sum of u or 255 - u: {s7}")
assert np.array_equal(tm.matmul_v7(p6, X6), tm.matmul_v5(p6, X6))
tables7 = tm.nibble_tables_of(X6, p6.n_blocks)
ir7, asm7 = tm.compiled_code(tm._v7_matmul_kernel, p6.nonzero, p6.negative, p6.offset, tables7,
                             np.empty(tm.nibble_codes_bytes(d6, n6, p6.n_blocks), np.uint8), out6)
print("AVX2 here:", simd.AVX2, "| multiplications on data:", tm.multiplies(ir7, asm7),
      "| vpshufb in the kernel:", "vpshufb" in asm7)
print(f"version 4: {tm.fmt(tm.time_it(lambda: tm.matmul_v4(p6, X6), repeats=10))}")
print(f"version 7, tables ready: {tm.fmt(tm.time_it(lambda: tm.nibble_product(p6.nonzero, p6.negative, p6.offset, tables7, out6), repeats=10))}")

# %% [markdown]
# ## 3f. Version 8: store the codes, and the GEMV pays too
#
# Version 7 derives its 4-bit codes from the planes at every call: fine for a prompt, where each code
# serves hundreds of tokens, too slow for one. Version 8 stores them instead, **two codes per byte**
# (`products.pack_pairs`: group 2j in the low nibble, group 2j + 1 in the high one): 2 bits per
# weight, as the planes, just in another order. Per 32 bytes of codes (32 rows × 4 weights) the
# GEMV does one load, two ANDs and a shift to split the two groups' codes, four VPSHUFB and four
# VPADDB; each table broadcast serves two blocks of 32 rows. The tables are version 7's. An `Engine(model, layout="pairs")` holds its weights this way (instead of the planes, not
# beside them) and runs version 8 for every product: the default where AVX2 is the widest.

# %%
pairs6 = tm.pack_pairs(p6)
print("codes", pairs6.codes.shape, pairs6.codes.dtype, f"({pairs6.nbytes} bytes) | planes ({p6.nbytes} bytes)")
row, j = 0, 0                                                    # row 0's byte for groups 0 and 1
print(f"row {row}, groups 0 and 1: byte {pairs6.codes[0, j, row]:#04x} = codes "
      f"{pairs6.codes[0, j, row] & 15} (low nibble) and {pairs6.codes[0, j, row] >> 4} (high nibble)")
assert np.array_equal(tm.matmul_v8(pairs6, X6), tm.matmul_v5(p6, X6))
x8 = X6[:1]
assert np.array_equal(tm.matmul_v8(pairs6, x8), tm.matmul_v5(p6, x8))
tables8 = tm.nibble_tables_of(x8, p6.n_blocks, pad=1)
out8 = np.empty((1, d6), np.int32)
ir8, asm8 = tm.compiled_code(tm._v8_matvec_kernel, pairs6.codes, pairs6.offset, tables8, out8)
print("multiplications on data:", tm.multiplies(ir8, asm8), "| vpshufb in the GEMV:", "vpshufb" in asm8)
planes8 = tm.activation_planes(x8, p6.n_blocks)
out5 = np.empty(d6, np.int32)
print(f"GEMV, version 5 (planes): {tm.fmt(tm.time_it(lambda: tm._v5_matvec_kernel(p6.nonzero, p6.negative, p6.offset, planes8, out5), repeats=50))}")
print(f"GEMV, version 8 (pairs):  {tm.fmt(tm.time_it(lambda: tm._v8_matvec_kernel(pairs6.codes, pairs6.offset, tables8, out8), repeats=50))}")

# %% [markdown]
# ## 3g. What bounds the GEMV: count its instructions, then time them
#
# A GEMV reads every weight once, so one of two things bounds it: the bus (bytes of weights per second)
# or the core (instructions per weight ÷ instructions per cycle). The second can be read off the
# compiled code. `kernels_numba.budget` finds version 8's hot loop in the machine code (the block that
# jumps back to itself with the most VPSHUFB) and sorts its instructions by what they do, per 1024
# weights. Then it times that loop on one thread with codes and tables in L1, so that neither memory
# nor a thread launch is in the way, and on two threads, each on its own copy. With the clock measured
# by a chain of dependent one-cycle operations, that gives cycles per 1024 weights.
#
# Of the ~100 vector instructions per 1024 weights, 64 are the lookups and their adds (two VPSHUFB and
# two VPADDB per 32 rows × 2 weights); the rest split the codes (two per byte) and widen the byte sums.
# The many-token kernel (batched steps, prefills) shares the load and split of the codes among four
# tokens, but every token still needs its own lookups, adds and widening: per weight-token it saves
# only the split, and that caps what a batch gains where the core is the bound (both counts and the
# cap are printed below). The last
# line scales the two-thread rate to the ternary weights of one 370M-shape decoding step: the most
# tokens per second the core allows. The bandwidth limit is beside it in
# `python -m kernels_numba.bench --peers`.

# %%
from kernels_numba import budget
if simd.AVX2:
    budgets = {tokens: budget.loop_budget(tokens) for tokens in (1, 4)}     # the GEMV, the 4-token kernel
    rates = budget.core_rate(reps=500 if SMOKE else 20_000, rounds=3 if SMOKE else 7)
    print("\n".join(budget.report(rates, budgets, budget.clock_hz(), budget.WEIGHTS_370M)))
else:
    print("no AVX2 here: version 8 does not run, nothing to count")

# %% [markdown]
# ## 4. Exactness
#
# Every numbered version (1 plain loops, 2 lookup tables after T-MAC/TL2, 3 bit planes + SWAR,
# 4 mask registers + VPSADBW, 5 bit-sliced activations + VPOPCNTQ, 6 lookup tables over the bit
# planes + VPERMW, 7 nibble lookup tables + VPSHUFB, 8 the same over stored codes) is
# validated against the NumPy integer reference on random shapes, including widths that are not
# multiples of 64, all-zero rows and activations at −128 and 127 — exact integer equality.

# %%
for v in (1, 2, 3, 4, 5, 6, 7, 8):
    print(f"version {v}: {tm.VERSIONS[v][0][:60]:60s} exact on {tm.validate(v, np.random.default_rng(v))} random shapes")
rng = np.random.default_rng(2)
for n, out, inp in [(1, 33, 1), (3, 7, 63), (5, 64, 65), (2, 100, 1000)]:
    Wt, X = tm.random_case(rng, n, out, inp)
    Wt[0] = 0; X[:, ::3] = -128
    assert np.array_equal(ternary_matmul(pack_ternary(Wt), X), X.astype(np.int64) @ Wt.T.astype(np.int64))
print("public API exact as well")

# %% [markdown]
# ## 5. Speed: GEMV against NumPy float32 `W @ x`
#
# Decoding multiplies a matrix by one vector per token, so it is bound by how many bytes of weights
# must be read: 2 bits per weight instead of 32. The two contenders run in alternating blocks of
# repeats (medians; the machine is shared, so ratios matter, not absolutes). Blocks, not one call
# each in turn: after a BLAS call OpenBLAS's idle threads spin for ~0.1 s and would steal the core
# from the kernel that runs next (`bench.alternating_blocks` explains the measurement).
# Two effects pull in opposite directions. Small float32 matrices sit in the caches, where BLAS is
# compute-bound and fast, and the kernel's fixed per-call work (re-laying out the activations, the dispatch)
# weighs most; large ones no longer fit, the float GEMV waits on memory, and reading 16 times fewer weight
# bytes pays. Where the crossover falls depends on the machine and on its load; the cell says where it fell here.

# %%
sizes = [512, 1024, 2048] if SMOKE else [512, 1024, 2048, 4096]
gemv = [bench.bench_gemv(n, repeats=15 if SMOKE else 50) for n in sizes]
for r in gemv:
    print(f"{r['n']:5d}: kernel {bench.fmt_ms(r['kernel'])} | float32 {bench.fmt_ms(r['numpy'])} | {r['speedup']:.1f}x")
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
ax[0].loglog(sizes, [r["numpy"]["median"] * 1e3 for r in gemv], "o-", label="NumPy float32 W @ x")
ax[0].loglog(sizes, [r["kernel"]["median"] * 1e3 for r in gemv], "s-", label="ternary add/sub kernel")
ax[0].set_xlabel("n (n x n matrix)"); ax[0].set_ylabel("ms"); ax[0].legend()
ax[1].bar([str(n) for n in sizes], [r["speedup"] for r in gemv]); ax[1].axhline(6, color="r", ls="--", label="target 6x")
ax[1].set_ylabel("speedup"); ax[1].legend(); plt.tight_layout(); plt.show()
from IPython.display import Markdown, display
slower = [r["n"] for r in gemv if r["speedup"] < 1]
display(Markdown(
    f"Here the kernel is faster at n = {', '.join(str(r['n']) for r in gemv if r['speedup'] >= 1) or 'no size'}"
    + (f" and slower at n = {', '.join(map(str, slower))}" if slower else ", every size measured")
    + f" (medians of repeats on a shared machine: the ratios move from run to run)."))

# %% [markdown]
# **Try this.** Run the largest GEMV with one thread instead of all. *Expect* the kernel to slow down by up
# to the number of threads it had (less on a busy machine, where the other thread was not really free), and
# the float32 side too; the ratio between them tells you whether both scale alike.

# %%
threads = numba.get_num_threads()
numba.set_num_threads(1)                                     # try 1 and the machine's count
one = bench.bench_gemv(sizes[-1], repeats=15 if SMOKE else 50)
numba.set_num_threads(threads)
print(f"n={sizes[-1]}: kernel {bench.fmt_ms(one['kernel'])} with 1 thread vs "
      f"{bench.fmt_ms(gemv[-1]['kernel'])} with {threads}")

# %% [markdown]
# ## 6. Decoding and resident memory
#
# `Engine(model)` packs every BitLinear once and runs one compiled function per token (E4–E10 with
# the integer BitLinear); a prompt is prefilled with the matrix-matrix kernel (all its tokens at once,
# only the recurrence walks over time). The comparison is the same model decoded by `mmf`'s own forward with float32
# BLAS and the dequantized weights W̃ computed once. Smoke mode uses a small model; the full run uses
# the 370M shape (V=32000, D=1024, L=24, I=2816).
#
# Memory: the ternary layers take 2 bits per weight, but the float32 embedding table of the 370M shape is a
# sizeable share of the float32 model (printed below). Three choices: keep it in RAM (exact), store it as int8 rows with a scale
# (`embedding="int8"`, not exact), or **map it from a file** (`embedding="mmap"`, exact): decoding reads
# one row per token, so only the rows of tokens actually seen become resident — measured from the
# kernel's own count (`/proc/self/smaps`).

# %%
from mmf.models.params import param_shapes
shape_370m = mmf.MMfreeConfig(vocab_size=32000, hidden_size=1024, num_layers=24)
n_370m = sum(int(np.prod(s)) for s in param_shapes(shape_370m).values())
print(f"370M shape: {n_370m / 1e6:.1f}M parameters; the embedding table is "
      f"{32000 * 1024 / n_370m:.1%} of them")
dec_cfg = bench.SMOKE["decode"] if SMOKE else bench.FULL["decode"]
dec = bench.bench_decode(dec_cfg, 8 if SMOKE else 24)
print(f"{dec_cfg}: engine {dec['engine_tok_s']:.0f} tok/s, float32 {dec['float32_tok_s']:.0f} tok/s, "
      f"speedup {dec['speedup']:.1f}x, logits agree to {dec['logits_err']:.1e}")
mib = lambda b: b / 2**20
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
ax[0].bar(["float32 BLAS", "Engine"], [dec["float32_tok_s"], dec["engine_tok_s"]]); ax[0].set_ylabel("tokens / s")
bars = {"float32": dec["float32_bytes"], "Engine\nf32 embedding": dec["engine_bytes"],
        "Engine\nint8 embedding": dec["engine_int8_emb_bytes"], "Engine\nmmap embedding": dec["mmap_bytes"]}
ax[1].bar(list(bars), [mib(b) for b in bars.values()])
ax[1].axhline(0.1 * mib(dec["float32_bytes"]), color="r", ls="--", label="10% of float32"); ax[1].legend()
ax[1].set_ylabel("resident weights, MiB"); plt.tight_layout(); plt.show()
for k, b in bars.items():
    print(f"{k.replace(chr(10), ', '):26s} {mib(b):8.1f} MiB = {100 * b / dec['float32_bytes']:5.1f}% of float32")

# %% [markdown]
# **Why the logits differ at the 370M shape.** The line above compares the engine's logits with `mmf`'s
# float32 forward on the same random weights. On the small smoke model they agree to float32 rounding; at
# the 370M shape (full mode) the difference is a few percent. No step is wrong: the engine (integer
# products) and `mmf` (float products of the dequantized values) round differently in the last bit, and
# where an activation times its scale, $x \cdot s$, lands within a rounding error of a half-integer (E2), the two
# round to neighbouring int8 codes: a flip of one quantum. A flip changes the next layer's input a little,
# which moves more values near a boundary, and in a model with random weights nothing damps that: the
# flips compound over the 24 layers. The cell measures it on one random model at several depths, three ways:
# the integer path against `mmf`'s float path in float32 (the same effect as the engine's), `mmf` in
# float32 against itself in float64, and the integer path against `mmf` in **float64**, where a last-bit
# difference almost never meets a rounding boundary.

# %%
from fpga_model.cpu_reference import integer_model
rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())
flip_ids = np.random.default_rng(0).integers(0, 1024, (1, 64))
flip_rows = []
for depth in ((1, 4) if SMOKE else (1, 4, 12, 24)):
    cfg_f = mmf.MMfreeConfig(vocab_size=1024, hidden_size=256, num_layers=depth)
    m32 = mmf.MMfreeLM(cfg_f, seed=0)
    m64 = mmf.MMfreeLM(cfg_f, seed=0, dtype=np.float64)
    for k in m64.params:
        m64.params[k] = m32.params[k].astype(np.float64)        # the same weights, exactly
    f32, f64 = m32.forward(flip_ids), m64.forward(flip_ids)
    flip_rows.append((depth, rel(integer_model(m32).forward(flip_ids), f32), rel(f32, f64),
                      rel(integer_model(m64).forward(flip_ids), f64)))
    print(f"L={depth:2d}: integer vs float path, float32 {flip_rows[-1][1]:.1e} | mmf float32 vs float64 "
          f"{flip_rows[-1][2]:.1e} | integer vs float path, float64 {flip_rows[-1][3]:.1e}")
assert flip_rows[-1][1] > 100 * flip_rows[0][1] and all(r[3] < 1e-12 for r in flip_rows)
display(Markdown(
    f"One layer: {flip_rows[0][1]:.0e} (float32 rounding, no flip). {flip_rows[-1][0]} layers: "
    f"{flip_rows[-1][1]:.0e}, and `mmf` against itself in float64 differs as much ({flip_rows[-1][2]:.0e}). "
    f"In float64 the integer and float paths agree to {max(r[3] for r in flip_rows):.0e} at every depth. "
    f"The trained model below is the other half of the answer: its engine logits match `mmf`'s closely and its "
    f"greedy tokens are identical."))

# %% [markdown]
# The same greedy tokens: a tiny model trained for a moment on a repeating pattern, continued by
# `model.generate` and by the engine.

# %%
model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=48, hidden_size=64, num_layers=2, intermediate_size=128), backend="numba")
opt = mmf.training.adamw.AdamW(model.params, lr=3e-3)
seq = np.tile(np.array([3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32]), 8)[None].repeat(4, axis=0)
for _ in range(40):
    loss, grads = model.loss_and_grads(seq[:, :-1], seq[:, 1:]); opt.step(grads)
prompt = np.array([[3, 14, 15]])
a, b = model.generate(prompt, 20, temperature=0), Engine(model).generate(prompt, 20)
print("loss", round(loss, 3)); print("model.generate:", a[0].tolist()); print("Engine       :", b[0].tolist())
assert np.array_equal(a, b)
trained_err = rel(Engine(model).prefill(prompt)[0], model.forward(prompt)[:, -1])
print(f"trained model: engine vs mmf logits differ by {trained_err:.1e} (relative to the largest logit)")

# %% [markdown]
# ## 7. Training: the kernel backend and fused recompute
#
# `MMfreeLM(..., backend="numba")` swaps in fused norm+quant, RMSNorm, scan, gate-nonlinearity and
# cross-entropy kernels (the gates and the softmax on `kernels_numba/expf.py`'s vectorizable float32
# exp, within 1 ulp). Its loss and gradients equal the reference's to float32 rounding
# (tests/test_kernels_backend.py). In
# training the two backward GEMMs of every BitLinear (dW = dyᵀ x̃, dx̃ = dy W̃, E5) stay float matrix
# products, so float BLAS sets the floor of a step; the `ternary` variant also runs the forward
# product as the add/subtract kernel. The fused variant stores only x and two per-row numbers per
# BitLinear and recomputes x̃ in the backward; with this backend it also runs each whole block on fused
# kernels (`kernels_numba/block.py`), which keep only the block's input, pre-activations, states and
# residual, and recompute the rest in one pass each. The left plot splits each step into those float GEMMs
# (measured alone, in the same run) and everything else. In smoke mode the sizes are so small that
# per-call overheads dominate; full mode runs the benchmark's sizes (`python -m kernels_numba.bench`), and
# the cell prints the ratios measured here.

# %%
tr_cfg, B, T = (bench.SMOKE["train"], 4, 32) if SMOKE else (bench.FULL["train"], 16, 128)
tr = bench.bench_train(tr_cfg, B, T, 2 if SMOKE else 5)
mem = bench.bench_activation_memory(tr_cfg, B, T)
names = ["numpy", "numba", "numba-ternary"]
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
# each step split into the float32 GEMMs every variant with exact gradients needs (measured alone,
# in the same run) and everything else; the GEMM part is the floor no kernel here can go under
floor = (tr["gemm forward"]["median"] + tr["gemm backward"]["median"]) * 1e3
steps = [tr[k]["step"]["median"] * 1e3 for k in names]
ax[0].barh(names, [floor] * 3, color="tab:gray", label="float32 GEMMs (forward + STE backward)")
ax[0].barh(names, [s - floor for s in steps], left=floor, color="tab:blue", label="everything else")
ax[0].set_xlabel("ms per training step"); ax[0].invert_yaxis(); ax[0].legend(loc="lower right", fontsize=8)
c, f = mem["caching"], mem["fused"]
x = np.arange(3)
ax[1].bar(x - 0.2, [mib(c["bitlinear_bytes"]), mib(c["cache_bytes"]), mib(c["peak_bytes"])], 0.4, label="caching x~")
ax[1].bar(x + 0.2, [mib(f["bitlinear_bytes"]), mib(f["cache_bytes"]), mib(f["peak_bytes"])], 0.4, label="fused recompute")
ax[1].set_xticks(x, ["BitLinear caches", "all caches", "tracemalloc peak"]); ax[1].set_ylabel("MiB"); ax[1].legend()
plt.tight_layout(); plt.show()
for k in names:
    print(f"{k:13s} {bench.fmt_ms(tr[k]['step'])} per step, {tr[k]['tok_s']:.0f} tok/s")
print(f"float32 GEMMs alone: {floor:.1f} ms, so no variant with float products can beat the reference "
      f"by more than {steps[0] / floor:.1f}x")
print(f"numba step vs the NumPy reference: {steps[0] / steps[1]:.2f}x; the GEMMs are {floor / steps[0]:.0%} "
      f"of the reference step")
print(f"activation memory saved by fused recompute: BitLinear caches {100 * mem['bitlinear_saving']:.0f}%, "
      f"all caches {100 * mem['cache_saving']:.0f}%, peak {100 * mem['peak_saving']:.0f}%")

# %% [markdown]
# ## 8. Where this stands
#
# * The add/subtract kernels are exact and contain no multiply; decoding is where 2-bit weights pay:
#   the GEMV and the engine read 16× fewer weight bytes than float32 (2 bits instead of 32). With AVX-512
#   (versions 4 and 5) decoding is then bound by reading weights; with AVX2 alone (version 8) the core's
#   instructions bind first, ~100 per 1024 weights (section 3g).
# * Training is not: its GEMMs are compute-bound, and one AVX-512 FMA instruction does 16 float32
#   multiply-adds — about what VPSADBW's additions manage on ternary weights. So
#   the `ternary` training variant is no faster than float BLAS here, and a step's float GEMMs
#   (the forward and the two STE backward products, E5) set its floor (printed by the benchmark).
# * Full-size numbers: `python -m kernels_numba.bench` (GEMV 4096², 370M decode, memory, training
#   step, activation memory), `python -m kernels_numba.products N` for version N alone, and
#   `python -m kernels_numba.budget` for version 8's instruction count and the core's rate on it;
#   `python -m kernels_numba.step_profile` splits a training step into its phases, and
#   `python -m kernels_numba.step_memory` measures its peak resident memory in fresh processes.
