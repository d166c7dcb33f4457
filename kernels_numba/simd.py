"""Explicit SIMD for the ternary kernels, written as LLVM IR: mask registers + VPSADBW (version 4),
bit-sliced activations + VPOPCNTQ (version 5), lookup tables + VPERMW (version 6) on 512 bits, and
lookup tables + VPSHUFB on AVX2's 256 (versions 7 and 8).

Numba's auto-vectorizer cannot be talked into using AVX-512's two best tools for ternary weights,
so this file writes the inner loop in LLVM IR directly (a Numba `@intrinsic`), one block of 64
weights at a time:

    kz   = bitcast nonzero[r, b]  : i64 -> <64 x i1>   a plane word IS a mask register   (kmovq)
    kn   = bitcast negative[r, b] : i64 -> <64 x i1>
    v    = select(kz, u, 0)                             0 weights take nothing            (vmovdqu8 {z})
    flip = select(kn, 0xFF, 0)                          0xFF under -1 weights             (vpmovm2b)
    acc += psadbw(v, flip)                              8 sums of |v - flip| over 8 bytes (vpsadbw, vpaddq)

`u` holds the offset-binary activation bytes (u = q + 128, see packing.py), arranged so that byte k
of block b sits under bit k of the plane words (`activation_bytes` in products.py). PSADBW
("sum of absolute differences") adds |v - flip| over 8 bytes into a 64-bit lane: u for a +1 weight,
|u - 255| = 255 - u = ~u for a -1 weight, 0 for a 0 weight: exactly the selection of version 3,
with the sum done by additions only. Nothing here multiplies; tests read the machine code to prove it.

Version 5 turns the sum around: instead of selecting activation BYTES under the weight bits, it
slices the activations into their 8 BIT planes once per token (`bit_planes`: plane k of block b is a
uint64 whose bit m is bit k of byte m) and counts. For one block,

    sum of selected bytes = sum_k 2^k * popcount(nonzero AND (plane_k XOR negative))

because a selected byte is u (bits of u) under a +1 weight and ~u (bits of u, each flipped) under a
-1 weight. The 8 planes of a block are one <8 x i64> vector, so one block of one row is

    t    = nonzero AND (planes XOR negative)            both plane words broadcast    (vpternlogq)
    acc += popcount(t)                                  8 bit counts at once          (vpopcntq, vpaddq)

three instructions, no mask registers; the 2^k enter once per row as shifts. The integers are
version 4's to the last bit (same planes, same offsets). It wins where VPOPCNTQ exists (`POPCNT`:
AVX-512 VPOPCNTDQ): measured in cache, 1.6x version 4's rate for one token and ~1.1x for four.

Version 6 looks the sums up instead. Three ternary weights have 27 patterns, so for each token and
each group of three activations x0, x1, x2 a table of 32 int16 holds the 27 sums +-x0 +-x1 +-x2
(and five unused zeros: `group_tables`), and each row's group becomes one byte, its base-3 code.
VPERMW takes 32 int16 indices and returns the 32 table entries they name, so with the codes of 32
rows for one group in a vector,

    idx  = zext(codes[group, 32 rows])                  32 codes as int16                 (vpmovzxbw)
    acc += permw(table[token, group], idx)              32 rows' sums for this group      (vpermw, vpaddw)

two instructions per 96 weights and token, and the code vector serves four tokens (`lookup_chunk`).
The int16 sums are widened into int32 every 85 groups, before they could overflow.

Versions 7 and 8 do it with AVX2's VPSHUFB (16 one-byte entries per 16-byte half): a row's group is
two weights, a 4-bit code, and each activation is split into its two nibbles so that every sum fits
a byte (`nibble_tables`). Version 7 derives the codes from the planes at every call (`nibble_chunk`),
version 8 reads them stored two per byte (`pair_chunk`, `pair_chunk1`: one load, two ANDs and a
shift give two groups' codes of 32 rows). Both lookups are one emitter, `_nibble_codegen`.

Where the CPU lacks AVX-512BW (`AVAILABLE` is False) the same IR is built with a portable byte sum
that LLVM lowers for any CPU; all give identical integers. Version 5's IR (`llvm.ctpop`) compiles
everywhere too: with AVX2 (`AVX2`) LLVM counts the bits of each 256-bit half with two VPSHUFB
nibble lookups and a VPSADBW, and that is the fastest GEMV there (products.BEST says which version
runs where, with the measurements). Version 6's IR compiles everywhere as well, but its VPERMW
becomes 32 extract/insert pairs: far slower, and never chosen without AVX-512BW.
"""
import os

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

TOKENS = 4                      # tokens per call of masked_sad_tokens (their masks are loaded once)


def _host_has(feature):
    import llvmlite.binding as llvm
    if numba.config.CPU_NAME not in (None, "host"):                  # cross-compiling for another CPU
        return False
    try:
        return bool(llvm.get_host_cpu_features().get(feature, False))
    except RuntimeError:                                             # features unknown: be safe
        return False


# MMF_NO_AVX512=1 forces the portable path (tests use it, with a fresh NUMBA_CACHE_DIR: Numba's
# on-disk cache does not know about this switch)
AVAILABLE = _host_has("avx512bw") and os.environ.get("MMF_NO_AVX512") != "1"
POPCNT = AVAILABLE and _host_has("avx512vpopcntdq")                 # version 5's fast path
AVX2 = _host_has("avx2")        # 256-bit integer vectors: LLVM lowers the portable IR onto them (VPSHUFB counts)

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_BYTES = ir.VectorType(_I8, 64)                                      # one zmm of activation bytes
_MASK = ir.VectorType(_I1, 64)                                       # one k register
_QWORDS = ir.VectorType(_I64, 8)                                     # psadbw's eight 64-bit sums; a block's 8 bit planes


def _psadbw(builder):
    """builder -> f(a, b) = the eight sums of |a - b| over 8 bytes each, as <8 x i64>. With AVX-512BW
    that is the VPSADBW instruction; elsewhere portable IR that LLVM lowers for any CPU (slower, same
    integers), so a kernel that uses this file compiles everywhere."""
    if AVAILABLE:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_QWORDS, [_BYTES, _BYTES]),
                                            "llvm.x86.avx512.psad.bw.512")
        return lambda a, b: builder.call(fn, [a, b])
    wide = ir.VectorType(_I64, 64)
    reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [wide]),
                                            "llvm.vector.reduce.add.v64i64")
    # |a - b| = a XOR b when every byte of b is 0x00 or 0xFF, which is all the kernels pass
    return lambda a, b: builder.insert_element(ir.Constant(_QWORDS, None),
                                               builder.call(reduce, [builder.zext(builder.xor(a, b), wide)]),
                                               ir.Constant(_I32, 0))


def _row_args(context, builder, sig, args):
    """A row-sum intrinsic's (activations, t, nonzero, negative, r) as LLVM values: the two array
    structs, the two indices, and the number of 64-weight blocks per row."""
    acts, nz, ng = (context.make_array(sig.args[k])(context, builder, args[k]) for k in (0, 2, 3))
    _, n_blocks = cgutils.unpack_tuple(builder, nz.shape, 2)
    return acts, args[1], nz, ng, args[4], n_blocks


def _emit_sums(context, builder, sig, args, n_tokens):
    """IR for sum over blocks b of psadbw(select(kz, u[t+j, b], 0), select(kn, 0xFF, 0)) for
    j < n_tokens; returns n_tokens i64 values. args = (u, t, nonzero, negative, r)."""
    u, t, nz, ng, r, n_blocks = _row_args(context, builder, sig, args)
    _, row_bytes = cgutils.unpack_tuple(builder, u.shape, 2)
    plane_base = builder.mul(r, n_blocks)                            # address arithmetic, not data
    nz_row = builder.gep(nz.data, [plane_base])
    ng_row = builder.gep(ng.data, [plane_base])
    u_rows = [builder.bitcast(builder.gep(u.data, [builder.mul(builder.add(t, ir.Constant(t.type, j)), row_bytes)]),
                              _BYTES.as_pointer()) for j in range(n_tokens)]
    psadbw = _psadbw(builder)
    zero = ir.Constant(_BYTES, None)
    ones = ir.Constant(_BYTES, [ir.Constant(_I8, 255)] * 64)
    accs = [cgutils.alloca_once_value(builder, ir.Constant(_QWORDS, None)) for _ in range(n_tokens)]
    with cgutils.for_range(builder, n_blocks) as loop:
        b = loop.index
        kz = builder.bitcast(builder.load(builder.gep(nz_row, [b])), _MASK)
        kn = builder.bitcast(builder.load(builder.gep(ng_row, [b])), _MASK)
        flip = builder.select(kn, ones, zero)                        # 0xFF under -1 weights (vpmovm2b)
        for j in range(n_tokens):
            v = builder.load(builder.gep(u_rows[j], [b]), align=1)
            v = builder.select(kz, v, zero)                         # 0 weights take nothing
            builder.store(builder.add(builder.load(accs[j]), psadbw(v, flip)), accs[j])
    return _horizontal_sums(builder, [builder.load(acc) for acc in accs])


def _shuffle_add(builder, a, b, lo, hi):
    """Lane-wise sum of two shuffles of the concatenation (a, b) (indices 0-7 are a's, 8-15 b's)."""
    idx = lambda lanes: ir.Constant(ir.VectorType(_I32, len(lanes)), lanes)   # noqa: E731
    return builder.add(builder.shuffle_vector(a, b, idx(lo)), builder.shuffle_vector(a, b, idx(hi)))


def _horizontal_sums(builder, vecs):
    """The lane sums of 1 or 4 <8 x i64> vectors. For 4 a transpose-and-add tree: 6 shuffles and
    5 adds instead of 4 x (8 extracts + 7 adds)."""
    if len(vecs) == 4:
        a, b, c, d = vecs
        ab = _shuffle_add(builder, a, b, [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])
        cd = _shuffle_add(builder, c, d, [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])
        abcd = _shuffle_add(builder, ab, cd, [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
        four = _shuffle_add(builder, abcd, abcd, [0, 1, 2, 3], [4, 5, 6, 7])   # (a, b, c, d)
        return [builder.extract_element(four, ir.Constant(_I32, j)) for j in range(4)]
    assert len(vecs) == 1
    s = builder.extract_element(vecs[0], ir.Constant(_I32, 0))
    for lane in range(1, 8):
        s = builder.add(s, builder.extract_element(vecs[0], ir.Constant(_I32, lane)))
    return [s]


def _check_types(acts, t, nz, ng, r, ndim=2, dtype=types.uint8, usage="masked_sad(u uint8 (n, 64*NB) C"):
    """Typing check of a row-sum intrinsic's arguments (activations, t, nonzero, negative, r): the
    activations C-contiguous with ndim and dtype (bytes for version 4, bit planes for 5)."""
    ok = (isinstance(acts, types.Array) and acts.ndim == ndim and acts.dtype == dtype and acts.layout == "C"
          and isinstance(nz, types.Array) and nz.ndim == 2 and nz.dtype == types.uint64 and nz.layout == "C"
          and ng == nz and isinstance(t, types.Integer) and isinstance(r, types.Integer))
    if not ok:
        raise numba.core.errors.TypingError(f"{usage}, t int, nonzero uint64 (R, NB) C, negative like nonzero, "
                                            f"r int), got {(acts, t, nz, ng, r)}")


def _row_sums_codegen(emit, n_tokens, ret=None):
    """The codegen of an intrinsic (activations, t, nonzero, negative, r): emit's n_tokens sums, one
    uint64 (ret None) or a tuple of type ret."""
    def codegen(context, builder, sig, args):
        args = list(args)
        args[1] = context.cast(builder, args[1], sig.args[1], types.intp)
        args[4] = context.cast(builder, args[4], sig.args[4], types.intp)
        sums = emit(context, builder, sig, args, n_tokens)
        return sums[0] if ret is None else context.make_tuple(builder, ret, sums)
    return codegen


@intrinsic
def masked_sad(typingctx, u, t, nonzero, negative, r):
    """uint64: sum over the 64-weight blocks of row r of the selected bytes of token t (see above)."""
    _check_types(u, t, nonzero, negative, r)
    return types.uint64(u, t, nonzero, negative, r), _row_sums_codegen(_emit_sums, 1)


@intrinsic
def masked_sad_tokens(typingctx, u, t, nonzero, negative, r):
    """TOKENS uint64 sums (tokens t .. t+TOKENS-1, one row): each block's masks are loaded once."""
    _check_types(u, t, nonzero, negative, r)
    ret = types.UniTuple(types.uint64, TOKENS)
    return ret(u, t, nonzero, negative, r), _row_sums_codegen(_emit_sums, TOKENS, ret)


# ----------------------------------------------------------------------------
# the activation bytes' layout

# byte 8j + i of a 64-byte block takes byte 8i + j: the 8x8 transpose behind products.v4_byte_position
_TRANSPOSE = ir.Constant(ir.VectorType(_I32, 64), [((m & 7) << 3) | (m >> 3) for m in range(64)])


@intrinsic
def transpose_blocks(typingctx, codes, u):
    """u[64 b + 8 j + i] = codes[64 b + 8 i + j] for every 64-byte block b of the uint8 arrays (equal
    lengths, a multiple of 64): activation bytes in column order -> the layout versions 4 and 5 read.
    One shuffle per block (VPERMB where the CPU has AVX-512 VBMI), instead of 64 scattered stores."""
    if not (isinstance(codes, types.Array) and codes.ndim == 1 and codes.dtype == types.uint8
            and codes.layout == "C" and u == codes):
        raise numba.core.errors.TypingError(f"transpose_blocks(codes uint8 (64 NB,) C, u like codes), got {(codes, u)}")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.args[1])(context, builder, args[1])
        (n_bytes,) = cgutils.unpack_tuple(builder, dst.shape, 1)
        src_blocks = builder.bitcast(src.data, _BYTES.as_pointer())
        dst_blocks = builder.bitcast(dst.data, _BYTES.as_pointer())
        with cgutils.for_range(builder, builder.lshr(n_bytes, ir.Constant(n_bytes.type, 6))) as loop:
            v = builder.load(builder.gep(src_blocks, [loop.index]), align=1)
            builder.store(builder.shuffle_vector(v, v, _TRANSPOSE), builder.gep(dst_blocks, [loop.index]), align=1)
        return context.get_dummy_value()
    return types.void(codes, u), codegen


# ----------------------------------------------------------------------------
# version 5: bit-sliced activations + popcount

@intrinsic
def bit_planes(typingctx, u, planes):
    """u (64 NB,) uint8 activation bytes -> planes (NB, 8) uint64: planes[b, k] bit m = bit k of
    u[64 b + m] (a bit-matrix transpose of each 64-byte block: 8 byte-tests into k registers, vptestmb)."""
    if not (isinstance(u, types.Array) and u.ndim == 1 and u.dtype == types.uint8 and u.layout == "C"
            and isinstance(planes, types.Array) and planes.ndim == 2 and planes.dtype == types.uint64
            and planes.layout == "C"):
        raise numba.core.errors.TypingError(f"bit_planes(u uint8 (64 NB,) C, planes uint64 (NB, 8) C), got {(u, planes)}")

    def codegen(context, builder, sig, args):
        ua = context.make_array(sig.args[0])(context, builder, args[0])
        pa = context.make_array(sig.args[1])(context, builder, args[1])
        n_blocks, _ = cgutils.unpack_tuple(builder, pa.shape, 2)
        blocks = builder.bitcast(ua.data, _BYTES.as_pointer())
        plane_rows = builder.bitcast(pa.data, ir.ArrayType(_I64, 8).as_pointer())
        zero = ir.Constant(_BYTES, None)
        with cgutils.for_range(builder, n_blocks) as loop:
            v = builder.load(builder.gep(blocks, [loop.index]), align=1)
            for k in range(8):
                bit = builder.and_(v, ir.Constant(_BYTES, [ir.Constant(_I8, 1 << k)] * 64))
                word = builder.bitcast(builder.icmp_unsigned("!=", bit, zero), _I64)   # <64 x i1> IS a uint64
                builder.store(word, builder.gep(plane_rows, [loop.index, ir.Constant(_I32, k)]))
        return context.get_dummy_value()
    return types.void(u, planes), codegen


def _splat(builder, value, vector_type):
    """value in every lane of vector_type (one vpbroadcast): insert into lane 0, shuffle lane 0 everywhere."""
    v = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vector_type.count), [0] * vector_type.count))


PREFETCH_WORDS = 512      # plane words (4 KiB) ahead of the GEMV's reads, into L2 (prefetcht1)


def _prefetch_ahead(builder, b, rows):
    """Once per cache line (every 8th block b), a software prefetch PREFETCH_WORDS words ahead in
    each of `rows` (pointers to uint64 plane words; running past a row into the next is the point).
    Why: the GEMV alone does ~3 instructions per 16 bytes it reads, enough to keep the hardware
    prefetchers from running far ahead; measured on a 370M-shape decoding step's 97 GEMVs (2
    threads, alternated, 60 rounds): 2.79 ms without, 2.61 ms with (512 words into L2); 256 words
    into L1 gave 2.69 ms, 2048 words 2.69 ms. A prefetch never faults, so past the array is harmless."""
    line_start = builder.icmp_unsigned("==", builder.and_(b, ir.Constant(b.type, 7)), ir.Constant(b.type, 0))
    with builder.if_then(line_start):
        for row in rows:
            _prefetch(builder, builder.gep(row, [builder.add(b, ir.Constant(b.type, PREFETCH_WORDS))]))


def _prefetch(builder, address):
    """A software prefetch of the cache line at `address` into L2 (prefetcht1)."""
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]), "llvm.prefetch.p0i8")
    # (address, 0 = read, locality 2 = keep in L2, 1 = data cache)
    builder.call(prefetch, [builder.bitcast(address, _I8.as_pointer()), ir.Constant(_I32, 0),
                            ir.Constant(_I32, 2), ir.Constant(_I32, 1)])


def _emit_sliced_sums(context, builder, sig, args, n_tokens, n_rows=1):
    """IR for sum over blocks b of sum_k 2^k popcount(nonzero[r+i, b] & (planes[t+j, b, k] ^ negative[r+i, b]))
    for j < n_tokens, i < n_rows (one of the two is 1); returns the n_tokens * n_rows i64 sums.
    args = (planes, t, nonzero, negative, r)."""
    pl, t, nz, ng, r, n_blocks = _row_args(context, builder, sig, args)
    row_starts = [builder.mul(builder.add(r, ir.Constant(r.type, i)), n_blocks) for i in range(n_rows)]
    nz_rows = [builder.gep(nz.data, [start]) for start in row_starts]   # address arithmetic, not data
    ng_rows = [builder.gep(ng.data, [start]) for start in row_starts]
    blocks = builder.bitcast(pl.data, _QWORDS.as_pointer())          # one block's 8 planes per vector
    tok_rows = [builder.gep(blocks, [builder.mul(builder.add(t, ir.Constant(t.type, j)), n_blocks)])
                for j in range(n_tokens)]
    popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_QWORDS, [_QWORDS]), "llvm.ctpop.v8i64")
    splat = lambda word: _splat(builder, word, _QWORDS)              # noqa: E731  (vpbroadcastq)
    accs = [[cgutils.alloca_once_value(builder, ir.Constant(_QWORDS, None)) for _ in range(n_tokens)]
            for _ in range(n_rows)]
    with cgutils.for_range(builder, n_blocks) as loop:
        b = loop.index
        if n_tokens == 1:                                            # a GEMV streams the planes from memory:
            _prefetch_ahead(builder, b, nz_rows + ng_rows)           # ask for them early
        planes = [builder.load(builder.gep(tok_rows[j], [b]), align=8) for j in range(n_tokens)]
        for i in range(n_rows):
            kz = splat(builder.load(builder.gep(nz_rows[i], [b])))
            kn = splat(builder.load(builder.gep(ng_rows[i], [b])))
            for j in range(n_tokens):
                selected = builder.and_(kz, builder.xor(planes[j], kn))   # one vpternlogq
                builder.store(builder.add(builder.load(accs[i][j]), builder.call(popcount, [selected])), accs[i][j])
    weights = ir.Constant(_QWORDS, list(range(8)))                   # plane k counts 2^k: a shift
    vecs = [builder.shl(builder.load(acc), weights) for row in accs for acc in row]
    return _horizontal_sums(builder, vecs) if len(vecs) == 4 else [s for v in vecs for s in _horizontal_sums(builder, [v])]


def _check_sliced_types(pl, t, nz, ng, r):
    _check_types(pl, t, nz, ng, r, ndim=3, dtype=types.uint64, usage="sliced_popcount(planes uint64 (n, NB, 8) C")


@intrinsic
def sliced_popcount(typingctx, planes, t, nonzero, negative, r):
    """uint64: row r of the planes . token t's bit planes (version 5): the same sum as masked_sad."""
    _check_sliced_types(planes, t, nonzero, negative, r)
    return types.uint64(planes, t, nonzero, negative, r), _row_sums_codegen(_emit_sliced_sums, 1)


ROWS = 4                        # rows per call of sliced_popcount_rows (one token's planes loaded once)


@intrinsic
def sliced_popcount_rows(typingctx, planes, t, nonzero, negative, r):
    """ROWS uint64 sums (rows r .. r+ROWS-1, one token t): each block's planes are loaded once for
    four rows, and the per-row work around the loop (its end, the final sums) is shared."""
    _check_sliced_types(planes, t, nonzero, negative, r)
    ret = types.UniTuple(types.uint64, ROWS)

    def emit(context, builder, sig, args, n_rows):
        return _emit_sliced_sums(context, builder, sig, args, 1, n_rows)
    return ret(planes, t, nonzero, negative, r), _row_sums_codegen(emit, ROWS, ret)


@intrinsic
def sliced_popcount_tokens(typingctx, planes, t, nonzero, negative, r):
    """TOKENS uint64 sums (tokens t .. t+TOKENS-1, one row): each block's plane words are broadcast once."""
    _check_sliced_types(planes, t, nonzero, negative, r)
    ret = types.UniTuple(types.uint64, TOKENS)
    return ret(planes, t, nonzero, negative, r), _row_sums_codegen(_emit_sliced_sums, TOKENS, ret)


# ----------------------------------------------------------------------------
# version 6: lookup tables, one VPERMW per 32 rows x 3 weights x 1 token

LOOKUP_TOKENS = 4               # tokens per call of lookup_chunk (each code vector serves all of them)
_I16 = ir.IntType(16)
_CODES = ir.VectorType(_I8, 32)                                      # 32 rows' codes of one group
_WORDS = ir.VectorType(_I16, 32)                                     # one group's table / 32 int16 sums
_DWORDS = ir.VectorType(_I32, 16)                                    # half of them, widened


def _permw(builder):
    """builder -> f(table, idx) = table[idx[i]] for each of 32 int16 lanes (idx < 32). With AVX-512BW
    that is VPERMW; elsewhere 32 extract/insert pairs that LLVM lowers for any CPU (slow, same result)."""
    if AVAILABLE:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_WORDS, [_WORDS, _WORDS]),
                                            "llvm.x86.avx512.permvar.hi.512")
        return lambda table, idx: builder.call(fn, [table, idx])

    def portable(table, idx):
        out = ir.Constant(_WORDS, None)
        for lane in range(32):
            i = builder.extract_element(idx, ir.Constant(_I32, lane))
            out = builder.insert_element(out, builder.extract_element(table, i), ir.Constant(_I32, lane))
        return out
    return portable


def _check_chunk_types(usage, table_dtype, codes, tables, acc, rb, t, j0, j1):
    """Typing check of lookup_chunk's / nibble_chunk's arguments (codes, tables, acc, rb, t, j0, j1)."""
    ok = (isinstance(codes, types.Array) and codes.ndim == 3 and codes.dtype == types.uint8 and codes.layout == "C"
          and isinstance(tables, types.Array) and tables.ndim == 3 and tables.dtype == table_dtype
          and tables.layout == "C" and isinstance(acc, types.Array) and acc.ndim == 2
          and acc.dtype == types.int32 and acc.layout == "C"
          and all(isinstance(v, types.Integer) for v in (rb, t, j0, j1)))
    if not ok:
        raise numba.core.errors.TypingError(f"{usage}, acc int32 (tokens, width) C, rb, t, j0, j1 ints), "
                                            f"got {(codes, tables, acc, rb, t, j0, j1)}")


def _chunk_args(context, builder, sig, args):
    """A chunk intrinsic's arguments as LLVM values: the three array structs, the four indices as
    intp, the number of groups G and the width of acc."""
    ca, ta, aa = (context.make_array(sig.args[k])(context, builder, args[k]) for k in range(3))
    rb, t, j0, j1 = (context.cast(builder, args[k], sig.args[k], types.intp) for k in range(3, 7))
    _, n_groups, _ = cgutils.unpack_tuple(builder, ca.shape, 3)
    _, width = cgutils.unpack_tuple(builder, aa.shape, 2)
    return ca, ta, aa, rb, t, j0, j1, n_groups, width


@intrinsic
def lookup_chunk(typingctx, codes, tables, acc, rb, t, j0, j1):
    """For each of the LOOKUP_TOKENS tokens t+k and the 32 rows i of row block rb:
        acc[k, 32 rb + i] += sum over groups j0 <= j < j1 of tables[t+k, j, codes[rb, j, i]]
    codes (row blocks, G, 32) uint8 < 32, tables (tokens, G, 32) int16, acc (LOOKUP_TOKENS, width) int32.
    Per group: one load of 32 codes widened to int16 (vpmovzxbw), then per token one table lookup of
    32 lanes (vpermw) and one add (vpaddw); the int16 sums are widened into acc once per call, so the
    caller keeps j1 - j0 small enough that they cannot overflow. No multiplication."""
    _check_chunk_types("lookup_chunk(codes uint8 (RB, G, 32) C, tables int16 (n, G, 32) C", types.int16,
                       codes, tables, acc, rb, t, j0, j1)

    def codegen(context, builder, sig, args):
        ca, ta, aa, rb, t, j0, j1, n_groups, width = _chunk_args(context, builder, sig, args)
        c = lambda v: ir.Constant(n_groups.type, v)                  # noqa: E731
        # address arithmetic (row starts), not data
        code_rows = builder.bitcast(builder.gep(ca.data, [builder.mul(builder.mul(rb, n_groups), c(32))]),
                                    _CODES.as_pointer())
        table_rows = [builder.bitcast(builder.gep(ta.data, [builder.mul(builder.mul(builder.add(t, c(k)), n_groups),
                                                                         c(32))]), _WORDS.as_pointer())
                      for k in range(LOOKUP_TOKENS)]
        permw = _permw(builder)
        sums = [cgutils.alloca_once_value(builder, ir.Constant(_WORDS, None)) for _ in range(LOOKUP_TOKENS)]
        with cgutils.for_range_slice(builder, j0, j1, c(1), inc=True) as (j, _):
            idx = builder.zext(builder.load(builder.gep(code_rows, [j]), align=1), _WORDS)
            for k in range(LOOKUP_TOKENS):
                table = builder.load(builder.gep(table_rows[k], [j]), align=2)
                builder.store(builder.add(builder.load(sums[k]), permw(table, idx)), sums[k])
        halves = [ir.Constant(ir.VectorType(_I32, 16), list(range(16 * h, 16 * h + 16))) for h in range(2)]
        for k in range(LOOKUP_TOKENS):
            s = builder.load(sums[k])
            out = builder.bitcast(builder.gep(aa.data, [builder.add(builder.mul(c(k), width), builder.mul(rb, c(32)))]),
                                  _DWORDS.as_pointer())
            for h in range(2):
                part = builder.sext(builder.shuffle_vector(s, s, halves[h]), _DWORDS)
                q = builder.gep(out, [ir.Constant(_I32, h)])
                builder.store(builder.add(builder.load(q, align=4), part), q, align=4)
        return context.get_dummy_value()
    return types.void(codes, tables, acc, rb, t, j0, j1), codegen


def _table_masks():
    """For entry e < 27 of a group's table (the code e = 9 d0 + 3 d1 + d2, digit 2 / 1 / 0 for a
    +1 / 0 / -1 weight): (adds, subtracts), each three <32 x i16> masks, -1 where activation i is
    added (d_i = 2) or subtracted (d_i = 0). Entries 27..31 are never looked up and stay 0."""
    def vec(pred):
        return [ir.Constant(_WORDS, [ir.Constant(_I16, -1 if e < 27 and pred(e, i) else 0) for e in range(32)])
                for i in range(3)]
    digit = lambda e, i: (e // 9, e // 3 % 3, e % 3)[i]                # noqa: E731
    return vec(lambda e, i: digit(e, i) == 2), vec(lambda e, i: digit(e, i) == 0)


def _check_table_types(usage, table_dtype, xb, tables):
    """Typing check of group_tables' / nibble_tables' arguments: one token's bytes, its tables."""
    if not (isinstance(xb, types.Array) and xb.ndim == 1 and xb.dtype == types.uint8 and xb.layout == "C"
            and isinstance(tables, types.Array) and tables.ndim == 2 and tables.dtype == table_dtype
            and tables.layout == "C"):
        raise numba.core.errors.TypingError(f"{usage}, got {(xb, tables)}")


@intrinsic
def group_tables(typingctx, xb, tables):
    """tables[22 b + m, e] = the signed sum of the activations under bits 3m, 3m+1, 3m+2 of block b
    (bit 63 alone for m = 21) for the weights of code e, for every block b: xb (64 NB,) uint8 is one
    token's int8 activations in bit order (byte k of a block under bit k of the plane words, as
    transpose_blocks lays them out), tables (22 NB, 32) int16. Per group: three bytes widened and
    broadcast, six ANDs with constant masks, five adds and subtractions; no multiplication."""
    _check_table_types("group_tables(xb uint8 (64 NB,) C, tables int16 (22 NB, 32) C)", types.int16, xb, tables)

    def codegen(context, builder, sig, args):
        xa, ta = (context.make_array(sig.args[k])(context, builder, args[k]) for k in range(2))
        (n_bytes,) = cgutils.unpack_tuple(builder, xa.shape, 1)
        adds, subs = _table_masks()
        rows = builder.bitcast(ta.data, ir.ArrayType(_WORDS, 22).as_pointer())   # one block's 22 tables
        splat = lambda value: _splat(builder, value, _WORDS)         # noqa: E731  (vpbroadcastw)
        with cgutils.for_range(builder, builder.lshr(n_bytes, ir.Constant(n_bytes.type, 6))) as loop:
            block = builder.gep(xa.data, [builder.shl(loop.index, ir.Constant(n_bytes.type, 6))])
            for m in range(22):
                xs = [splat(builder.sext(builder.load(builder.gep(block, [ir.Constant(_I32, 3 * m + i)])), _I16))
                      for i in range(3 if m < 21 else 1)]
                plus = minus = None
                for i, x in enumerate(xs):
                    p, q = builder.and_(x, adds[i]), builder.and_(x, subs[i])
                    plus = p if plus is None else builder.add(plus, p)
                    minus = q if minus is None else builder.add(minus, q)
                builder.store(builder.sub(plus, minus), builder.gep(rows, [loop.index, ir.Constant(_I32, m)]), align=2)
        return context.get_dummy_value()
    return types.void(xb, tables), codegen


# ----------------------------------------------------------------------------
# version 7: lookup tables for AVX2, two VPSHUFB per 32 rows x 2 weights x 1 token

NIBBLE_TOKENS = LOOKUP_TOKENS   # tokens per call of nibble_chunk (each code vector serves all of them)
NIBBLE_ROWS = 32                # rows per block of version 7's and 8's codes: one 32-byte vector of codes
NIBBLE_BYTE_GROUPS = 8          # groups summed in bytes before widening: 8 * 30 = 240 < 2^8
_HALF = ir.VectorType(_I8, 16)                                       # a 16-entry table
_LANES = ir.VectorType(_I8, 32)                                      # 32 rows' codes / one table twice / 32 sums
_WIDE = ir.VectorType(_I16, 16)                                      # the same 32 bytes as 16 words


def _pshufb(builder):
    """builder -> f(tables, idx): byte i of the result is byte idx[i] & 15 of the 16-byte half of
    `tables` that holds byte i (idx < 16 here). With AVX2 that is VPSHUFB; elsewhere 32
    extract/insert pairs that LLVM lowers for any CPU (slow, same result)."""
    if AVX2:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_LANES, [_LANES, _LANES]),
                                            "llvm.x86.avx2.pshuf.b")
        return lambda tables, idx: builder.call(fn, [tables, idx])

    def portable(tables, idx):
        out = ir.Constant(_LANES, None)
        for lane in range(32):
            i = builder.and_(builder.extract_element(idx, ir.Constant(_I32, lane)), ir.Constant(_I8, 15))
            i = builder.add(builder.zext(i, _I32), ir.Constant(_I32, lane & 16))
            out = builder.insert_element(out, builder.extract_element(tables, i), ir.Constant(_I32, lane))
        return out
    return portable


def _nibble_codegen(n_tokens, pairs, n_blocks=1):
    """The codegen of nibble_chunk (pairs False: one code per byte, a group per step) and of
    version 8's pair_chunk / pair_chunk1 (pairs True: two codes per byte, low nibble group 2j and
    high nibble group 2j + 1, a pair of groups per step), for n_tokens tokens t .. t + n_tokens - 1
    and n_blocks blocks of NIBBLE_ROWS rows rb .. rb + n_blocks - 1 (each table load serves them all).
    Per step and block: one load of 32 rows' codes (split into two groups' by two ANDs and a shift
    when pairs); per token and group: its two tables (low-nibble sums, high-nibble sums) each
    broadcast to both halves of a vector, two VPSHUFB and two VPADDB into the 32 rows' low and high
    byte sums. Every NIBBLE_BYTE_GROUPS groups the byte sums are widened without crossing a half: each
    16-bit word (even byte + 256 odd byte) is added whole into `evens`, and its odd byte (a shift)
    into `odds`; once per call the odd bytes' share is taken back out (evens - 256 odds, exact mod
    2^16 because the even sums stay below 2^15) and the words are put back in row order."""
    per_step = 2 if pairs else 1                                     # groups per byte of codes
    sums_of = [(k, b, h) for k in range(n_tokens) for b in range(n_blocks) for h in range(2)]   # h: low / high nibbles

    def codegen(context, builder, sig, args):
        ca, ta, aa, rb, t, j0, j1, n_steps, width = _chunk_args(context, builder, sig, args)
        c = lambda v: ir.Constant(n_steps.type, v)                   # noqa: E731
        idx = lambda lanes: ir.Constant(ir.VectorType(_I32, len(lanes)), lanes)   # noqa: E731
        splat8 = lambda v: ir.Constant(_LANES, [ir.Constant(_I8, v)] * 32)        # noqa: E731
        splat16 = lambda v: ir.Constant(_WIDE, [ir.Constant(_I16, v)] * 16)       # noqa: E731
        # address arithmetic (row starts), not data
        code_rows = [builder.bitcast(builder.gep(ca.data, [builder.mul(builder.mul(builder.add(rb, c(b)), n_steps),
                                                                        c(NIBBLE_ROWS))]), _LANES.as_pointer())
                     for b in range(n_blocks)]
        table_rows = [builder.bitcast(builder.gep(ta.data, [builder.mul(builder.mul(builder.add(t, c(k)), n_steps),
                                                                         c(32 * per_step))]), _HALF.as_pointer())
                      for k in range(n_tokens)]                      # 16-byte tables: group g's at 2g and 2g + 1
        pshufb = _pshufb(builder)
        new = lambda v: {key: cgutils.alloca_once_value(builder, v) for key in sums_of}   # noqa: E731
        sums, evens, odds = new(ir.Constant(_LANES, None)), new(ir.Constant(_WIDE, None)), new(ir.Constant(_WIDE, None))
        step = c(NIBBLE_BYTE_GROUPS // per_step)
        with cgutils.for_range_slice(builder, j0, j1, step, inc=True) as (s0, _):
            s1 = builder.select(builder.icmp_signed("<", builder.add(s0, step), j1), builder.add(s0, step), j1)
            for key in sums_of:
                builder.store(ir.Constant(_LANES, None), sums[key])
            if pairs and n_tokens == 1:                              # a GEMV streams its codes from memory:
                for b in range(n_blocks):                            # a step reads two cache lines of each
                    for line in (0, 2):
                        _prefetch(builder, builder.gep(code_rows[b], [builder.add(s0, c(PAIR_PREFETCH + line))]))
            with cgutils.for_range_slice(builder, s0, s1, c(1), inc=True) as (j, _):
                codes = []
                for b in range(n_blocks):
                    v = builder.load(builder.gep(code_rows[b], [j]), align=1)
                    # the high nibble: a byte shift clears its top bits (x86 has none: VPSRLW, then VPAND)
                    codes.append([builder.and_(v, splat8(15)), builder.lshr(v, splat8(4))] if pairs else [v])
                first = builder.shl(j, c(per_step))                          # the step's first table: 2 per_step j
                for k in range(n_tokens):
                    tables = []                                      # [group][h], each in both halves
                    for g in range(per_step):
                        pair = []
                        for h in range(2):
                            half = builder.load(builder.gep(table_rows[k], [builder.add(first, c(2 * g + h))]),
                                                align=1)
                            pair.append(builder.shuffle_vector(half, half, idx(list(range(16)) * 2)))   # vbroadcasti128
                        tables.append(pair)
                    for b in range(n_blocks):
                        for h in range(2):
                            looked = [pshufb(tables[g][h], codes[b][g]) for g in range(per_step)]
                            total = looked[0] if per_step == 1 else builder.add(looked[0], looked[1])
                            builder.store(builder.add(builder.load(sums[k, b, h]), total), sums[k, b, h])
            for key in sums_of:                                      # bytes -> words: whole words, odd bytes
                words = builder.bitcast(builder.load(sums[key]), _WIDE)
                builder.store(builder.add(builder.load(evens[key]), words), evens[key])
                builder.store(builder.add(builder.load(odds[key]), builder.lshr(words, splat16(8))), odds[key])
        wide = ir.VectorType(_I32, 32)
        row_order = idx([lane for w in range(16) for lane in (w, 16 + w)])   # row 2w: even word w; 2w + 1: odd
        def row_sums(key):                                           # the even bytes' sums, then rows in order
            odd = builder.load(odds[key])
            even = builder.sub(builder.load(evens[key]), builder.shl(odd, splat16(8)))
            return builder.zext(builder.shuffle_vector(even, odd, row_order), wide)
        for k in range(n_tokens):
            for b in range(n_blocks):
                lo, hi = row_sums((k, b, 0)), row_sums((k, b, 1))
                out = builder.bitcast(builder.gep(aa.data, [builder.add(builder.mul(c(k), width),
                                                                        builder.mul(builder.add(rb, c(b)), c(NIBBLE_ROWS)))]),
                                      wide.as_pointer())
                total = builder.add(builder.shl(hi, ir.Constant(wide, [4] * 32)), lo)   # 16 hi + lo
                builder.store(builder.add(builder.load(out, align=4), total), out, align=4)
        return context.get_dummy_value()
    return codegen


@intrinsic
def nibble_chunk(typingctx, codes, tables, acc, rb, t, j0, j1):
    """For each of the NIBBLE_TOKENS tokens t+k and the 32 rows i of row block rb:
        acc[k, 32 rb + i] += sum over groups j0 <= j < j1 of (16 hi + lo), where
        lo, hi = tables[t+k, j, codes[rb, j, i]], tables[t+k, j, 16 + codes[rb, j, i]]
    codes (row blocks, G, 32) uint8 < 16, tables (tokens, G, 32) uint8 (each entry <= 30), acc
    (NIBBLE_TOKENS, width) int32. Per group: 32 codes loaded once, then per token its two 16-entry
    tables broadcast, two VPSHUFB look up the 32 rows' low-nibble and high-nibble sums and two VPADDB
    add them (_nibble_codegen); the bytes are widened to words every NIBBLE_BYTE_GROUPS groups and
    into acc once per call, so the caller keeps j1 - j0 <= 1024 (1024 * 30 < 2^15). The final
    16 hi is a shift. No multiplication."""
    _check_chunk_types("nibble_chunk(codes uint8 (RB, G, 32) C, tables uint8 (n, G, 32) C", types.uint8,
                       codes, tables, acc, rb, t, j0, j1)
    return types.void(codes, tables, acc, rb, t, j0, j1), _nibble_codegen(NIBBLE_TOKENS, pairs=False)


def _nibble_masks():
    """For entry e < 16 of a group's table (e = nonzero bits of the two weights | negative bits << 2),
    four <32 x i8> masks, 0xFF where weight i counts its nibble v (+1: nonzero, not negative) or
    15 - v (-1: nonzero and negative), the same in both 16-byte halves."""
    def vec(i, negative):
        return ir.Constant(_LANES, [ir.Constant(_I8, -1 if (e >> i) & 1 and (e >> (i + 2)) & 1 == negative else 0)
                                    for e in list(range(16)) * 2])
    return vec(0, 0), vec(0, 1), vec(1, 0), vec(1, 1)


@intrinsic
def nibble_tables(typingctx, xb, tables):
    """tables[32 b + m] = group m of block b's two tables (the activations under bits 2m and 2m+1 of
    the plane words): byte e < 16 the low-nibble sum, byte 16 + e the high-nibble sum, for the
    weights of code e (nonzero bits | negative bits << 2), where a +1 weight counts the nibble v of
    its offset-binary activation u = x + 128 and a -1 weight counts 15 - v (so that 16 hi + lo is
    the sum of u and 255 - u that versions 4 and 5 compute before their offsets). xb (64 NB,) uint8 is
    one token's int8 activations in bit order (transpose_blocks), tables (32 NB, 32) uint8.
    Per group: two VPSHUFB broadcasts, two XORs, four ANDs with constant masks, three adds."""
    _check_table_types("nibble_tables(xb uint8 (64 NB,) C, tables uint8 (32 NB, 32) C)", types.uint8, xb, tables)

    def codegen(context, builder, sig, args):
        xa, ta = (context.make_array(sig.args[k])(context, builder, args[k]) for k in range(2))
        (n_bytes,) = cgutils.unpack_tuple(builder, xa.shape, 1)
        plus0, minus0, plus1, minus1 = _nibble_masks()
        idx = lambda lanes: ir.Constant(ir.VectorType(_I32, len(lanes)), lanes)   # noqa: E731
        splat8 = lambda v: ir.Constant(_HALF, [ir.Constant(_I8, v)] * 16)        # noqa: E731
        fifteen = ir.Constant(_LANES, [ir.Constant(_I8, 15)] * 32)
        chunks = builder.bitcast(xa.data, _HALF.as_pointer())        # 16 activations at a time
        rows = builder.bitcast(ta.data, _LANES.as_pointer())
        with cgutils.for_range(builder, builder.lshr(n_bytes, ir.Constant(n_bytes.type, 4))) as loop:
            u = builder.xor(builder.load(builder.gep(chunks, [loop.index]), align=1), splat8(-128))   # x + 128
            low, high = builder.and_(u, splat8(15)), builder.lshr(u, splat8(4))
            nibbles = builder.shuffle_vector(low, high, idx(list(range(32))))    # (low nibbles | high nibbles)
            for g in range(8):                                       # 8 groups of 2 activations
                entry = None
                for i, (plus, minus) in enumerate(((plus0, minus0), (plus1, minus1))):
                    a = 2 * g + i
                    v = builder.shuffle_vector(nibbles, nibbles, idx([a] * 16 + [16 + a] * 16))   # vpshufb
                    term = builder.add(builder.and_(v, plus), builder.and_(builder.xor(v, fifteen), minus))
                    entry = term if entry is None else builder.add(entry, term)
                q = builder.gep(rows, [builder.add(builder.shl(loop.index, ir.Constant(n_bytes.type, 3)),
                                                   ir.Constant(n_bytes.type, g))])
                builder.store(entry, q, align=1)
        return context.get_dummy_value()
    return types.void(xb, tables), codegen


# ----------------------------------------------------------------------------
# version 8: version 7's codes stored, two per byte, for one token (a GEMV) or a few

# 32-byte code rows (32 KiB) ahead of version 8's GEMV reads. Measured on the 370M shape's products of one
# token (24 layers + head, codes out of cache; AMD EPYC 7003, 2 threads, 4 alternated process rounds,
# medians of 60 tokens, 16-row blocks then): 7.0-8.2 ms without, 6.2-7.6 ms at 16 KiB ahead, 6.5-7.0 ms at 32 KiB
PAIR_PREFETCH = 1024
PAIR_BLOCKS = 2                 # row blocks per call of pair_chunk1 (each table load serves them all)


@intrinsic
def pair_chunk(typingctx, codes, tables, acc, rb, t, j0, j1):
    """nibble_chunk over codes stored two per byte, for the NIBBLE_TOKENS tokens t + k and row block rb:
    codes (row blocks, G / 2, 32) uint8, byte i of [rb, j] holding row 32 rb + i's code of group 2j
    (low nibble) and of group 2j + 1 (high nibble), for pairs j0 <= j < j1 (the caller keeps j1 - j0
    <= 512). Per pair: the 32 bytes loaded once, two ANDs and a shift split them into the two groups'
    codes, then per token four table broadcasts, four VPSHUFB and four VPADDB."""
    _check_chunk_types("pair_chunk(codes uint8 (RB, G/2, 32) C, tables uint8 (n, G, 32) C", types.uint8,
                       codes, tables, acc, rb, t, j0, j1)
    return types.void(codes, tables, acc, rb, t, j0, j1), _nibble_codegen(NIBBLE_TOKENS, pairs=True)


@intrinsic
def pair_chunk1(typingctx, codes, tables, acc, rb, t, j0, j1):
    """pair_chunk for the one token t (a GEMV) and the PAIR_BLOCKS row blocks rb, rb + 1, ...: acc
    (1, width); each table load serves all of them, and the codes are prefetched PAIR_PREFETCH rows ahead."""
    _check_chunk_types("pair_chunk1(codes uint8 (RB, G/2, 32) C, tables uint8 (n, G, 32) C", types.uint8,
                       codes, tables, acc, rb, t, j0, j1)
    return types.void(codes, tables, acc, rb, t, j0, j1), _nibble_codegen(1, pairs=True, n_blocks=PAIR_BLOCKS)
