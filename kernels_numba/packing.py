"""Packed ternary weights: 2 bits per weight, laid out so the kernels need no multiplication.

A ternary matrix Wt (out, in) with entries in {-1, 0, +1} (E3 integer form) is stored as two
*bit planes*, one uint64 word per 64 input columns ("block") per row:

    nonzero[r, b]  bit (8*j + i) = 1  iff  Wt[r, 64*b + 8*i + j] != 0
    negative[r, b] bit (8*j + i) = 1  iff  Wt[r, 64*b + 8*i + j] == -1

so 64 weights take 2 x 64 bits = 2 bits per weight (16x smaller than float32). The odd-looking bit
order is what makes the kernel cheap: the activations of columns 64b + 8i + 0..7 are 8 consecutive
bytes, i.e. ONE uint64 word, and `(plane >> i) & 0x0101010101010101` puts exactly the bits of
those 8 columns into the low bit of the matching byte. Shifts, ands and adds then work on 8 byte
lanes at once inside a 64-bit integer (SWAR), and the compiler widens that to 512-bit vectors.

Picture, one row and one block (64 columns), bit positions of the plane word:

    byte j = 0       1       2  ...  7          <- byte lane of the activation word
    bit  i = 0..7   0..7    0..7     0..7       <- which activation word (columns 8i..8i+7)
    column = 64b + 8i + j

Activations go in *offset binary*: u = q + 128 (= q XOR 0x80 as a byte) is in [0, 255], so the
kernel sums unsigned bytes. For a +1 weight it adds u = q + 128, for a -1 weight it adds
~u = 255 - u = 127 - q, for a 0 weight nothing; the constant parts are known at packing time:

    sum_j Wt[r, j] q_j  =  sum(selected bytes)  -  (128 * n_plus[r] + 127 * n_minus[r])

`offset[r]` stores that correction. Padding columns have nonzero = 0, so they add nothing.
The per-tensor scale beta (E3) is kept beside the planes.
"""
import mmap
import sys
from dataclasses import dataclass

import numpy as np

BLOCK = 64                      # columns per plane word (bits in a uint64)
WORD = 8                        # activation bytes per uint64 word

if sys.byteorder != "little":   # the uint8 <-> uint64 views below assume byte j = bits 8j..8j+7
    raise ImportError("kernels_numba's packed layout assumes a little-endian machine")


@dataclass(frozen=True)
class PackedTernary:
    """A ternary matrix (out, in) in the bit-plane layout above, plus its scale beta.

    The kernels read these arrays without bounds checks, so a PackedTernary is validated once, when
    it is made (shapes, dtypes, padding, offsets: see `_validate`), and is immutable afterwards: its
    fields cannot be reassigned and its arrays are private read-only copies. Every public product
    then needs only O(1) checks per call. Build one with `pack_ternary`; the constructor accepts
    hand-made planes too, but refuses any that disagree with each other."""
    nonzero: np.ndarray     # (out, n_blocks) uint64
    negative: np.ndarray    # (out, n_blocks) uint64
    offset: np.ndarray      # (out,) int64: 128 * n_plus + 127 * n_minus
    shape: tuple            # (out, in) of the unpacked matrix
    scale: float = 1.0      # beta, the E3 per-tensor scale (1.0 when packing bare ternary codes)

    def __post_init__(self):
        _validate(self)

    @classmethod
    def _trusted(cls, nonzero, negative, offset, shape, scale=1.0):
        """Internal: wrap planes this package made itself (already valid) without copying or checking."""
        p = object.__new__(cls)
        for name, value in (("nonzero", nonzero), ("negative", negative), ("offset", offset),
                            ("shape", shape), ("scale", scale)):
            object.__setattr__(p, name, value)
        return p

    @property
    def n_blocks(self):
        return self.nonzero.shape[1]

    @property
    def nbytes(self):
        """Resident bytes of the packed weights (both planes and the row offsets)."""
        return self.nonzero.nbytes + self.negative.nbytes + self.offset.nbytes


def _frozen_copy(a, dtype):
    return _read_only(np.asarray(a, dtype=dtype))


HUGE_PAGE = 2 << 20             # a transparent huge page (x86-64 PMD size)


def huge_page_empty(shape, dtype, read_only_source=None):
    """An uninitialised C-contiguous array on transparent huge pages where the OS gives them (Linux:
    a private anonymous mapping aligned to 2 MiB, madvise(MADV_HUGEPAGE) on the whole 2 MiB pages it
    holds, the tail on ordinary pages so nothing beyond the array becomes resident); arrays under
    2 MiB and systems without madvise get an ordinary np.empty.

    Why: the weight planes are streamed by every product, and on 4 KiB pages a 4 MiB matrix spans
    1024 pages, each a TLB entry (in a virtual machine a miss walks two page tables). Measured on a
    quiet machine: 370M-shape decoding ran ~7% faster with the planes on huge pages than on 4 KiB
    pages (median tok/s 233/228/206 against 218/199/190 in three alternated process pairs).
    They are NOT the cure for the 4096^2 GEMV's slow mode after an idle pause, as first suspected:
    that is the second OpenMP thread going to sleep (`python -m kernels_numba.bench --peers --only
    pauses` shows it; README, "Beside real peers"). NumPy itself asks for huge pages only from 4 MiB
    on, and not at all for memory it does not allocate (bytes objects).

    read_only_source: if given (an array of this shape), its data is copied in and a read-only
    array returned whose write flag cannot be turned back on (its buffer is a read-only view)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        if read_only_source is None:
            return np.empty(shape, dtype)
        return np.frombuffer(np.ascontiguousarray(read_only_source, dtype).tobytes(), dtype).reshape(shape)
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(mapping, np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE                           # first 2 MiB boundary inside
    # whole huge pages only: a partial one at the end would become resident whole
    mapping.madvise(mmap.MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
    view = whole[start:start + nbytes].view(dtype).reshape(shape)
    del whole
    if read_only_source is None:
        return view
    view[...] = read_only_source
    return np.frombuffer(memoryview(mapping)[start:start + nbytes].toreadonly(), dtype).reshape(shape)


def _read_only(a):
    """A private read-only copy of a: even `setflags(write=True)` is refused (NumPy lets an array
    that owns its memory become writable again), because its buffer is read-only (an immutable
    bytes object, or a read-only view of a huge-page mapping from 2 MiB on)."""
    return huge_page_empty(a.shape, a.dtype, read_only_source=a)


def _popcount_rows(plane):
    """(out, nb) uint64 -> (out,) int64 set bits per row (np.bitwise_count needs NumPy 2)."""
    return np.unpackbits(plane.view(np.uint8), axis=1).sum(axis=1, dtype=np.int64)


def _validate(p):
    """Every invariant the kernels rely on (memory safety) or that makes their result right."""
    shape = p.shape
    if (not isinstance(shape, tuple) or len(shape) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shape)
            or shape[0] < 1 or shape[1] < 1):
        raise ValueError(f"PackedTernary.shape must be a tuple (out, in) of two positive ints, got {shape!r}")
    out, n_in = int(shape[0]), int(shape[1])
    nb = n_blocks(n_in)
    for name, want_dtype, want_shape in (("nonzero", np.uint64, (out, nb)), ("negative", np.uint64, (out, nb)),
                                         ("offset", np.int64, (out,))):
        a = getattr(p, name)
        if not isinstance(a, np.ndarray) or a.dtype != want_dtype:
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"PackedTernary.{name} must be a numpy {np.dtype(want_dtype)} array, got {got}; "
                            "make packed matrices with kernels_numba.pack_ternary")
        if a.shape != want_shape:
            raise ValueError(f"PackedTernary.{name} must have shape {want_shape} for a matrix of shape "
                             f"{(out, n_in)} ({nb} blocks of {BLOCK} columns per row), got {a.shape}; "
                             "make packed matrices with kernels_numba.pack_ternary")
    scale = p.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(scale):
        raise ValueError(f"PackedTernary.scale must be a finite number, got {scale!r}")
    nonzero, negative = _frozen_copy(p.nonzero, np.uint64), _frozen_copy(p.negative, np.uint64)
    offset = _frozen_copy(p.offset, np.int64)
    if np.any(negative & ~nonzero):
        raise ValueError("PackedTernary.negative has bits where nonzero has none (a -1 weight must be nonzero); "
                         "make packed matrices with kernels_numba.pack_ternary")
    pad = _padding_mask(n_in, nb)                                    # (nb,) bits of columns >= in
    if np.any(nonzero & pad):
        raise ValueError(f"PackedTernary.nonzero has bits in the padding columns >= {n_in}; "
                         "make packed matrices with kernels_numba.pack_ternary")
    n_minus = _popcount_rows(negative)
    n_plus = _popcount_rows(nonzero) - n_minus
    if not np.array_equal(offset, 128 * n_plus + 127 * n_minus):
        bad = int(np.flatnonzero(offset != 128 * n_plus + 127 * n_minus)[0])
        raise ValueError(f"PackedTernary.offset[{bad}] = {int(offset[bad])} does not match its row's planes "
                         f"(128 * n_plus + 127 * n_minus = {int(128 * n_plus[bad] + 127 * n_minus[bad])}); "
                         "make packed matrices with kernels_numba.pack_ternary")
    for name, value in (("nonzero", nonzero), ("negative", negative), ("offset", offset),
                        ("shape", (out, n_in)), ("scale", float(scale))):
        object.__setattr__(p, name, value)


def _padding_mask(n_in, nb):
    """(nb,) uint64: for each block, the plane bits (8j + i) of columns 64b + 8i + j >= n_in."""
    cols = np.arange(nb * BLOCK).reshape(nb, WORD, WORD)             # [b, i, j] -> column 64b + 8i + j
    bit = (8 * np.arange(WORD)[None, None, :] + np.arange(WORD)[None, :, None]).astype(np.uint64)
    mask = np.where(cols >= n_in, np.left_shift(np.uint64(1), bit), np.uint64(0))
    return np.bitwise_or.reduce(mask.reshape(nb, -1), axis=1).astype(np.uint64)


VECTOR_BLOCKS = 8               # a 512-bit vector holds 8 plane words


def n_blocks(n_in):
    """Plane words per row: ceil(n_in / 64), rounded up to a multiple of 8 once there are 8 or more,
    so the kernels' vector loops over blocks have no scalar remainder (a remainder of a few blocks
    costs more than the zero padding: measured 0.12 ms for 44 blocks vs 0.10 ms for 48)."""
    nb = -(-n_in // BLOCK)
    return nb if nb < VECTOR_BLOCKS else -(-nb // VECTOR_BLOCKS) * VECTOR_BLOCKS


def _check_ternary(w):
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w must be a numpy int8 array of -1/0/+1, got {type(w).__name__}")
    if w.dtype != np.int8:
        raise TypeError(f"w must have dtype int8 (ternary codes -1/0/+1), got {w.dtype}; "
                        "quantize first with mmf.layers.quant.weight_quant_int(W)")
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"w must be a non-empty 2-D matrix (out, in), got shape {w.shape}")
    if w.size and (w.min() < -1 or w.max() > 1):
        bad = w[(w < -1) | (w > 1)]
        raise ValueError(f"w is not ternary: it holds values outside {{-1, 0, 1}} (e.g. {int(bad[0])}); "
                         "quantize first with mmf.layers.quant.weight_quant_int(W)")


def _plane(bits):
    """bits (out, in_pad) bool -> (out, n_blocks) uint64 with bit 8j+i = bits[r, 64b + 8i + j]."""
    out, in_pad = bits.shape
    b = bits.reshape(out, in_pad // BLOCK, WORD, WORD)             # [r, block, i, j]
    b = np.ascontiguousarray(b.transpose(0, 1, 3, 2))               # [r, block, j, i]
    bytes_ = np.packbits(b, axis=-1, bitorder="little")              # (out, n_blocks, 8) byte j holds bits i
    return np.ascontiguousarray(bytes_.reshape(out, -1)).view(np.uint64)   # (out, n_blocks)


def pack_ternary(w, scale=1.0):
    """int8 (out, in) matrix of -1/0/+1 -> PackedTernary. Rejects anything else (no silent casting)."""
    _check_ternary(w)
    out, n_in = w.shape
    in_pad = n_blocks(n_in) * BLOCK
    wp = np.zeros((out, in_pad), np.int8)                            # (out, in) -> (out, in_pad)
    wp[:, :n_in] = w
    n_plus = np.count_nonzero(wp == 1, axis=1)
    n_minus = np.count_nonzero(wp == -1, axis=1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    nonzero, negative = _plane(wp != 0), _plane(wp == -1)
    offset = (128 * n_plus + 127 * n_minus).astype(np.int64)
    return PackedTernary._trusted(_read_only(nonzero), _read_only(negative), _read_only(offset),
                                  (out, n_in), float(scale))          # valid by construction: freeze only


def unpack_ternary(p):
    """PackedTernary -> the int8 (out, in) matrix it holds (exact inverse of pack_ternary)."""
    out, n_in = p.shape

    def bits(plane):
        b = np.unpackbits(plane.view(np.uint8).reshape(out, -1, WORD, 1), axis=-1,
                          bitorder="little")                         # (out, n_blocks, 8 j, 8 i)
        return b.transpose(0, 1, 3, 2).reshape(out, -1)[:, :n_in].astype(bool)

    nz, neg = bits(p.nonzero), bits(p.negative)
    return np.where(nz, np.where(neg, -1, 1), 0).astype(np.int8)


def pack_model_weight(W, rows_per_chunk=1024):
    """A float latent weight (out, in) -> PackedTernary with its E3 scale beta, equal to packing
    mmf's weight_quant_int of W in float32.

    W may be an array in memory or a read-only memory map of a checkpoint's BF16/F16/F32 tensor
    (Engine.from_pretrained). beta = mean|W| needs |W| once in float32, the one temporary as large as
    the matrix (its sum is NumPy's pairwise float32 sum, the same as weight_scale's); the codes are
    then made and packed `rows_per_chunk` rows at a time into the preallocated planes, so nothing
    else grows with the matrix."""
    from mmf.layers.quant import WEIGHT_EPS, ternary_codes
    out, n_in = W.shape
    magnitude = np.array(W, dtype=np.float32)                       # (out, in) the one full-size copy
    np.abs(magnitude, out=magnitude)
    beta = max(float(np.mean(magnitude)), WEIGHT_EPS)               # = weight_scale(W as float32)
    del magnitude
    if not np.isfinite(beta):                                        # mean |W| is finite iff every entry is
        raise ValueError(f"a weight matrix of shape {W.shape} holds NaN/inf: a diverged run? Use an earlier checkpoint")
    nb = n_blocks(n_in)
    nonzero, negative = np.empty((out, nb), np.uint64), np.empty((out, nb), np.uint64)
    offset = np.empty(out, np.int64)
    for r in range(0, out, rows_per_chunk):
        rows = slice(r, min(r + rows_per_chunk, out))
        p = pack_ternary(ternary_codes(np.asarray(W[rows], dtype=np.float32), beta))
        nonzero[rows], negative[rows], offset[rows] = p.nonzero, p.negative, p.offset
    return PackedTernary._trusted(_read_only(nonzero), _read_only(negative), _read_only(offset),
                                  (out, n_in), beta)                 # valid by construction: freeze only


# ----------------------------------------------------------------------------
# activations

def check_activations(name, x_q, n_in, ndim):
    if not isinstance(x_q, np.ndarray):
        raise TypeError(f"{name} must be a numpy int8 array, got {type(x_q).__name__}")
    if x_q.dtype != np.int8:
        raise TypeError(f"{name} must have dtype int8 (E2 activation codes), got {x_q.dtype}; "
                        "quantize first with mmf.layers.quant.activation_quant_int(x)")
    if x_q.ndim != ndim or x_q.shape[-1] != n_in:
        want = f"({n_in},)" if ndim == 1 else f"(n, {n_in})"
        raise ValueError(f"{name} must have shape {want} to match the packed weight's {n_in} inputs, "
                         f"got {x_q.shape}")


def activation_words(x_q, n_blk):
    """int8 (..., in) -> uint64 (..., 8, n_blocks): offset-binary bytes u = q + 128, padded with zeros
    (any value would do: padded weights are 0), word [i, b] = columns 64b + 8i .. 64b + 8i + 7."""
    lead = x_q.shape[:-1]
    u = np.zeros(lead + (n_blk * BLOCK,), np.uint8)                  # (..., in_pad)
    np.bitwise_xor(x_q.view(np.uint8), np.uint8(0x80), out=u[..., :x_q.shape[-1]])
    w = u.view(np.uint64).reshape(lead + (n_blk, WORD))              # (..., n_blocks, 8 i)
    return np.ascontiguousarray(np.swapaxes(w, -1, -2))              # (..., 8 i, n_blocks)


# ----------------------------------------------------------------------------
# the lookup-table layout (products.py version 2): five weights per byte, base 3

LUT_GROUP = 5                   # 3**5 = 243 <= 256: five ternary weights fit one byte (1.6 bits/weight)


def pack_base3(w):
    """int8 (out, in) ternary -> uint8 (out, ceil(in/5)) with byte = sum_k (w_k + 1) 3^k (TL2-like)."""
    _check_ternary(w)
    out, n_in = w.shape
    n_grp = -(-n_in // LUT_GROUP)
    d = np.ones((out, n_grp * LUT_GROUP), np.uint8)                  # digit 1 = weight 0 (padding)
    d[:, :n_in] = (w + 1).astype(np.uint8)
    d = d.reshape(out, n_grp, LUT_GROUP)                             # (out, groups, 5) digits 0..2
    powers = (3 ** np.arange(LUT_GROUP)).astype(np.uint8)            # 1, 3, 9, 27, 81 (packing time, not a kernel)
    return (d * powers).sum(axis=-1).astype(np.uint8)                # (out, groups)
