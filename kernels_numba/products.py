"""Ternary matrix products with additions only: acc = X_q @ Wt.T, int8 in, exact int32 out (E4).

Numbered versions in the llm.c manner, each validated against the NumPy reference before it is
timed (`python -m kernels_numba.products N`):

  version 0  NumPy integer reference (an int64 matmul of the unpacked codes; the oracle, nothing more)
  version 1  plain Numba loops over unpacked int8 codes: `if w == +1: acc += x elif w == -1: acc -= x`
  version 2  lookup tables after T-MAC / bitnet.cpp TL2: five weights per byte (base 3), one table of
             the 243 possible signed sums of each five activations, built with additions; a row is
             then one table lookup + one add per five weights
  version 3  the bit-plane layout of packing.py with SWAR: 8 byte lanes per uint64, masks made by
             shifts and subtractions, bytes summed into 16- then 32-bit lanes (portable: any CPU)
  version 4  the same planes read as AVX-512 mask registers, bytes summed by VPSADBW (simd.py writes
             that loop in LLVM IR); 6 instructions per 64 weights instead of ~2 per weight
  version 5  the same planes against the activations cut into 8 bit planes, counted by VPOPCNTQ
             (simd.py): 3 instructions per 64 weights, no mask registers
  version 6  lookup tables again (T-MAC), now over the same planes: each task turns its rows' plane
             words into one base-3 code per 3 weights, and every token gets a table of the 27 signed
             sums of each 3 activations; one VPERMW then looks up 32 rows x 3 weights (simd.py).
             For many tokens at once: Engine.prefill runs it on long prompts
  version 7  version 6 for AVX2 (no VPERMW): a 4-bit code per 2 weights, and per token and group
             the low- and high-nibble sums of the 2 activations as two 16-byte tables; two VPSHUFB
             look up 32 rows x 2 weights, one per nibble (simd.py). Engine.prefill on AVX2 CPUs
  version 8  version 7's codes stored, two per byte (PackedPairs: 2 bits per weight, as the planes,
             in another order), so that one token pays no derivation: a GEMV of one load, two ANDs
             and a shift per 32 rows x 4 weights, then four VPSHUFB and four VPADDB. An Engine of layout
             "pairs" runs it for every product: the default on AVX2 CPUs without AVX-512

The public API runs the best version this CPU has (BEST for one token, BEST_TOKENS for several):
5 with AVX-512 VPOPCNTDQ, else 4 with AVX-512BW, else 5 / 4 with AVX2, else 3 (all give the same
integers). Versions 6 and 7 build tables per activation (21 and 16 bytes) and derive the codes at
every call, so they pay only where a caller reuses their buffers over many products (Engine.prefill);
a single call through the public API is faster with version 5 or 4. Version 8 reads its own layout
(pack_pairs), which the public API's PackedTernary is not: the Engine holds it.

Shapes: Wt (out, in) ternary int8; x_q (in,) int8 -> (out,) int32; X_q (n, in) int8 -> (n, out) int32.
No inner loop multiplies: tests/test_kernels_matmul.py reads the LLVM IR and machine code of
versions 1-8 to prove it.
"""
import dataclasses
import sys
import time

import numba
import numpy as np
from numba import njit, prange

from . import simd
from .packing import (BLOCK, LUT_GROUP, PackedTernary, activation_words, check_activations, n_blocks, pack_base3,
                      pack_ternary)
from .simd import (LOOKUP_TOKENS, NIBBLE_ROWS, NIBBLE_TOKENS, PAIR_BLOCKS, ROWS, TOKENS, bit_planes, group_tables, lookup_chunk, masked_sad,
                   masked_sad_tokens, nibble_chunk, nibble_tables, pair_chunk, pair_chunk1, sliced_popcount, sliced_popcount_rows,
                   sliced_popcount_tokens, transpose_blocks)

U64 = np.uint64
ONES = U64(0x0101010101010101)      # the low bit of each byte lane
HIGHS = U64(0x8080808080808080)     # the high bit of each byte lane
LO8 = U64(0x00FF00FF00FF00FF)       # even bytes -> four 16-bit lanes
LO16 = U64(0x0000FFFF0000FFFF)      # even 16-bit lanes -> two 32-bit lanes
LO32 = U64(0x00000000FFFFFFFF)


# ----------------------------------------------------------------------------
# version 0: the NumPy reference

def matmul_v0(Wt, X_q):
    """(n, in) int8 x (out, in) int8 -> (n, out) int32, by an exact int64 matmul (the oracle)."""
    return (X_q.astype(np.int64) @ Wt.T.astype(np.int64)).astype(np.int32)


# ----------------------------------------------------------------------------
# version 1: plain loops, add or subtract

@njit(parallel=True, cache=True)
def _v1_kernel(Wt, X_q, out):
    R, K = Wt.shape
    for r in prange(R):
        for t in range(X_q.shape[0]):
            acc = np.int32(0)
            for k in range(K):
                w = Wt[r, k]
                if w == 1:
                    acc += np.int32(X_q[t, k])
                elif w == -1:
                    acc -= np.int32(X_q[t, k])
            out[t, r] = acc


def matmul_v1(Wt, X_q):
    out = np.empty((X_q.shape[0], Wt.shape[0]), np.int32)            # (n, out)
    _v1_kernel(Wt, X_q, out)
    return out


# ----------------------------------------------------------------------------
# version 2: lookup tables (TL2 / T-MAC idea), 1.6 bits per weight

@njit(cache=True)
def _v2_tables(x, n_grp, tables):
    """tables[g, code] = sum_k (digit_k(code) - 1) * x[5g + k], built by additions only:
    the table for k+1 digits is three shifted copies of the table for k digits, minus / plus x_k."""
    n = x.shape[0]
    for g in range(n_grp):
        tables[g, 0] = 0
        size = 1                                                     # entries filled so far (3^k)
        for k in range(LUT_GROUP):
            j = g * LUT_GROUP + k
            xk = np.int32(x[j]) if j < n else np.int32(0)
            for e in range(size):                                    # digit k = 0, 1, 2 -> -x_k, 0, +x_k
                base = tables[g, e]
                tables[g, e + size + size] = base + xk
                tables[g, e + size] = base
                tables[g, e] = base - xk
            size = size + size + size


@njit(parallel=True, cache=True)
def _v2_rows(codes, tables, out_row):
    """tables (G, 256) is read through a flat view with a running base, so that no index is
    computed by a multiplication either (g * 256 would be one)."""
    R, G = codes.shape
    flat = tables.ravel()
    for r in prange(R):
        acc = np.int32(0)
        base = 0
        for g in range(G):
            acc += flat[base + codes[r, g]]
            base += 256
        out_row[r] = acc


def prepare_v2(Wt):
    return pack_base3(Wt)


def matmul_v2(codes, X_q):
    n_grp = codes.shape[1]
    tables = np.empty((n_grp, 256), np.int32)                        # (groups, 243 used)
    out = np.empty((X_q.shape[0], codes.shape[0]), np.int32)
    for t in range(X_q.shape[0]):                                    # one table set per token
        _v2_tables(X_q[t], n_grp, tables)
        _v2_rows(codes, tables, out[t])
    return out


# ----------------------------------------------------------------------------
# version 3: bit planes + SWAR (see packing.py for the layout and the offset-binary trick)

@njit(inline="always")
def _byte_mask(plane, i):
    """0xFF in byte lane j where bit (8j + i) of `plane` is set, else 0x00: shift, and, subtract, xor.
    Per byte 0x80 - t is 0x80 or 0x7F (never borrows from the next byte); xor 0x80 gives 0x00 or 0xFF."""
    t = (plane >> U64(i)) & ONES                                     # 0x01 or 0x00 per byte
    return (HIGHS - t) ^ HIGHS


@njit(inline="always")
def _pair_sums(v):
    """Eight bytes -> four 16-bit lanes holding the sums of byte pairs (each <= 510)."""
    return (v & LO8) + ((v >> U64(8)) & LO8)


@njit(inline="always")
def _word(xw, nz, neg, i):
    """Selected offset-binary bytes of one activation word: u (+1), ~u (-1) or 0, as pair sums."""
    return _pair_sums((xw ^ _byte_mask(neg, i)) & _byte_mask(nz, i))


@njit(inline="always")
def _fold(s16):
    """Four 16-bit lanes (each < 2^16) -> two 32-bit lanes."""
    return (s16 & LO16) + ((s16 >> U64(16)) & LO16)


@njit(inline="always")
def _finish(acc, offset):
    return np.int32(np.int64((acc & LO32) + (acc >> U64(32))) - offset)


@njit(inline="always")
def v3_row_dot(xw, nzr, ngr, offset):
    """One row's planes nzr/ngr (NB,) against one token's activation words xw (8, NB) -> int32."""
    x0, x1, x2, x3, x4, x5, x6, x7 = xw[0], xw[1], xw[2], xw[3], xw[4], xw[5], xw[6], xw[7]
    acc = U64(0)                                                     # two 32-bit lanes
    for b in range(nzr.shape[0]):                                    # vectorized over blocks
        nz, ng = nzr[b], ngr[b]
        s16 = (_word(x0[b], nz, ng, 0) + _word(x1[b], nz, ng, 1) + _word(x2[b], nz, ng, 2)
               + _word(x3[b], nz, ng, 3) + _word(x4[b], nz, ng, 4) + _word(x5[b], nz, ng, 5)
               + _word(x6[b], nz, ng, 6) + _word(x7[b], nz, ng, 7))   # 16-bit lanes <= 8 * 510
        acc += _fold(s16)
    return _finish(acc, offset)


@njit(parallel=True, fastmath=True, cache=True)
def _v3_matvec_kernel(nonzero, negative, offset, xw, out):
    """nonzero/negative (R, NB) uint64, offset (R,), xw (8, NB) activation words -> out (R,) int32."""
    for r in prange(nonzero.shape[0]):
        out[r] = v3_row_dot(xw, nonzero[r], negative[r], offset[r])


ROWS_PER_TASK = 16


@njit(parallel=True, fastmath=True, cache=True)
def _v3_matmul_kernel(nonzero, negative, offset, xw, out):
    """xw (n, 8, NB) activation words -> out (n, R) int32. The byte masks of a row are expanded once
    into a scratch buffer and reused for all n tokens (the GEMM's advantage over n GEMVs)."""
    R, NB = nonzero.shape
    n = xw.shape[0]
    n_tasks = (R + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_tasks):
        zm = np.empty((8, NB), np.uint64)                            # expanded masks of one row
        nm = np.empty((8, NB), np.uint64)
        for r in range(task * ROWS_PER_TASK, min(R, (task + 1) * ROWS_PER_TASK)):
            for i in range(8):
                for b in range(NB):
                    zm[i, b] = _byte_mask(nonzero[r, b], i)
                    nm[i, b] = _byte_mask(negative[r, b], i)
            off = offset[r]
            for t in range(n):
                acc = U64(0)
                xt = xw[t]
                for b in range(NB):
                    s16 = (_pair_sums((xt[0, b] ^ nm[0, b]) & zm[0, b]) + _pair_sums((xt[1, b] ^ nm[1, b]) & zm[1, b])
                           + _pair_sums((xt[2, b] ^ nm[2, b]) & zm[2, b]) + _pair_sums((xt[3, b] ^ nm[3, b]) & zm[3, b])
                           + _pair_sums((xt[4, b] ^ nm[4, b]) & zm[4, b]) + _pair_sums((xt[5, b] ^ nm[5, b]) & zm[5, b])
                           + _pair_sums((xt[6, b] ^ nm[6, b]) & zm[6, b]) + _pair_sums((xt[7, b] ^ nm[7, b]) & zm[7, b]))
                    acc += _fold(s16)
                out[t, r] = _finish(acc, off)


TOKEN_TILE = 256
MANY_TOKENS = 64          # from this many rows of X on, the token-vectorized kernel is used (measured)


@njit(parallel=True, cache=True)
def _words_tokens_kernel(X_q, out8):
    """Offset-binary bytes of X_q (n, K) int8 into the uint8 view (n_tiles, 8 * NB, tile * 8) of the
    token-major words: token t = k * tile + j, column c = 64b + 8i + byte -> [k, 8b + i, 8j + byte]."""
    n, K = X_q.shape
    tile = out8.shape[2] >> 3
    for t in prange(n):
        k = t // tile
        jb = (t - k * tile) << 3
        for c in range(K):
            out8[k, ((c >> 6) << 3) + ((c >> 3) & 7), jb + (c & 7)] = np.uint8(np.int32(X_q[t, c]) + 128)


def activation_words_tokens_last(X_q, n_blk):
    """int8 (n, in) -> uint64 (n_tiles, 8 * n_blocks, tile): word (8b + i) of every token, tokens
    innermost in tiles of up to TOKEN_TILE (padding is zeros; padded tokens' results are never stored)."""
    n = X_q.shape[0]
    tile = min(TOKEN_TILE, -(-n // 8) * 8)                           # no tile larger than n needs
    out = np.zeros((-(-n // tile), 8 * n_blk, tile), np.uint64)
    _words_tokens_kernel(X_q, out.view(np.uint8))
    return out


@njit(parallel=True, fastmath=True, cache=True)
def _v3_matmul_tokens_kernel(nonzero, negative, offset, xw, out):
    """xw (n_tiles, 8 * NB, tile) activation words, tokens innermost -> out (n, R) int32.
    The 16 byte masks of one (row, block) stay in registers while the loop runs over a tile of
    tokens: 2 ops of mask work per word instead of 8 in the GEMV."""
    R, NB = nonzero.shape
    n = out.shape[0]
    n_tiles, _, tile = xw.shape
    for r in prange(R):
        acc = np.empty(tile, np.uint64)
        for k in range(n_tiles):
            acc[:] = 0
            xk = xw[k]                                               # (8 * NB, tile), C-contiguous
            for b in range(NB):
                nz, ng = nonzero[r, b], negative[r, b]
                z0, z1, z2, z3 = _byte_mask(nz, 0), _byte_mask(nz, 1), _byte_mask(nz, 2), _byte_mask(nz, 3)
                z4, z5, z6, z7 = _byte_mask(nz, 4), _byte_mask(nz, 5), _byte_mask(nz, 6), _byte_mask(nz, 7)
                m0, m1, m2, m3 = _byte_mask(ng, 0), _byte_mask(ng, 1), _byte_mask(ng, 2), _byte_mask(ng, 3)
                m4, m5, m6, m7 = _byte_mask(ng, 4), _byte_mask(ng, 5), _byte_mask(ng, 6), _byte_mask(ng, 7)
                w = b << 3
                x0, x1, x2, x3 = xk[w], xk[w + 1], xk[w + 2], xk[w + 3]
                x4, x5, x6, x7 = xk[w + 4], xk[w + 5], xk[w + 6], xk[w + 7]
                for j in range(tile):                                # vectorized over tokens
                    s16 = (_pair_sums((x0[j] ^ m0) & z0) + _pair_sums((x1[j] ^ m1) & z1)
                           + _pair_sums((x2[j] ^ m2) & z2) + _pair_sums((x3[j] ^ m3) & z3)
                           + _pair_sums((x4[j] ^ m4) & z4) + _pair_sums((x5[j] ^ m5) & z5)
                           + _pair_sums((x6[j] ^ m6) & z6) + _pair_sums((x7[j] ^ m7) & z7))
                    acc[j] += _fold(s16)
            off = offset[r]
            t0 = k * tile
            for j in range(min(tile, n - t0)):
                out[t0 + j, r] = _finish(acc[j], off)


def prepare_v3(Wt):
    return pack_ternary(Wt)


def matmul_v3(p, X_q):
    n = X_q.shape[0]
    if n >= MANY_TOKENS:                                             # prefill / training: vectorize over tokens
        out = np.empty((n, p.shape[0]), np.int32)                    # (n, out)
        _v3_matmul_tokens_kernel(p.nonzero, p.negative, p.offset,
                                 activation_words_tokens_last(X_q, p.n_blocks), out)
        return out
    xw = activation_words(X_q, p.n_blocks)                           # (n, in) -> (n, 8, NB)
    out = np.empty((n, p.shape[0]), np.int32)                        # (n, out)
    if n == 1:
        _v3_matvec_kernel(p.nonzero, p.negative, p.offset, xw[0], out[0])
    else:
        _v3_matmul_kernel(p.nonzero, p.negative, p.offset, xw, out)
    return out


# ----------------------------------------------------------------------------
# version 4: the same bit planes, read by AVX-512 mask registers + VPSADBW (simd.py, LLVM IR)

@njit(inline="always")
def v4_byte_position(c):
    """Where column c = 64b + 8i + j goes in version 4's activation bytes: 64b + 8j + i, i.e. each
    8x8 byte block transposed, so that byte k of a block sits under bit k of the plane words."""
    return (c & ~63) | ((c & 7) << 3) | ((c >> 3) & 7)


@njit(cache=True)
def _bytes_kernel(X_q, out):
    """out[t, v4_byte_position(c)] = X_q[t, c] XOR 0x80 (offset binary): the bytes in column order,
    then each 64-byte block transposed by one shuffle (simd.transpose_blocks)."""
    n, K = X_q.shape
    row = np.zeros(out.shape[1], np.uint8)                           # padding columns stay 0
    for t in range(n):                                               # serial: a thread wake-up costs more
        for c in range(K):                                           # vectorized
            row[c] = np.uint8(np.int32(X_q[t, c]) + 128)
        transpose_blocks(row, out[t])


def activation_bytes(X_q, n_blk, row_multiple=1):
    """int8 (n, in) -> uint8 (n rounded up to row_multiple, 64 * n_blocks) for version 4; padding is
    zeros (padded columns meet zero weights, padded tokens' results are never stored)."""
    n = X_q.shape[0]
    out = np.zeros((-(-n // row_multiple) * row_multiple, n_blk * BLOCK), np.uint8)
    _bytes_kernel(X_q, out)
    return out


@njit(parallel=True, cache=True)
def _v4_matvec_kernel(nonzero, negative, offset, u, out):
    """u (1, 64 NB) activation bytes -> out (R,) int32."""
    for r in prange(nonzero.shape[0]):
        out[r] = np.int32(np.int64(masked_sad(u, 0, nonzero, negative, r)) - offset[r])


@njit(inline="always")
def v4_row_tokens(u, n_tok, nonzero, negative, offset, r, out):
    """out[t, r] = row r . token t for t < n_tok, TOKENS tokens per call (u padded to TOKENS rows)."""
    for t in range(0, n_tok, TOKENS):
        sums = masked_sad_tokens(u, t, nonzero, negative, r)
        for j in range(min(TOKENS, n_tok - t)):
            out[t + j, r] = np.int32(np.int64(sums[j]) - offset[r])


@njit(parallel=True, cache=True)
def _v4_matmul_kernel(nonzero, negative, offset, u, out):
    """u (n padded to TOKENS, 64 NB) -> out (n, R) int32; TOKENS tokens share each block's masks."""
    for r in prange(nonzero.shape[0]):
        v4_row_tokens(u, out.shape[0], nonzero, negative, offset, r, out)


def prepare_v4(Wt):
    return pack_ternary(Wt)


def packed_product(p, X_q, prepare, matvec_kernel, matmul_kernel):
    """Versions 4 and 5: the activations laid out by prepare(X_q, n_blocks, row multiple), then the
    one-token kernel (a GEMV) or the TOKENS-at-a-time kernel -> int32 (n, out)."""
    n = X_q.shape[0]
    out = np.empty((n, p.shape[0]), np.int32)                        # (n, out)
    if n == 1:
        matvec_kernel(p.nonzero, p.negative, p.offset, prepare(X_q, p.n_blocks, 1), out[0])
    else:
        matmul_kernel(p.nonzero, p.negative, p.offset, prepare(X_q, p.n_blocks, TOKENS), out)
    return out


def matmul_v4(p, X_q):
    return packed_product(p, X_q, activation_bytes, _v4_matvec_kernel, _v4_matmul_kernel)


# ----------------------------------------------------------------------------
# version 5: the same bit planes against bit-sliced activations, counted by VPOPCNTQ (simd.py)

@njit(cache=True)
def planes_kernel(u, planes):
    """planes[t] = the 8 bit planes of every block of u[t] (simd.bit_planes), for each token row t."""
    for t in range(u.shape[0]):                                      # serial: a thread wake-up costs more
        bit_planes(u[t], planes[t])


def activation_planes(X_q, n_blk, row_multiple=1):
    """int8 (n, in) -> uint64 (n rounded up to row_multiple, n_blocks, 8): version 4's activation
    bytes, each 64-byte block cut into its 8 bit planes (the same bytes, transposed bit by bit)."""
    u = activation_bytes(X_q, n_blk, row_multiple)                   # (n', 64 NB)
    planes = np.empty((u.shape[0], n_blk, 8), np.uint64)             # (n', NB, 8)
    planes_kernel(u, planes)
    return planes


V5_ROWS_MAX_BLOCKS = 128  # rows of up to 128 blocks (8192 weights) go ROWS at a time, longer ones one by one


@njit(inline="always")
def v5_gemv_rows(planes, nonzero, negative, offset, r_begin, r_end, out):
    """out[r] = row r . the one token of planes (1, NB, 8), for r_begin <= r < r_end: ROWS rows per
    call when there are ROWS of them (they share each block's planes) and they are short, else one at
    a time. Short rows gain (the per-row work is a large share of them), long ones lose: measured,
    alternated, GB/s of packed weights one row / four rows at a time: 49152 x 4096 36.9 / 46.9,
    24576 x 8192 46.2 / 47.5, 12288 x 16384 44.8 / 30.0 (eight streams of long rows at once)."""
    if r_end - r_begin == ROWS and nonzero.shape[1] <= V5_ROWS_MAX_BLOCKS:
        sums = sliced_popcount_rows(planes, 0, nonzero, negative, r_begin)
        for i in range(ROWS):
            out[r_begin + i] = np.int32(np.int64(sums[i]) - offset[r_begin + i])
    else:
        for r in range(r_begin, r_end):
            out[r] = np.int32(np.int64(sliced_popcount(planes, 0, nonzero, negative, r)) - offset[r])


@njit(parallel=True, cache=True)
def _v5_matvec_kernel(nonzero, negative, offset, planes, out):
    """planes (1, NB, 8) bit planes of one token -> out (R,) int32, ROWS rows per task. Measured on a
    decoding step's 97 GEMVs (alternated, 60 rounds, twice): 2.65 / 2.57 ms one row per call,
    2.47 / 2.33 ms four (2 rows 2.52 / 2.40, 8 rows 2.63 / 2.63)."""
    R = nonzero.shape[0]
    for task in prange(-(-R // ROWS)):
        v5_gemv_rows(planes, nonzero, negative, offset, task * ROWS, min(R, (task + 1) * ROWS), out)


@njit(inline="always")
def v5_row_tokens(planes, t_begin, t_end, nonzero, negative, offset, r, out):
    """out[t, r] = row r . token t for t_begin <= t < t_end, TOKENS tokens per call (t_begin a multiple
    of TOKENS, planes padded to TOKENS rows)."""
    for t in range(t_begin, t_end, TOKENS):
        sums = sliced_popcount_tokens(planes, t, nonzero, negative, r)
        for j in range(min(TOKENS, t_end - t)):
            out[t + j, r] = np.int32(np.int64(sums[j]) - offset[r])


V5_ROWS_PER_TASK = 64     # a thread's rows: their plane words stay in L1 while a token tile passes
V5_TOKEN_TILE = 8         # tokens per tile: their bit planes stay in L1 across the task's rows


@njit(parallel=True, cache=True)
def _v5_matmul_kernel(nonzero, negative, offset, planes, out):
    """planes (n padded to TOKENS, NB, 8) -> out (n, R) int32; TOKENS tokens share each block's plane
    words. Tiled: each task takes V5_ROWS_PER_TASK rows through the tokens V5_TOKEN_TILE at a time,
    so that both operands come from L1 (measured 1.3-1.5x the untiled loop for 512 tokens)."""
    R = nonzero.shape[0]
    n = out.shape[0]
    for task in prange(-(-R // V5_ROWS_PER_TASK)):
        r_end = min(R, (task + 1) * V5_ROWS_PER_TASK)
        for t0 in range(0, n, V5_TOKEN_TILE):
            for r in range(task * V5_ROWS_PER_TASK, r_end):
                v5_row_tokens(planes, t0, min(n, t0 + V5_TOKEN_TILE), nonzero, negative, offset, r, out)


def matmul_v5(p, X_q):
    return packed_product(p, X_q, activation_planes, _v5_matvec_kernel, _v5_matmul_kernel)


# ----------------------------------------------------------------------------
# version 6: lookup tables over the same bit planes (T-MAC idea), for many tokens at once

LOOKUP_GROUPS = 22        # lookup groups per 64-weight block: bits 3m..3m+2 for m < 21, and bit 63 alone
LOOKUP_CHUNK = 85         # groups summed in int16 before widening: 85 groups * 3 * 128 = 32640 < 2^15
LOOKUP_ROW_BLOCKS = 16    # 32-row blocks per task: their codes stay in L2 while every token passes
PAD_CODE = 13             # the code of three zero weights (digits 1, 1, 1)


def _codes_of_bits():
    """(64,) uint8: the base-3 code of a group from its 3 nonzero bits (low) and 3 negative bits (high).
    Weight i of the group (bit i) has digit 2 / 1 / 0 for +1 / 0 / -1, and the code is
    9 digit_0 + 3 digit_1 + digit_2 (< 27). Impossible patterns (negative without nonzero) get PAD_CODE."""
    codes = np.full(64, PAD_CODE, np.uint8)
    for nz in range(8):
        for ng in range(8):
            if ng & ~nz == 0:
                d = [1 + ((nz >> i) & 1) - 2 * ((ng >> i) & 1) for i in range(3)]
                codes[nz | (ng << 3)] = 9 * d[0] + 3 * d[1] + d[2]
    return codes


CODES_OF_BITS = _codes_of_bits()


@njit(inline="always")
def bit_order_row(x, n_bytes):
    """One token's int8 activations (K,) -> uint8 (n_bytes,) in bit order (byte k of a block under bit
    k of the plane words: version 4's one-shuffle-per-block transpose); padding columns are 0."""
    row = np.zeros(n_bytes, np.uint8)
    row[:x.shape[0]] = x.view(np.uint8)
    xb = np.empty(n_bytes, np.uint8)
    transpose_blocks(row, xb)
    return xb


@njit(parallel=True, cache=True)
def _lookup_tables_kernel(X_q, tables):
    """tables[t] = token t's lookup tables (simd.group_tables): 22 tables per block of its bytes."""
    n_bytes = tables.shape[1] // LOOKUP_GROUPS * BLOCK
    for t in prange(X_q.shape[0]):
        group_tables(bit_order_row(X_q[t], n_bytes), tables[t])


def token_tables(name, X_q, n_blk, groups, dtype, kernel, buffer=None, pad=LOOKUP_TOKENS):
    """Versions 6-8: X_q int8 (n, in) -> dtype (n rounded up to `pad` tokens, groups * n_blk, 32),
    every token's tables filled by kernel(X_q, tables); the padded tokens' tables are 0. A caller that
    builds many passes a `buffer` (dtype, at least that many elements) to be reused: a fresh 30 MB
    array costs more in page faults than the tables cost to compute (measured: 3.5 against 1.5 ms)."""
    if X_q.dtype != np.int8 or X_q.ndim != 2 or X_q.shape[1] > n_blk * BLOCK:
        raise ValueError(f"{name}: X_q must be int8 (n, in) with in <= 64 * n_blocks = {n_blk * BLOCK}, "
                         f"got {X_q.dtype} {X_q.shape}")
    X_q = np.ascontiguousarray(X_q)
    n = X_q.shape[0]
    shape = (-(-n // pad) * pad, n_blk * groups, 32)
    tables = np.empty(shape, dtype) if buffer is None else buffer[:shape[0] * shape[1] * 32].reshape(shape)
    tables[n:] = 0
    kernel(X_q, tables)
    return tables


def lookup_tables(X_q, n_blk, buffer=None):
    """int8 (n, in) -> int16 (n rounded up to LOOKUP_TOKENS, 22 n_blocks, 32): every token's version-6
    tables, 21 bytes per activation (token_tables says more)."""
    return token_tables("lookup_tables", X_q, n_blk, LOOKUP_GROUPS, np.int16, _lookup_tables_kernel, buffer)


@njit(inline="always")
def lookup_codes(nonzero, negative, r_begin, n_blocks_used, codes_of_bits, codes):
    """codes[rb, 22 b + m, i] = the base-3 code of group m of block b of row r_begin + 32 rb + i, for
    rb < n_blocks_used, read from the plane words (3 nonzero and 3 negative bits -> codes_of_bits);
    rows past the matrix get PAD_CODE (they add 0 and are never stored)."""
    R, NB = nonzero.shape
    for rb in range(n_blocks_used):
        for i in range(32):
            r = r_begin + rb * 32 + i
            if r >= R:
                for g in range(codes.shape[1]):
                    codes[rb, g, i] = PAD_CODE
                continue
            for b in range(NB):
                nz, ng = nonzero[r, b], negative[r, b]
                for m in range(LOOKUP_GROUPS):
                    s = U64(3 * m)
                    codes[rb, b * LOOKUP_GROUPS + m, i] = codes_of_bits[((nz >> s) & U64(7)) | (((ng >> s) & U64(7)) << U64(3))]


LOOKUP_MIN_TASKS = 4      # narrow matrices split the tokens too, so that both threads get work


@njit(cache=True)
def table_tasks(R, n, block_rows, row_blocks):
    """(row groups, token parts) of version 6's or 7's tasks for n tokens and R rows: groups of
    row_blocks blocks of block_rows rows; a matrix of fewer than LOOKUP_MIN_TASKS groups also splits
    the tokens into parts of whole 4-token calls (each part derives its codes again)."""
    n_groups = -(-(-(-R // block_rows)) // row_blocks)
    return n_groups, min(-(-n // LOOKUP_TOKENS), -(-LOOKUP_MIN_TASKS // n_groups))


def lookup_codes_bytes(R, n, n_blk):
    """Bytes of the codes scratch that version 6 needs for n tokens and R rows of n_blk blocks."""
    n_groups, parts = table_tasks(R, n, 32, LOOKUP_ROW_BLOCKS)
    return n_groups * parts * LOOKUP_ROW_BLOCKS * n_blk * LOOKUP_GROUPS * 32


@njit(parallel=True, cache=True)
def _v6_matmul_kernel(nonzero, negative, codes_of_bits, tables, scratch, out):
    """tables (n padded to LOOKUP_TOKENS, 22 NB, 32) -> out (n, R) int32. Each task turns its
    LOOKUP_ROW_BLOCKS x 32 rows into codes once (into its part of `scratch`, uint8 of at least
    lookup_codes_bytes), then walks its tokens LOOKUP_TOKENS at a time and the groups LOOKUP_CHUNK at
    a time, all its row blocks per chunk, so that a chunk's tables come from L1 and the codes from L2."""
    R = nonzero.shape[0]
    n, G = out.shape[0], tables.shape[1]
    n_rb = -(-R // 32)
    n_groups, parts = table_tasks(R, n, 32, LOOKUP_ROW_BLOCKS)
    quads = -(-n // LOOKUP_TOKENS)
    all_codes = scratch[:n_groups * parts * LOOKUP_ROW_BLOCKS * G * 32].reshape(
        (n_groups * parts, LOOKUP_ROW_BLOCKS, G, 32))
    for task in prange(n_groups * parts):
        group, part = task // parts, task % parts
        r0 = group * LOOKUP_ROW_BLOCKS * 32
        n_own = min(LOOKUP_ROW_BLOCKS, n_rb - group * LOOKUP_ROW_BLOCKS)
        codes = all_codes[task]                                      # (LOOKUP_ROW_BLOCKS, G, 32), n_own used
        lookup_codes(nonzero, negative, r0, n_own, codes_of_bits, codes)
        acc = np.empty((LOOKUP_TOKENS, n_own * 32), np.int32)
        rows = min(n_own * 32, R - r0)
        for q in range(part * quads // parts, (part + 1) * quads // parts):
            t = q * LOOKUP_TOKENS
            acc[:] = 0
            for j0 in range(0, G, LOOKUP_CHUNK):
                for rb in range(n_own):
                    lookup_chunk(codes, tables, acc, rb, t, j0, min(G, j0 + LOOKUP_CHUNK))
            for k in range(min(LOOKUP_TOKENS, n - t)):
                for i in range(rows):
                    out[t + k, r0 + i] = acc[k, i]


def lookup_product(nonzero, negative, tables, out, scratch=None):
    """out (n, R) int32 = the tokens whose lookup_tables are `tables` times the packed rows. A caller
    that runs many passes a reused `scratch` (uint8, lookup_codes_bytes): fresh codes pages cost more
    than deriving the codes."""
    R, NB = nonzero.shape
    n = out.shape[0]
    if (negative.shape != nonzero.shape or out.shape != (n, R) or out.dtype != np.int32 or tables.ndim != 3
            or tables.shape[0] < -(-n // LOOKUP_TOKENS) * LOOKUP_TOKENS or tables.shape[1:] != (NB * LOOKUP_GROUPS, 32)):
        raise ValueError(f"lookup_product: tables {tables.shape} (from lookup_tables of {n} tokens and {NB} blocks) "
                         f"and out {out.shape} {out.dtype} (int32 ({n}, {R})) do not fit planes {nonzero.shape}")
    need = lookup_codes_bytes(R, n, NB)
    if scratch is None or scratch.size < need:
        scratch = np.empty(need, np.uint8)
    _v6_matmul_kernel(nonzero, negative, CODES_OF_BITS, tables, scratch, out)


def matmul_v6(p, X_q):
    """Version 6 for any number of tokens. It pays where its tables (21 bytes per activation) and
    codes are reused across many rows and calls: Engine.prefill keeps both buffers for a whole prompt."""
    out = np.empty((X_q.shape[0], p.shape[0]), np.int32)
    lookup_product(p.nonzero, p.negative, lookup_tables(X_q, p.n_blocks), out)
    return out


# ----------------------------------------------------------------------------
# version 7: lookup tables on AVX2 (simd.nibble_chunk): two VPSHUFB per 32 rows x 2 weights x 1 token

NIBBLE_GROUPS = 32        # groups per 64-weight block: bits 2m, 2m+1 of the plane words
NIBBLE_CHUNK = 128        # groups per nibble_chunk call: 4 tokens' tables (16 KiB) stay in L1; < 1024
NIBBLE_ROW_BLOCKS = 8     # blocks of NIBBLE_ROWS (32) rows per task: their codes (one byte per row and group) stay in L2


@njit(parallel=True, cache=True)
def _nibble_tables_kernel(X_q, tables):
    """tables[t] = token t's nibble tables (simd.nibble_tables): 32 tables per block of its bytes."""
    n_bytes = tables.shape[1] // NIBBLE_GROUPS * BLOCK
    for t in prange(X_q.shape[0]):
        nibble_tables(bit_order_row(X_q[t], n_bytes), tables[t])


def nibble_tables_of(X_q, n_blk, buffer=None, pad=NIBBLE_TOKENS):
    """int8 (n, in) -> uint8 (n rounded up to `pad`, 32 n_blocks, 32): every token's version-7 (and 8)
    tables, 16 bytes per activation (token_tables says more). Version 8's GEMV reads one token's: pad 1."""
    return token_tables("nibble_tables_of", X_q, n_blk, NIBBLE_GROUPS, np.uint8, _nibble_tables_kernel, buffer, pad)


@njit(inline="always")
def nibble_codes(nonzero, negative, r_begin, n_blocks_used, codes):
    """codes[rb, 32 b + m, i] = the two nonzero bits 2m, 2m+1 of block b of row r_begin + 32 rb + i,
    with its two negative bits above them (a 4-bit index, < 16), for rb < n_blocks_used; rows past
    the matrix get code 0 (zero weights: they add 0 and are never stored)."""
    R, NB = nonzero.shape
    for rb in range(n_blocks_used):
        for i in range(NIBBLE_ROWS):
            r = r_begin + rb * NIBBLE_ROWS + i
            if r >= R:
                for g in range(codes.shape[1]):
                    codes[rb, g, i] = 0
                continue
            for b in range(NB):
                nz, ng = nonzero[r, b], negative[r, b]
                for m in range(NIBBLE_GROUPS):
                    s = U64(2 * m)
                    codes[rb, b * NIBBLE_GROUPS + m, i] = ((nz >> s) & U64(3)) | (((ng >> s) & U64(3)) << U64(2))


def nibble_codes_bytes(R, n, n_blk):
    """Bytes of the codes scratch that version 7 needs for n tokens and R rows of n_blk blocks."""
    n_groups, parts = table_tasks(R, n, NIBBLE_ROWS, NIBBLE_ROW_BLOCKS)
    return n_groups * parts * NIBBLE_ROW_BLOCKS * n_blk * NIBBLE_GROUPS * NIBBLE_ROWS


@njit(parallel=True, cache=True)
def _v7_matmul_kernel(nonzero, negative, offset, tables, scratch, out):
    """tables (n padded to NIBBLE_TOKENS, 32 NB, 32) -> out (n, R) int32: version 6's task layout
    with blocks of NIBBLE_ROWS rows; each sum is versions 4 and 5's (u under +1, 255 - u under -1) less the offset."""
    R = nonzero.shape[0]
    n, G = out.shape[0], tables.shape[1]
    n_rb = -(-R // NIBBLE_ROWS)
    n_groups, parts = table_tasks(R, n, NIBBLE_ROWS, NIBBLE_ROW_BLOCKS)
    quads = -(-n // NIBBLE_TOKENS)
    all_codes = scratch[:n_groups * parts * NIBBLE_ROW_BLOCKS * G * NIBBLE_ROWS].reshape(
        (n_groups * parts, NIBBLE_ROW_BLOCKS, G, NIBBLE_ROWS))
    for task in prange(n_groups * parts):
        group, part = task // parts, task % parts
        r0 = group * NIBBLE_ROW_BLOCKS * NIBBLE_ROWS
        n_own = min(NIBBLE_ROW_BLOCKS, n_rb - group * NIBBLE_ROW_BLOCKS)
        codes = all_codes[task]                                      # (NIBBLE_ROW_BLOCKS, G, NIBBLE_ROWS), n_own used
        nibble_codes(nonzero, negative, r0, n_own, codes)
        acc = np.empty((NIBBLE_TOKENS, n_own * NIBBLE_ROWS), np.int32)
        rows = min(n_own * NIBBLE_ROWS, R - r0)
        for q in range(part * quads // parts, (part + 1) * quads // parts):
            t = q * NIBBLE_TOKENS
            acc[:] = 0
            for j0 in range(0, G, NIBBLE_CHUNK):
                for rb in range(n_own):
                    nibble_chunk(codes, tables, acc, rb, t, j0, min(G, j0 + NIBBLE_CHUNK))
            for k in range(min(NIBBLE_TOKENS, n - t)):
                for i in range(rows):
                    out[t + k, r0 + i] = np.int32(np.int64(acc[k, i]) - offset[r0 + i])


def nibble_product(nonzero, negative, offset, tables, out, scratch=None):
    """out (n, R) int32 = the tokens whose nibble_tables_of are `tables` times the packed rows (version 7);
    `scratch` as for version 6's lookup_product."""
    R, NB = nonzero.shape
    n = out.shape[0]
    if (negative.shape != nonzero.shape or offset.shape != (R,) or out.shape != (n, R) or out.dtype != np.int32
            or tables.ndim != 3 or tables.shape[0] < -(-n // NIBBLE_TOKENS) * NIBBLE_TOKENS
            or tables.shape[1:] != (NB * NIBBLE_GROUPS, 32)):
        raise ValueError(f"nibble_product: tables {tables.shape} (from nibble_tables_of {n} tokens and {NB} blocks) "
                         f"and out {out.shape} {out.dtype} (int32 ({n}, {R})) do not fit planes {nonzero.shape}")
    need = nibble_codes_bytes(R, n, NB)
    if scratch is None or scratch.size < need:
        scratch = np.empty(need, np.uint8)
    _v7_matmul_kernel(nonzero, negative, offset, tables, scratch, out)


def matmul_v7(p, X_q):
    """Version 7 for any number of tokens; like version 6 it pays where tables and codes are reused."""
    out = np.empty((X_q.shape[0], p.shape[0]), np.int32)
    nibble_product(p.nonzero, p.negative, p.offset, nibble_tables_of(X_q, p.n_blocks), out)
    return out


# ----------------------------------------------------------------------------
# version 8: version 7's codes stored, two per byte (2 bits per weight, as the planes), so that one
# token (a GEMV) or a few pay nothing to derive them: two VPSHUFB per 32 rows x 2 weights x 1 token

V8_CHUNK_PAIRS = 512      # pairs of groups per pair_chunk call: 1024 groups * 30 < 2^15
# pairs per call of the many-token kernel: 4 tokens' tables of 256 pairs (64 KiB) stay in L2 while the
# task's row blocks pass. Measured (AMD EPYC 7003, 2 threads, 512 tokens on 3072 x 1024, 5632 x 1024
# and 1024 x 2816, medians of 15 calls, 5 alternated process rounds): medians of the 15 rates 97 G
# weight-tokens/s at 64 pairs (version 7's 128 groups), 105 at 256, 107 at 512 (16-row blocks then);
# 512 rows per task or 128 instead of 256: equal within the noise
V8_TOKEN_PAIRS = 256


@dataclasses.dataclass(frozen=True)
class PackedPairs:
    """A ternary matrix (out, in) as version 8 reads it: codes (row blocks, 16 n_blocks, 32) uint8,
    at least ceil(out / 32) row blocks and a multiple of PAIR_BLOCKS, byte i of [rb, j] holding row
    32 rb + i's 4-bit codes (nonzero bits | negative bits << 2, version 7's) of groups 2j (low nibble)
    and 2j + 1 (high nibble); the same row offsets and scale as the PackedTernary it came from
    (`pack_pairs`). Rows past `out` have code 0 (zero weights). The kernels read it without bounds
    checks, so its shapes are checked once, here."""
    codes: np.ndarray       # (row blocks, 16 n_blocks, NIBBLE_ROWS) uint8
    offset: np.ndarray      # (out,) int64
    shape: tuple            # (out, in)
    scale: float = 1.0

    def __post_init__(self):
        c, (out, n_in) = self.codes, self.shape
        if not (isinstance(c, np.ndarray) and c.dtype == np.uint8 and c.ndim == 3 and c.flags.c_contiguous
                and c.shape[2] == NIBBLE_ROWS and c.shape[0] % PAIR_BLOCKS == 0 and NIBBLE_ROWS * c.shape[0] >= out
                and c.shape[1] == 16 * n_blocks(n_in) and isinstance(self.offset, np.ndarray)
                and self.offset.dtype == np.int64 and self.offset.shape == (out,)):
            raise ValueError(f"PackedPairs: codes {getattr(c, 'shape', None)} {getattr(c, 'dtype', None)} and offsets "
                             f"{getattr(self.offset, 'shape', None)} do not hold a {self.shape} matrix; make one with "
                             f"pack_pairs(pack_ternary(W))")

    @property
    def n_blocks(self):
        return self.codes.shape[1] // 16

    @property
    def nbytes(self):
        return self.codes.nbytes + self.offset.nbytes


@njit(parallel=True, cache=True)
def pair_codes_kernel(nonzero, negative, codes):
    """codes (row blocks >= ceil(R / 32), 16 NB, 32) uint8 <- the planes (R, NB): version 7's codes
    of each row block (nibble_codes), two groups per byte; blocks past the rows get code 0."""
    for rb in prange(codes.shape[0]):
        one = np.empty((1, 2 * codes.shape[1], NIBBLE_ROWS), np.uint8)   # (1, G, 32): one code per byte
        nibble_codes(nonzero, negative, NIBBLE_ROWS * rb, 1, one)
        for j in range(codes.shape[1]):
            for i in range(NIBBLE_ROWS):
                codes[rb, j, i] = one[0, 2 * j, i] | (one[0, 2 * j + 1, i] << np.uint8(4))


def pair_row_blocks(rows):
    """Row blocks of version 8's codes for `rows` rows: whole PAIR_BLOCKS blocks of NIBBLE_ROWS rows."""
    return -(-rows // (NIBBLE_ROWS * PAIR_BLOCKS)) * PAIR_BLOCKS


def pack_pairs(p, parts=1):
    """PackedTernary -> PackedPairs (version 8's layout of the same weights; the planes are not kept).
    parts > 1: the rows are `parts` equal segments (the Engine's gate and up halves), each padded to
    whole PAIR_BLOCKS blocks on its own, so that no block mixes two of them."""
    _check_packed(p)
    R, NB = p.nonzero.shape
    if parts < 1 or R % parts:
        raise ValueError(f"pack_pairs: {R} rows do not split into {parts} equal parts")
    part = R // parts
    per_part = pair_row_blocks(part)
    codes = np.empty((parts * per_part, 16 * NB, NIBBLE_ROWS), np.uint8)
    for k in range(parts):
        pair_codes_kernel(p.nonzero[k * part:(k + 1) * part], p.negative[k * part:(k + 1) * part],
                          codes[k * per_part:(k + 1) * per_part])
    return PackedPairs(codes, p.offset, p.shape, p.scale)


@njit(inline="always")
def pair_rows(codes, offset, tables, rb, first, n_rows, acc, out):
    """out[0, first + i] = row i of the PAIR_BLOCKS row blocks from rb on . the one token of tables
    - offset[first + i], for i < n_rows: all the pairs of groups through pair_chunk1, V8_CHUNK_PAIRS
    per call, before the 16-bit sums could overflow. acc (1, 32 PAIR_BLOCKS) int32 is scratch that the
    caller allocates once per launch (one allocation per 64 rows would be ~4500 per token of the
    370M shape)."""
    own = codes[rb:rb + PAIR_BLOCKS]                                 # (PAIR_BLOCKS, G / 2, 32)
    acc[:] = 0
    for j0 in range(0, own.shape[1], V8_CHUNK_PAIRS):
        pair_chunk1(own, tables, acc, 0, 0, j0, min(own.shape[1], j0 + V8_CHUNK_PAIRS))
    for i in range(n_rows):
        out[0, first + i] = np.int32(np.int64(acc[0, i]) - offset[first + i])


@njit(parallel=True, cache=True)
def _v8_matvec_kernel(codes, offset, tables, out):
    """tables (tokens, G, 32) whose token 0 is the one token -> out (1, R) int32, PAIR_BLOCKS row
    blocks per task, each summed over all its groups with its sums in registers."""
    R = offset.shape[0]
    acc = np.empty((codes.shape[0] // PAIR_BLOCKS, 1, NIBBLE_ROWS * PAIR_BLOCKS), np.int32)   # each task's scratch
    for task in prange(codes.shape[0] // PAIR_BLOCKS):
        rb = task * PAIR_BLOCKS
        first = NIBBLE_ROWS * rb
        pair_rows(codes, offset, tables, rb, first, min(NIBBLE_ROWS * PAIR_BLOCKS, R - first), acc[task], out)


@njit(inline="always")
def pair_task(codes, offset, tables, rb0, n_own, q0, q1, first, n_rows, acc, out):
    """out[t, first + i] = row i of the n_own row blocks from rb0 on . token t - offset[first + i],
    for the tokens t of the 4-token groups q0 <= q < q1 (t < out.shape[0]) and i < n_rows: per group
    of tokens, V8_TOKEN_PAIRS pairs of the tables at a time, one row block per pair_chunk call.
    acc (NIBBLE_TOKENS, >= 32 n_own) int32 is the caller's scratch; the tables of padded tokens are
    read, their sums never stored."""
    own = codes[rb0:rb0 + n_own]                                     # (n_own, G / 2, 32)
    n_pairs = own.shape[1]
    for q in range(q0, q1):
        t = q * NIBBLE_TOKENS
        acc[:] = 0
        for j0 in range(0, n_pairs, V8_TOKEN_PAIRS):
            for rb in range(n_own):
                pair_chunk(own, tables, acc, rb, t, j0, min(n_pairs, j0 + V8_TOKEN_PAIRS))
        for k in range(min(NIBBLE_TOKENS, out.shape[0] - t)):
            for i in range(n_rows):
                out[t + k, first + i] = np.int32(np.int64(acc[k, i]) - offset[first + i])


@njit(parallel=True, cache=True)
def _v8_matmul_kernel(codes, offset, tables, out):
    """tables (n padded to NIBBLE_TOKENS, G, 32) -> out (n, R) int32: version 7's tasks (NIBBLE_ROW_BLOCKS
    blocks of NIBBLE_ROWS rows, split by tokens too where they are few), pair_task in each."""
    R, n, n_rb = offset.shape[0], out.shape[0], codes.shape[0]
    n_groups, parts = table_tasks(R, n, NIBBLE_ROWS, NIBBLE_ROW_BLOCKS)
    quads = -(-n // NIBBLE_TOKENS)
    acc = np.empty((n_groups * parts, NIBBLE_TOKENS, NIBBLE_ROWS * NIBBLE_ROW_BLOCKS), np.int32)   # each task's scratch
    for task in prange(n_groups * parts):
        group, part = task // parts, task % parts
        rb0 = group * NIBBLE_ROW_BLOCKS
        n_own = min(NIBBLE_ROW_BLOCKS, n_rb - rb0)
        pair_task(codes, offset, tables, rb0, n_own, part * quads // parts, (part + 1) * quads // parts,
                  NIBBLE_ROWS * rb0, min(NIBBLE_ROWS * n_own, R - NIBBLE_ROWS * rb0), acc[task], out)


def pair_product(codes, offset, tables, out):
    """out (n, R) int32 = the tokens whose nibble_tables_of are `tables` times the rows of version 8's
    codes (row blocks, G / 2, 32) with their offsets (R,) (the tiled kernel: Engine.prefill's)."""
    n, R = out.shape
    if (codes.ndim != 3 or codes.dtype != np.uint8 or codes.shape[0] * NIBBLE_ROWS < R or codes.shape[0] % PAIR_BLOCKS
            or offset.shape != (R,) or out.dtype != np.int32 or tables.ndim != 3
            or tables.shape[0] < -(-n // NIBBLE_TOKENS) * NIBBLE_TOKENS or tables.shape[1:] != (2 * codes.shape[1], 32)):
        raise ValueError(f"pair_product: tables {tables.shape} (from nibble_tables_of {n} tokens) and out {out.shape} "
                         f"{out.dtype} (int32 ({n}, {R})) do not fit codes {codes.shape} {codes.dtype}")
    _v8_matmul_kernel(codes, offset, tables, out)


def matmul_v8(p, X_q):
    """Version 8: p a PackedPairs (pack_pairs); the GEMV kernel for one token, else the tiled one."""
    tables = nibble_tables_of(X_q, p.n_blocks, pad=1 if X_q.shape[0] == 1 else NIBBLE_TOKENS)
    out = np.empty((X_q.shape[0], p.shape[0]), np.int32)
    if X_q.shape[0] == 1:
        _v8_matvec_kernel(p.codes, p.offset, tables, out)
    else:
        pair_product(p.codes, p.offset, tables, out)
    return out


def prepare_v8(Wt):
    return pack_pairs(pack_ternary(Wt))


# What the public API runs here: BEST for one token (a GEMV), BEST_TOKENS for several (a GEMM).
# With AVX-512 the IR's own instructions decide (VPOPCNTQ: version 5, else version 4's masks). With
# AVX2 only (AMD EPYC 7003 "Milan", 2 threads, 2026-12-01, alternated, medians; version 3 was the
# choice before these measurements): 4096^2 GEMV 0.67 / 0.34 / 0.33 ms (versions 3 / 4 / 5), the
# 370M-shape decoding 31 / 83 / 108 tok/s at batch 1 and 35 / 141 / 116 tok/s at batch 8; a 2816 x
# 1024 GEMM of 8 tokens 37 / 41 / 33 G weight-tokens/s, of 128 tokens 42 / 38 / 33. Without AVX2
# (older x86, other architectures) nothing was measured: version 3, plain SWAR code, stays.
if simd.POPCNT:
    BEST, BEST_TOKENS = 5, 5
elif simd.AVAILABLE:
    BEST, BEST_TOKENS = 4, 4
elif simd.AVX2:
    BEST, BEST_TOKENS = 5, 4
else:
    BEST, BEST_TOKENS = 3, 3
MATMULS = {3: matmul_v3, 4: matmul_v4, 5: matmul_v5, 6: matmul_v6, 7: matmul_v7}


def cpu_vectors():
    """What decided BEST here, in words (the benches print it beside their figures)."""
    if simd.POPCNT:
        return "AVX-512 with VPOPCNTDQ"
    if simd.AVAILABLE:
        return "AVX-512BW without VPOPCNTDQ"
    return "AVX2, no AVX-512" if simd.AVX2 else "no AVX2"


def matmul_best(p, X_q):
    return MATMULS[BEST if X_q.shape[0] == 1 else BEST_TOKENS](p, X_q)


def best_gemv_kernel():
    """(kernel, prepare) of the GEMV the public API runs here, for timing the bare kernel:
    kernel(nonzero, negative, offset, prepare(x_q (1, in) int8, n_blocks), out (R,) int32)."""
    if BEST == 5:
        return _v5_matvec_kernel, activation_planes
    if BEST == 4:
        return _v4_matvec_kernel, activation_bytes
    return _v3_matvec_kernel, lambda X_q, n_blk: activation_words(X_q, n_blk)[0]


def layout_gemv(layout):
    """(pack, activations, kernel) of the GEMV that an Engine of this weight layout runs, for timing
    it bare: pack(PackedTernary) -> its weights, activations(x_q (1, in) int8, n_blocks) -> what the
    kernel reads, kernel(weights, activations, out (1, R) int32). "planes": best_gemv_kernel's;
    "pairs": version 8's."""
    if layout == "pairs":
        return (pack_pairs, lambda x_q, n_blk: nibble_tables_of(x_q, n_blk, pad=1),
                lambda w, tables, out: _v8_matvec_kernel(w.codes, w.offset, tables, out))
    kernel, prepare = best_gemv_kernel()
    return (lambda p: p), prepare, lambda p, acts, out: kernel(p.nonzero, p.negative, p.offset, acts, out[0])


# ----------------------------------------------------------------------------
# public API (the best version this CPU has: BEST; all give the same integers)

def _check_packed(p):
    if not isinstance(p, PackedTernary):
        raise TypeError(f"packed must come from kernels_numba.pack_ternary, got {type(p).__name__}")


def ternary_matvec(packed, x_q):
    """packed (out, in) ternary, x_q int8 (in,) -> int32 (out,) = Wt @ x_q, additions only."""
    _check_packed(packed)
    check_activations("x_q", x_q, packed.shape[1], ndim=1)
    return matmul_best(packed, x_q.reshape(1, -1))[0]


def ternary_matmul(packed, X_q):
    """packed (out, in) ternary, X_q int8 (n, in) -> int32 (n, out) = X_q @ Wt.T, additions only."""
    _check_packed(packed)
    check_activations("X_q", X_q, packed.shape[1], ndim=2)
    return matmul_best(packed, X_q)


# ----------------------------------------------------------------------------
# proof of "no multiplications": read the code the compiler produced

VECTOR_MULTIPLIES = ("vpmullq", "vpmulld", "vpmullw", "vpmuludq", "vpmuldq", "vpmulhw", "vpmulhuw",
                     "vpmaddubsw", "vpmaddwd", "vpdpbusd", "vpdpwssd", "vmulps", "vmulpd", "vmulss",
                     "vmulsd", "vfmadd", "vfmsub", "vfnmadd", "pmullw", "pmulld", "pmaddwd", "mulps")


@njit(cache=True)
def dot_with_multiplies(W, x, out):
    """Negative control for `multiplies`: a plain dot product, whose compiled code must show them."""
    for r in range(W.shape[0]):
        acc = 0
        for k in range(W.shape[1]):
            acc += W[r, k] * x[k]
        out[r] = acc


def compiled_code(kernel, *args):
    """Compile `kernel`'s Python source afresh (the cached copy cannot be inspected) for `args` and
    return (LLVM IR, machine assembly) of that specialization."""
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(kernel.py_func)
    fresh(*args)
    sig = fresh.signatures[0]
    return fresh.inspect_llvm(sig), fresh.inspect_asm(sig)


def multiplies(llvm_ir, asm):
    """The multiplications a kernel really does on data:
      * IR: every `fmul`, and every `mul` on vectors (`<N x iK>`): the vectorized loops work on
        vectors, so any multiply there is a multiply on data (scalar i64 `mul`s outside them compute
        array addresses: row * stride);
      * assembly: any vector multiply / multiply-add / FMA instruction.
    Returns a list of offending lines (empty = multiplication-free)."""
    bad = []
    for line in llvm_ir.splitlines():
        s = line.strip()
        if " = fmul " in s:
            bad.append(s)
        elif " = mul " in s and "<" in s.split(" = mul ")[1].split(",")[0]:
            bad.append(s)
    for line in asm.splitlines():
        op = line.strip().split("\t")[0].split(" ")[0]
        if any(op.startswith(m) for m in VECTOR_MULTIPLIES):
            bad.append(line.strip())
    return bad


# ----------------------------------------------------------------------------
# the numbered versions, for validation and timing

VERSIONS = {
    # number: (what it is, prepare(Wt) -> weights object, run(weights, X_q) -> int32 (n, out), inner kernels)
    0: ("NumPy int64 matmul of unpacked codes (reference)", lambda Wt: Wt, matmul_v0, ()),
    1: ("Numba plain loops, if +1 add / if -1 subtract", lambda Wt: Wt, matmul_v1, (_v1_kernel,)),
    2: ("Numba lookup tables, 5 weights per byte (TL2/T-MAC)", prepare_v2, matmul_v2, (_v2_rows, _v2_tables)),
    3: ("Numba bit planes + SWAR, 2 bits per weight", prepare_v3, matmul_v3,
        (_v3_matvec_kernel, _v3_matmul_kernel, _v3_matmul_tokens_kernel)),
    4: ("Numba + LLVM IR: AVX-512 mask registers + VPSADBW, 2 bits per weight" if simd.AVAILABLE else
        "Numba + LLVM IR, portable build (this CPU has no AVX-512BW)",
        prepare_v4, matmul_v4, (_v4_matvec_kernel, _v4_matmul_kernel)),
    5: ("Numba + LLVM IR: bit-sliced activations + VPOPCNTQ, 2 bits per weight" if simd.POPCNT else
        "Numba + LLVM IR, bit-sliced activations + popcount (this CPU has no AVX-512 VPOPCNTDQ)",
        prepare_v4, matmul_v5, (_v5_matvec_kernel, _v5_matmul_kernel, planes_kernel)),
    6: ("Numba + LLVM IR: lookup tables of 3 activations' 27 sums, VPERMW, 2 bits per weight" if simd.AVAILABLE else
        "Numba + LLVM IR, lookup tables, portable build (this CPU has no AVX-512BW: slower here)",
        prepare_v4, matmul_v6, (_v6_matmul_kernel, _lookup_tables_kernel)),
    7: ("Numba + LLVM IR: lookup tables of 2 activations' nibble sums, AVX2 VPSHUFB, 2 bits per weight" if simd.AVX2
        else "Numba + LLVM IR, nibble lookup tables, portable build (this CPU has no AVX2: slower here)",
        prepare_v4, matmul_v7, (_v7_matmul_kernel, _nibble_tables_kernel)),
    8: ("Numba + LLVM IR: version 7's codes stored two per byte, AVX2 VPSHUFB, 2 bits per weight" if simd.AVX2
        else "Numba + LLVM IR, stored nibble codes, portable build (this CPU has no AVX2: slower here)",
        prepare_v8, matmul_v8, (_v8_matvec_kernel, _v8_matmul_kernel, pair_codes_kernel)),
}


def random_case(rng, n, n_out, n_in):
    Wt = rng.integers(-1, 2, (n_out, n_in)).astype(np.int8)
    X = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
    return Wt, X


def validate(version, rng=None, cases=12):
    """Compare a version against version 0 on random shapes (odd sizes, zero rows, extreme values).
    Returns the number of cases checked; raises AssertionError on the first mismatch."""
    rng = rng or np.random.default_rng(0)
    _, prepare, run, _ = VERSIONS[version]
    shapes = [(1, 1, 1), (1, 7, 63), (3, 5, 64), (2, 9, 65), (1, 33, 129), (4, 17, 320), (1, 64, 1000),
              (64, 3, 70), (300, 5, 200), (520, 2, 130),             # the token-vectorized path, > 1 tile
              (1, 4, 2100), (5, 3, 4000)]                            # long rows: several chunks of versions 6, 7
    shapes += [tuple(int(v) for v in rng.integers(1, 300, 3)) for _ in range(max(0, cases - len(shapes)))]
    for n, n_out, n_in in shapes:
        Wt, X = random_case(rng, n, n_out, n_in)
        Wt[rng.random(n_out) < 0.2] = 0                              # all-zero rows
        X[:, rng.random(n_in) < 0.2] = -128                          # extreme values
        X[:, rng.random(n_in) < 0.2] = 127
        got, want = run(prepare(Wt), X), matmul_v0(Wt, X)
        if got.dtype != np.int32 or not np.array_equal(got, want):
            raise AssertionError(f"version {version} differs from the reference at shape n={n}, out={n_out}, in={n_in}")
    return len(shapes)


def timings(fn, repeats, warmup=1):
    """Seconds of each of `repeats` calls to fn, after `warmup` untimed calls (compilation, caches)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return np.array(ts)


def time_it(fn, repeats=20, warmup=2):
    """Median, min and max seconds of `repeats` calls after `warmup` calls."""
    ts = timings(fn, repeats, warmup)
    return float(np.median(ts)), float(ts.min()), float(ts.max())


def fmt(stats):
    med, lo, hi = stats
    return f"{med * 1e3:8.3f} ms (min {lo * 1e3:.3f}, max {hi * 1e3:.3f})"


def main(argv):
    version = int(argv[1]) if len(argv) > 1 else BEST
    if version not in VERSIONS:
        raise SystemExit(f"version must be one of {sorted(VERSIONS)}")
    what, prepare, run, _ = VERSIONS[version]
    print(f"version {version}: {what}; {numba.get_num_threads()} threads")
    print(f"validated against version 0 on {validate(version)} random shapes: exact")
    rng = np.random.default_rng(0)
    for n, size in ((1, 4096), (64, 1024)):
        Wt, X = random_case(rng, n, size, size)
        Wf = Wt.astype(np.float32)
        Xf = X.astype(np.float32)
        prepared = prepare(Wt)
        reps = 3 if version in (0, 1) else 20
        t_k = time_it(lambda: run(prepared, X), repeats=reps)
        t_f = time_it(lambda: Xf @ Wf.T, repeats=reps)
        print(f"n={n:3d} {size}x{size}: kernel {fmt(t_k)} | NumPy float32 {fmt(t_f)} | "
              f"speedup {t_f[0] / t_k[0]:.2f}x")


if __name__ == "__main__":
    main(sys.argv)
