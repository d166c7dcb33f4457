"""Explicit 512-bit SIMD for the ternary kernels: mask registers + VPSADBW, written as LLVM IR.

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

Where the CPU lacks AVX-512BW (`AVAILABLE` is False) the same IR is built with a portable byte sum
that LLVM lowers for any CPU, and the public API prefers the SWAR kernel (version 3), which is
faster there; all give identical integers.
"""
import os

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

TOKENS = 4                      # tokens per call of masked_sad_tokens (their masks are loaded once)


def _host_has_avx512bw():
    import llvmlite.binding as llvm
    if numba.config.CPU_NAME not in (None, "host"):                  # cross-compiling for another CPU
        return False
    try:
        return bool(llvm.get_host_cpu_features().get("avx512bw", False))
    except RuntimeError:                                             # features unknown: be safe
        return False


# MMF_NO_AVX512=1 forces the portable path (tests use it, with a fresh NUMBA_CACHE_DIR: Numba's
# on-disk cache does not know about this switch)
AVAILABLE = _host_has_avx512bw() and os.environ.get("MMF_NO_AVX512") != "1"

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_BYTES = ir.VectorType(_I8, 64)                                      # one zmm of activation bytes
_MASK = ir.VectorType(_I1, 64)                                       # one k register
_QWORDS = ir.VectorType(_I64, 8)                                     # psadbw's eight 64-bit sums


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


def _emit_sums(context, builder, sig, args, n_tokens):
    """IR for sum over blocks b of psadbw(select(kz, u[t+j, b], 0), select(kn, 0xFF, 0)) for
    j < n_tokens; returns n_tokens i64 values. args = (u, t, nonzero, negative, r)."""
    u_ty, _, nz_ty, ng_ty, _ = sig.args
    u = context.make_array(u_ty)(context, builder, args[0])
    nz = context.make_array(nz_ty)(context, builder, args[2])
    ng = context.make_array(ng_ty)(context, builder, args[3])
    t, r = args[1], args[4]
    _, n_blocks = cgutils.unpack_tuple(builder, nz.shape, 2)
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


def _check_types(u, t, nz, ng, r):
    ok = (isinstance(u, types.Array) and u.ndim == 2 and u.dtype == types.uint8 and u.layout == "C"
          and isinstance(nz, types.Array) and nz.ndim == 2 and nz.dtype == types.uint64 and nz.layout == "C"
          and ng == nz and isinstance(t, types.Integer) and isinstance(r, types.Integer))
    if not ok:
        raise numba.core.errors.TypingError("masked_sad(u uint8 (n, 64*NB) C, t int, nonzero uint64 (R, NB) C, "
                                            f"negative like nonzero, r int), got {(u, t, nz, ng, r)}")


@intrinsic
def masked_sad(typingctx, u, t, nonzero, negative, r):
    """uint64: sum over the 64-weight blocks of row r of the selected bytes of token t (see above)."""
    _check_types(u, t, nonzero, negative, r)

    def codegen(context, builder, sig, args):
        args = list(args)
        args[1] = context.cast(builder, args[1], sig.args[1], types.intp)
        args[4] = context.cast(builder, args[4], sig.args[4], types.intp)
        return _emit_sums(context, builder, sig, args, 1)[0]
    return types.uint64(u, t, nonzero, negative, r), codegen


@intrinsic
def masked_sad_tokens(typingctx, u, t, nonzero, negative, r):
    """TOKENS uint64 sums (tokens t .. t+TOKENS-1, one row): each block's masks are loaded once."""
    _check_types(u, t, nonzero, negative, r)
    ret = types.UniTuple(types.uint64, TOKENS)

    def codegen(context, builder, sig, args):
        args = list(args)
        args[1] = context.cast(builder, args[1], sig.args[1], types.intp)
        args[4] = context.cast(builder, args[4], sig.args[4], types.intp)
        return context.make_tuple(builder, ret, _emit_sums(context, builder, sig, args, TOKENS))
    return ret(u, t, nonzero, negative, r), codegen
