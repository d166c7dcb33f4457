"""Packed ternary layout and the add/subtract matrix kernels: exact against the NumPy integer
reference on random shapes (sizes off the 64-column block, zero rows, -128/127 activations), and
free of multiplications in the code the compiler actually produced."""
import re
import sys

import numba
import numpy as np
import pytest

import kernels_numba
from kernels_numba.packing import BLOCK, pack_base3, pack_ternary, unpack_ternary
from kernels_numba.products import (VERSIONS, compiled_code, dot_with_multiplies, matmul_v0, multiplies,
                                          random_case, validate)

import kernels_numba.products as tm
from kernels_numba.simd import _host_has

HOST_AVX2 = _host_has("avx2")


def random_shapes(rng, count):
    fixed = [(1, 1, 1), (1, 3, BLOCK - 1), (2, 5, BLOCK), (3, 4, BLOCK + 1), (1, 2, 2 * BLOCK + 7),
             (tm.MANY_TOKENS, 6, 100), (tm.TOKEN_TILE + 3, 4, 70)]     # token-vectorized path, > 1 tile
    return fixed + [tuple(int(v) for v in rng.integers(1, 200, 3)) for _ in range(count)]


# ----------------------------------------------------------------------------
# packing

def test_pack_unpack_roundtrip_any_shape():
    rng = np.random.default_rng(0)
    for _, n_out, n_in in random_shapes(rng, 20):
        w = rng.integers(-1, 2, (n_out, n_in)).astype(np.int8)
        p = pack_ternary(w)
        nb = -(-n_in // BLOCK)
        nb = nb if nb < 8 else -(-nb // 8) * 8                       # whole 512-bit vectors from 8 blocks on
        assert p.nonzero.dtype == np.uint64 and p.nonzero.shape == (n_out, nb)
        np.testing.assert_array_equal(unpack_ternary(p), w)


def test_pack_layout_matches_documented_bit_positions():
    # one +1 at column 64*1 + 8*i + j must set bit 8j + i of block 1 in both the nonzero plane and,
    # for -1, the negative plane; nothing else
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        w = np.zeros((1, 130), np.int8)
        w[0, 64 + 8 * i + j] = -1
        p = pack_ternary(w)
        assert p.nonzero[0, 1] == np.uint64(1) << np.uint64(8 * j + i) == p.negative[0, 1]
        assert p.nonzero[0, 0] == 0 and p.nonzero[0, 2] == 0
        assert p.offset[0] == 127


def test_packed_memory_is_two_bits_per_weight():
    p = pack_ternary(np.ones((256, 1024), np.int8))
    weights_bytes = p.nonzero.nbytes + p.negative.nbytes
    assert weights_bytes * 8 == 2 * 256 * 1024
    assert p.nbytes < 0.07 * 256 * 1024 * 4                          # vs float32, offsets included


def test_base3_codes():
    w = np.array([[-1, 0, 1, 1, -1, 1]], np.int8)                    # 6 columns -> 2 groups (padded with 0)
    codes = pack_base3(w)
    assert codes.tolist() == [[0 * 1 + 1 * 3 + 2 * 9 + 2 * 27 + 0 * 81, 2 + 1 * 3 + 1 * 9 + 1 * 27 + 1 * 81]]


@pytest.mark.parametrize("bad, err", [
    (np.array([[0, 2, -1]], np.int8), ValueError),                  # not ternary
    (np.array([[0, 1, -1]], np.int32), TypeError),                  # wrong dtype, no silent cast
    (np.array([[0.0, 1.0]], np.float32), TypeError),
    (np.array([0, 1, -1], np.int8), ValueError),                    # not 2-D
    ([[0, 1]], TypeError),
])
def test_pack_rejects_bad_input(bad, err):
    with pytest.raises(err):
        pack_ternary(bad)


# ----------------------------------------------------------------------------
# exactness of every version

@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6, 7, 8])
def test_version_equals_reference(version):
    assert validate(version, np.random.default_rng(version), cases=14) >= 14


def test_validate_catches_a_wrong_kernel():
    # negative control: a kernel that forgets the -1 weights must be rejected by the same checker
    VERSIONS[99] = ("broken", lambda Wt: np.maximum(Wt, 0).astype(np.int8), matmul_v0, ())
    try:
        with pytest.raises(AssertionError):
            validate(99)
    finally:
        del VERSIONS[99]


def test_public_api_exact_property_loop():
    rng = np.random.default_rng(7)
    for n, n_out, n_in in random_shapes(rng, 25):
        Wt, X = random_case(rng, n, n_out, n_in)
        Wt[rng.random(n_out) < 0.25] = 0                             # all-zero rows
        X[rng.random(X.shape) < 0.1] = -128                          # extreme int8 values
        X[rng.random(X.shape) < 0.1] = 127
        p = kernels_numba.pack_ternary(Wt)
        got = kernels_numba.ternary_matmul(p, X)
        assert got.dtype == np.int32 and got.shape == (n, n_out)
        np.testing.assert_array_equal(got, matmul_v0(Wt, X))
        v = kernels_numba.ternary_matvec(p, X[0])
        assert v.dtype == np.int32 and v.shape == (n_out,)
        np.testing.assert_array_equal(v, matmul_v0(Wt, X[:1])[0])


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7, 8])
def test_worst_case_sums_do_not_overflow(version):
    # every weight -1 and every activation -128 (or +1 and +127) on a wide row: the largest sums
    n_in = 5000
    _, prepare, run, _ = tm.VERSIONS[version]
    for w, x in [(-1, -128), (1, 127), (1, -128), (-1, 127)]:
        Wt = np.full((3, n_in), w, np.int8)
        X = np.full((2, n_in), x, np.int8)
        np.testing.assert_array_equal(run(prepare(Wt), X), np.full((2, 3), w * x * n_in))
        np.testing.assert_array_equal(run(prepare(Wt), X[:1]), np.full((1, 3), w * x * n_in))
    np.testing.assert_array_equal(kernels_numba.ternary_matvec(pack_ternary(Wt), X[0]), np.full(3, w * x * n_in))


@pytest.mark.parametrize("x, err", [
    (np.zeros(10, np.int16), TypeError),                            # wrong dtype
    (np.zeros(10, np.float32), TypeError),
    (np.zeros(11, np.int8), ValueError),                            # wrong length
    (np.zeros((2, 10), np.int8), ValueError),                       # matvec wants 1-D
])
def test_matvec_rejects_bad_activations(x, err):
    p = kernels_numba.pack_ternary(np.zeros((4, 10), np.int8))
    with pytest.raises(err):
        kernels_numba.ternary_matvec(p, x)


def test_matmul_rejects_bad_input():
    p = kernels_numba.pack_ternary(np.zeros((4, 10), np.int8))
    with pytest.raises(ValueError):
        kernels_numba.ternary_matmul(p, np.zeros(10, np.int8))       # needs (n, in)
    with pytest.raises(TypeError):
        kernels_numba.ternary_matmul(p, np.zeros((2, 10), np.int64))
    with pytest.raises(TypeError):
        kernels_numba.ternary_matmul(np.zeros((4, 10), np.int8), np.zeros((2, 10), np.int8))   # not packed


# ----------------------------------------------------------------------------
# no multiplications in the compiled kernels

def _kernel_args():
    rng = np.random.default_rng(0)
    Wt, X = random_case(rng, 2, 8, 130)
    p = pack_ternary(Wt)
    pairs = tm.pack_pairs(p)
    xw = tm.activation_words(X, p.n_blocks)
    out = np.empty((2, 8), np.int32)
    codes = pack_base3(Wt)
    tables = np.zeros((codes.shape[1], 256), np.int32)
    return {
        "v3 matvec": (tm._v3_matvec_kernel, (p.nonzero, p.negative, p.offset, xw[0], out[0])),
        "v3 matmul": (tm._v3_matmul_kernel, (p.nonzero, p.negative, p.offset, xw, out)),
        "v3 matmul tokens": (tm._v3_matmul_tokens_kernel,
                             (p.nonzero, p.negative, p.offset, tm.activation_words_tokens_last(X, p.n_blocks),
                              np.empty((2, 8), np.int32))),
        "v2 rows": (tm._v2_rows, (codes, tables, out[0])),
        "v2 tables": (tm._v2_tables, (X[0], codes.shape[1], tables)),
        "v1": (tm._v1_kernel, (Wt, X, out)),
        "v4 matvec": (tm._v4_matvec_kernel, (p.nonzero, p.negative, p.offset,
                                             tm.activation_bytes(X[:1], p.n_blocks), out[0])),
        "v4 matmul": (tm._v4_matmul_kernel, (p.nonzero, p.negative, p.offset,
                                             tm.activation_bytes(X, p.n_blocks, tm.TOKENS), out)),
        "v5 matvec": (tm._v5_matvec_kernel, (p.nonzero, p.negative, p.offset,
                                             tm.activation_planes(X[:1], p.n_blocks), out[0])),
        "v5 matmul": (tm._v5_matmul_kernel, (p.nonzero, p.negative, p.offset,
                                             tm.activation_planes(X, p.n_blocks, tm.TOKENS), out)),
        "v5 planes": (tm.planes_kernel, (tm.activation_bytes(X, p.n_blocks), np.empty((2, p.n_blocks, 8), np.uint64))),
        "v6 matmul": (tm._v6_matmul_kernel, (p.nonzero, p.negative, tm.CODES_OF_BITS, tm.lookup_tables(X, p.n_blocks),
                                             np.empty(tm.lookup_codes_bytes(8, 2, p.n_blocks), np.uint8), out)),
        "v6 tables": (tm._lookup_tables_kernel, (X, tm.lookup_tables(X, p.n_blocks))),
        "v7 matmul": (tm._v7_matmul_kernel, (p.nonzero, p.negative, p.offset, tm.nibble_tables_of(X, p.n_blocks),
                                             np.empty(tm.nibble_codes_bytes(8, 2, p.n_blocks), np.uint8), out)),
        "v7 tables": (tm._nibble_tables_kernel, (X, tm.nibble_tables_of(X, p.n_blocks))),
        "v8 matvec": (tm._v8_matvec_kernel, (pairs.codes, pairs.offset, tm.nibble_tables_of(X[:1], p.n_blocks, pad=1),
                                             out[:1])),
        "v8 matmul": (tm._v8_matmul_kernel, (pairs.codes, pairs.offset, tm.nibble_tables_of(X, p.n_blocks), out)),
        "v8 codes": (tm.pair_codes_kernel, (p.nonzero, p.negative, np.empty_like(pairs.codes))),
    }


@pytest.mark.parametrize("name", ["v8 matvec", "v8 matmul", "v8 codes", "v7 matmul", "v7 tables", "v6 matmul", "v6 tables", "v5 matvec", "v5 matmul", "v5 planes", "v4 matvec",
                                  "v4 matmul", "v3 matvec", "v3 matmul", "v3 matmul tokens", "v2 rows", "v2 tables", "v1"])
def test_kernels_have_no_multiplications(name):
    kernel, args = _kernel_args()[name]
    ir, asm = compiled_code(kernel, *args)
    if not name.startswith(("v1", "v2", "v5 planes", "v8 codes")):
        assert vectorized(ir, asm), "the v3-v8 kernels should run on the host's widest vector registers"
    assert multiplies(ir, asm) == []


def vectorized(ir, asm):
    """The IR computes on vectors of at least 256 bits, and the machine code on 256- or 512-bit
    registers where the CPU has them (AVX2: ymm; AVX-512: ymm or zmm, as LLVM chooses). An AVX-512
    host's <8 x i64> is <4 x i64> on an AVX2 one, or a <64 x i8> split into ymm halves."""
    widths = [int(n) * int(bits) for n, bits in re.findall(r"<(\d+) x i(\d+)>", ir)]
    wide = "%ymm" in asm or "%zmm" in asm if HOST_AVX2 else "%xmm" in asm
    return max(widths, default=0) >= 256 and wide


def test_the_vectorization_check_refuses_scalar_code():
    # the negative control: a kernel compiled without vectors is not taken for a vectorized one
    ir, asm = compiled_code(scalar_sum, np.arange(8, dtype=np.int64))
    assert not vectorized(ir, asm)


@numba.njit(cache=False)
def scalar_sum(a):
    s = 0
    for i in range(a.shape[0]):
        s = s * 3 + a[i]                      # a recurrence: no vectorizer can reorder it
    return s


def bit_order(c):
    """Where column c sits in a token's bytes in bit order (packing.py's layout, written out here
    independently of the code under test): byte 8 j + i of its block for column 8 i + j."""
    return (c & ~63) | ((c & 7) << 3) | ((c >> 3) & 7)


def test_activation_bytes_sit_where_v4_byte_position_says():
    # the one-shuffle-per-block transpose against the documented position of each column
    rng = np.random.default_rng(12)
    X = rng.integers(-128, 128, (3, 200), dtype=np.int8)             # 200 columns: 4 blocks, the last one padded
    got = tm.activation_bytes(X, 4)
    c = np.arange(200)
    want = np.zeros((3, 256), np.uint8)
    want[:, bit_order(c)] = (X.astype(np.int16) + 128).astype(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_bit_planes_are_the_bits_of_the_activation_bytes():
    # plane k of block b: bit m is bit k of byte 64 b + m (np.unpackbits says what the bits are)
    rng = np.random.default_rng(11)
    u = rng.integers(0, 256, (3, 64 * 5), dtype=np.uint8)
    planes = np.empty((3, 5, 8), np.uint64)
    tm.planes_kernel(u, planes)
    bits = np.unpackbits(u[..., None], axis=-1, bitorder="little").reshape(3, 5, 64, 8)   # (t, b, m, k)
    want = (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)[:, None]).sum(axis=2, dtype=np.uint64)
    np.testing.assert_array_equal(planes, want)
    u[1, 70] ^= 4                                                   # negative control: one bit flipped
    tm.planes_kernel(u, planes)
    assert planes[1, 1, 2] != want[1, 1, 2] and (planes != want).sum() == 1


@pytest.mark.skipif(not tm.simd.POPCNT, reason="the instruction check needs a CPU with AVX-512 VPOPCNTDQ")
@pytest.mark.parametrize("name", ["v5 matvec", "v5 matmul"])
def test_v5_counts_bits_with_vpopcntq(name):
    # what version 5 claims to be: one vpternlogq selects the bits, vpopcntq counts them, no k registers
    kernel, args = _kernel_args()[name]
    _, asm = compiled_code(kernel, *args)
    assert "vpopcntq" in asm and "vpternlogq" in asm and "vpsadbw" not in asm


@pytest.mark.skipif(not tm.simd.AVAILABLE, reason="the instruction check needs a CPU with AVX-512BW")
@pytest.mark.parametrize("name", ["v4 matvec", "v4 matmul"])
def test_v4_uses_mask_registers_and_psadbw(name):
    # what version 4 claims to be: plane words moved into k registers, bytes summed by VPSADBW
    kernel, args = _kernel_args()[name]
    _, asm = compiled_code(kernel, *args)
    assert "vpsadbw" in asm and "kmovq" in asm and "{z}" in asm


@pytest.mark.skipif(not tm.simd.AVAILABLE, reason="the instruction check needs a CPU with AVX-512BW")
def test_v6_looks_up_with_vpermw():
    # what version 6 claims to be: 32 rows' codes widened once (vpmovzxbw), one vpermw per token
    kernel, args = _kernel_args()["v6 matmul"]
    _, asm = compiled_code(kernel, *args)
    assert "vpermw" in asm and "vpmovzxbw" in asm


@pytest.mark.skipif(not tm.simd.AVX2, reason="the instruction check needs a CPU with AVX2")
def test_v7_looks_up_with_vpshufb():
    # what version 7 claims to be: per token and group its two tables in both halves (vbroadcasti128),
    # two vpshufb and two vpaddb over 32 rows' codes, the byte sums widened into word sums (vpaddw)
    # with their odd bytes shifted down (vpsrlw) and, at the end, subtracted back out (vpsubw)
    kernel, args = _kernel_args()["v7 matmul"]
    _, asm = compiled_code(kernel, *args)
    assert all(op in asm for op in ("vpshufb", "vpaddb", "vbroadcasti128", "vpsrlw", "vpaddw", "vpsubw"))


@pytest.mark.skipif(not tm.simd.AVX2, reason="the instruction check needs a CPU with AVX2")
@pytest.mark.parametrize("name", ["v8 matvec", "v8 matmul"])
def test_v8_looks_up_with_vpshufb(name):
    # what version 8 claims to be: 32 bytes of codes split into two groups' codes by ANDs and a shift
    # (vpsrlw), the tables broadcast to both halves (vbroadcasti128), then vpshufb lookups and vpaddb
    # sums, widened into word sums (vpaddw, the odd bytes' share subtracted back out: vpsubw); the
    # GEMV prefetches its codes ahead
    kernel, args = _kernel_args()[name]
    _, asm = compiled_code(kernel, *args)
    assert all(op in asm for op in ("vpshufb", "vpaddb", "vbroadcasti128", "vpsrlw", "vpaddw", "vpsubw"))
    assert ("prefetcht1" in asm) == (name == "v8 matvec")


def test_pair_codes_hold_two_groups_codes_per_byte():
    # byte i of codes[rb, j]: the low nibble is group 2j's code of row 32 rb + i, the high nibble group
    # 2j + 1's; group g of block b holds the weights under bits 2m, 2m + 1 (m = g mod 32) of the plane
    # words, i.e. columns 64 b + bit_order(2m) and 64 b + bit_order(2m + 1); a code is nonzero bits |
    # negative bits << 2; rows past the matrix (up to whole PAIR_BLOCKS blocks) are 0
    rng = np.random.default_rng(8)
    Wt = rng.integers(-1, 2, (37, 150)).astype(np.int8)              # 3 blocks, the last one padded
    pairs = tm.pack_pairs(pack_ternary(Wt))
    assert pairs.codes.shape == (2, 48, 32) and pairs.shape == (37, 150) and pairs.n_blocks == 3
    W = np.zeros((64, 192), np.int64)
    W[:37, :150] = Wt
    for g in range(96):
        b, m = divmod(g, 32)
        w0, w1 = W[:, 64 * b + bit_order(2 * m)], W[:, 64 * b + bit_order(2 * m + 1)]
        code = (w0 != 0) | (w1 != 0) << 1 | (w0 == -1) << 2 | (w1 == -1) << 3
        nibble = (pairs.codes[:, g // 2].reshape(64) >> (4 * (g % 2))) & 15
        np.testing.assert_array_equal(nibble, code)
    with pytest.raises(TypeError, match="pack_ternary"):
        tm.pack_pairs(Wt)
    for codes, offset in [(pairs.codes[:, :8], pairs.offset), (pairs.codes[:1], pairs.offset),
                          (pairs.codes, pairs.offset[:36]), (pairs.codes.astype(np.int8), pairs.offset)]:
        with pytest.raises(ValueError, match="do not hold"):     # hand-made pairs that disagree
            tm.PackedPairs(codes, offset, pairs.shape)
    with pytest.raises(ValueError, match="equal parts"):
        tm.pack_pairs(pack_ternary(Wt), parts=2)                     # 37 rows
    halves = tm.pack_pairs(pack_ternary(Wt[:36]), parts=2)           # two 18-row segments, each padded
    assert halves.codes.shape == (4, 48, 32)                         # to 2 blocks: rows 0-17, then 18-35
    np.testing.assert_array_equal(halves.codes[:2], tm.pack_pairs(pack_ternary(Wt[:18])).codes)
    np.testing.assert_array_equal(halves.codes[2:], tm.pack_pairs(pack_ternary(Wt[18:36])).codes)


def test_nibble_tables_hold_the_nibble_sums_of_each_group():
    # group m of block b = the activations under bits 2m, 2m+1 of the plane words; entry e < 16 (e =
    # nonzero bits | negative bits << 2) holds the low-nibble sum, entry 16 + e the high-nibble sum,
    # of u = x + 128 under a +1 weight and of 255 - u under a -1 weight; codes with a negative bit
    # whose nonzero bit is clear (never produced) hold 0 for that weight
    rng = np.random.default_rng(5)
    X = rng.integers(-128, 128, (5, 150)).astype(np.int8)           # 3 blocks, the last one padded
    tables = tm.nibble_tables_of(X, 3)
    assert tables.shape == (8, 96, 32) and not tables[5:].any()      # padded to NIBBLE_TOKENS tokens
    c = np.arange(150)
    u = np.full((5, 3 * 64), 128, np.int64)                          # padding columns: x = 0
    u[:, bit_order(c)] = X.astype(np.int64) + 128
    for b in range(3):
        for m in range(32):
            for e in range(16):
                lo = hi = 0
                for i in range(2):
                    v = u[:, 64 * b + 2 * m + i]
                    if (e >> i) & 1:
                        w = v if not (e >> (i + 2)) & 1 else 255 - v
                        lo, hi = lo + (w & 15), hi + (w >> 4)
                np.testing.assert_array_equal(tables[:5, 32 * b + m, e], lo)
                np.testing.assert_array_equal(tables[:5, 32 * b + m, 16 + e], hi)


def test_lookup_tables_hold_the_signed_sums_of_each_group():
    # group m of block b = the activations under bits 3m, 3m+1, 3m+2 of the plane words (bit 63 alone
    # for m = 21); entry e = sum_i (digit_i(e) - 1) x_i with e = 9 d0 + 3 d1 + d2; entries 27..31 are 0
    rng = np.random.default_rng(3)
    X = rng.integers(-128, 128, (5, 150)).astype(np.int8)           # 3 blocks, the last one padded
    tables = tm.lookup_tables(X, 3)
    assert tables.shape == (8, 66, 32) and not tables[5:].any()      # padded to LOOKUP_TOKENS tokens
    c = np.arange(150)
    xb = np.zeros((5, 3 * 64), np.int64)
    xb[:, bit_order(c)] = X
    for b in range(3):
        for m in range(22):
            xs = [xb[:, 64 * b + 3 * m + i] if 3 * m + i < 64 else np.zeros(5, np.int64) for i in range(3)]
            for e in range(32):
                d = (e // 9, e // 3 % 3, e % 3)
                want = sum((d[i] - 1) * xs[i] for i in range(3)) if e < 27 else 0
                np.testing.assert_array_equal(tables[:5, 22 * b + m, e], want)


TABLE_PRODUCTS = {   # version: (its tables of X_q, its product of packed p and those tables into out)
    6: (tm.lookup_tables, lambda p, tables, out: tm.lookup_product(p.nonzero, p.negative, tables, out)),
    7: (tm.nibble_tables_of, lambda p, tables, out: tm.nibble_product(p.nonzero, p.negative, p.offset, tables, out)),
    8: (tm.nibble_tables_of, lambda p, tables, out: tm.pair_product(tm.pack_pairs(p).codes, p.offset, tables, out)),
}


@pytest.mark.parametrize("version", [6, 7, 8])
def test_table_products_refuse_tables_of_another_shape(version):
    # the kernels read without bounds checks, so their entries check what they are given against the planes
    build, product = TABLE_PRODUCTS[version]
    rng = np.random.default_rng(4)
    p = pack_ternary(rng.integers(-1, 2, (40, 130)).astype(np.int8))        # 3 blocks
    X = rng.integers(-128, 128, (6, 130)).astype(np.int8)
    out = np.empty((6, 40), np.int32)
    product(p, build(X, p.n_blocks), out)
    np.testing.assert_array_equal(out, matmul_v0(unpack_ternary(p), X))
    with pytest.raises(ValueError, match="in <= 64"):
        build(X, 2)                                                  # 130 columns do not fit 2 blocks
    for tables, o in [(build(X[:, :128], 2), out), (build(X[:3], 3), out),
                      (build(X, 3), np.empty((6, 41), np.int32)), (build(X, 3), out.astype(np.int64))]:
        with pytest.raises(ValueError, match="do not fit"):
            product(p, tables, o)


def test_nibble_product_refuses_offsets_of_another_length():
    rng = np.random.default_rng(6)
    p = pack_ternary(rng.integers(-1, 2, (40, 130)).astype(np.int8))
    X = rng.integers(-128, 128, (6, 130)).astype(np.int8)
    with pytest.raises(ValueError, match="do not fit"):
        tm.nibble_product(p.nonzero, p.negative, p.offset[:39], tm.nibble_tables_of(X, 3), np.empty((6, 40), np.int32))


def test_codes_of_bits_name_every_ternary_triple_once():
    # the 27 (nonzero, negative) bit patterns of three weights get the 27 codes 9 d0 + 3 d1 + d2, d = w + 1
    seen = {}
    for w in np.ndindex(3, 3, 3):
        w = np.array(w) - 1
        nz = sum(1 << i for i in range(3) if w[i] != 0)
        ng = sum(1 << i for i in range(3) if w[i] == -1)
        seen[tuple(w)] = int(tm.CODES_OF_BITS[nz | ng << 3])
        assert seen[tuple(w)] == 9 * (w[0] + 1) + 3 * (w[1] + 1) + (w[2] + 1)
    assert sorted(seen.values()) == list(range(27))


def test_v4_to_v8_portable_builds_are_exact(tmp_path):
    # CPUs without AVX-512BW compile simd.py's portable IR: forced here with MMF_NO_AVX512=1 and a
    # fresh Numba cache (the cached machine code would be the AVX-512 build)
    import os
    import subprocess
    code = ("import sys; tm = __import__('kernels_numba.products', fromlist=['x']); "
            "assert not tm.simd.AVAILABLE and not tm.simd.POPCNT; "
            "assert (tm.BEST, tm.BEST_TOKENS) == ((5, 4) if tm.simd.AVX2 else (3, 3)); "
            "print(tm.validate(8)); print(tm.validate(7)); print(tm.validate(6)); print(tm.validate(5)); print(tm.validate(4))")
    env = dict(os.environ, MMF_NO_AVX512="1", NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) >= 12


def test_a_cpu_without_avx2_gets_exact_lookups_and_the_planes(tmp_path):
    # compiled for a plain x86-64 (SSE2), as on a CPU without AVX2: VPSHUFB is then simd._pshufb's
    # portable lookup, versions 7 and 8 must stay exact, and the choices fall back to version 3 and the
    # planes (a fresh Numba cache: the cached machine code is this host's)
    import os
    import subprocess
    code = ("import kernels_numba.products as tm, kernels_numba.engine as en; "
            "assert not tm.simd.AVX2 and (tm.BEST, tm.BEST_TOKENS, en.LAYOUT) == (3, 3, 'planes'); "
            "print(tm.validate(7)); print(tm.validate(8))")
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64", NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [int(v) for v in r.stdout.split()] == [12, 12]


def test_multiply_detector_catches_a_dot_product():
    W = np.ones((8, 64), np.int32)
    ir, asm = compiled_code(dot_with_multiplies, W, np.ones(64, np.int32), np.zeros(8, np.int32))
    assert len(multiplies(ir, asm)) > 0
