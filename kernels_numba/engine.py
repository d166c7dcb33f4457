"""Engine: an mmf.MMfreeLM loaded once into packed form, decoding with carried MLGRU state.

What is resident after loading (float32 model -> engine):
  * every BitLinear (4 MLGRU projections, GLU gate/down, LM head) packed at 2 bits per weight + one
    scale beta (E3) + one row offset, its RMSNorm gain in float32; the weights in one of two layouts
    (`layout`, the faster one on this CPU by default: LAYOUT):
      "planes"  PackedTernary's two bit planes, read by versions 3-5 (steps) and 6-7 (prefills);
      "pairs"   products.PackedPairs, version 7's 4-bit codes two per byte, read by version 8 for
                every product (AVX2 without AVX-512: its GEMV beats version 5's, see README);
  * the norms' gains and the lower bounds (E7, computed once) in float32;
  * the embedding table, one of
      "float32"  in memory (default, exact);
      "mmap"     float32 in a file mapped into memory (exact): decoding reads one row per token, so
                 only the rows of tokens seen become resident, as llama.cpp does with its weights;
      "int8"     one int8 row + one scale per token (what llama.cpp/bitnet.cpp call Q8 embeddings:
                 4x smaller, no longer exact).

One decoding step for B sequences (E4-E10 with the integer BitLinear form):
  x = Emb[tok]; per layer: xn = rms(x; attn_norm); i, f, g = BitLinear(xn) (one kernel launch for the
  three, each with its own norm + int8 quantization); h = f h + SiLU(i)(1 - f); o = rms(g) SiLU(h);
  x += BitLinear_o(o); rn = rms(x; mlp_norm); x += BitLinear_down(SiLU(gate) up); then
  logits = BitLinear_head(rms(x; norm)). Every BitLinear product is, on the planes, the add/subtract
  kernel that products.py runs best on this CPU for one token (BEST: version 5, bit-sliced
  activations + a popcount, with VPOPCNTQ; version 4 with AVX-512BW alone; else version 3, SWAR) or
  for several (BEST_TOKENS); on the pairs, version 8; the whole step is one compiled function.

A prompt is prefilled with the matrix-matrix kernel: all its tokens go through each BitLinear at
once and only the recurrence walks over time (`prefill`; `prefill_stepwise` is the plain loop).
"""
import mmap
import os
import tempfile

import numpy as np
from numba import njit, prange

from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.models.generate import _check_options, sample_next
from mmf.layers.mlgru import lower_bounds_forward
from mmf.models.mmfree import MMfreeLM
from mmf.models.registry import require

from . import fused, mixers
from .fused import ACT_EPS, ACT_QMAX, SAFE_FAST, _sum_squares, maxnum
from .packing import PackedTernary, huge_page_empty, n_blocks, pack_model_weight
from .expf import sigmoid32
from .scan import mlgru_step_kernel
from . import simd
from .simd import LOOKUP_TOKENS, NIBBLE_ROWS, NIBBLE_TOKENS, PAIR_BLOCKS, ROWS, TOKENS, masked_sad, nibble_tables, transpose_blocks
from .products import (BEST, BEST_TOKENS, LOOKUP_GROUPS, MATMULS, NIBBLE_GROUPS, NIBBLE_ROW_BLOCKS, lookup_codes_bytes,
                       lookup_product, lookup_tables, nibble_codes_bytes, nibble_product, nibble_tables_of,
                       pack_pairs, pair_product, pair_row_blocks, pair_rows, pair_task, planes_kernel, v3_row_dot, v4_row_tokens,
                       v5_gemv_rows, v5_row_tokens)


# ----------------------------------------------------------------------------
# kernels of one decoding step (float32; B sequences share every weight read)

@njit(parallel=True, fastmath=True, cache=True)
def _product_segments(nonzero, negative, codes, code_rows, offset, u, rows_per_seg, n_tok, version, acc):
    """acc[t, r] = packed row r . token t's activation bytes u[r // rows_per_seg, t], for t < n_tok.
    u is (S, tokens padded to TOKENS, 64 NB) uint8: S segments of rows read S different inputs
    (the i/f/g projections of one token read xn through three norms), all in one launch.
    The rows are the planes (nonzero, negative) for versions 3-5, version 8's codes (row blocks, G / 2,
    32) for version 8 (products.PackedPairs, each code_rows rows padded to whole PAIR_BLOCKS blocks);
    version 8: each token's nibble tables first (serially), then PAIR_BLOCKS row blocks per task;
    version 5: the bytes are first cut into bit planes (serially: 8 byte-tests per block, for all
    rows), then ROWS rows at a time (one token) or TOKENS tokens at a time sharing each block's plane words;
    version 4: masked_sad (one token) or TOKENS at a time, sharing each block's masks;
    version 3 (SWAR) on the same bytes viewed as its (8, NB) words, one token at a time."""
    R, NB = offset.shape[0], nonzero.shape[1]
    if version == 8:
        n_pad = 1 if n_tok == 1 else -(-n_tok // NIBBLE_TOKENS) * NIBBLE_TOKENS
        tables = np.empty((u.shape[0], n_pad, 2 * codes.shape[1], 32), np.uint8)   # (S, tokens, G, 32)
        for seg in range(u.shape[0]):
            for t in range(n_pad):                                   # the padded tokens' too: they are read
                nibble_tables(u[seg, t], tables[seg, t])
        per_seg = codes.shape[0] // (R // code_rows)                 # row blocks per code segment
        if n_tok == 1:                                               # a GEMV: PAIR_BLOCKS blocks per task
            scratch = np.empty((codes.shape[0] // PAIR_BLOCKS, 1, NIBBLE_ROWS * PAIR_BLOCKS), np.int32)
            for task in prange(codes.shape[0] // PAIR_BLOCKS):
                rb = task * PAIR_BLOCKS
                cseg = rb // per_seg
                first = cseg * code_rows + NIBBLE_ROWS * (rb - cseg * per_seg)   # the block's first row
                n_rows = min(NIBBLE_ROWS * PAIR_BLOCKS, (cseg + 1) * code_rows - first)
                if n_rows > 0:
                    pair_rows(codes, offset, tables[first // rows_per_seg], rb, first, n_rows, scratch[task], acc)
            return
        groups = -(-per_seg // NIBBLE_ROW_BLOCKS)                    # a small GEMM: up to NIBBLE_ROW_BLOCKS
        scratch = np.empty((codes.shape[0] // per_seg * groups, NIBBLE_TOKENS, NIBBLE_ROWS * NIBBLE_ROW_BLOCKS), np.int32)
        for task in prange(scratch.shape[0]):                        # blocks of one segment per task
            cseg, g = task // groups, task % groups
            n_own = min(NIBBLE_ROW_BLOCKS, per_seg - g * NIBBLE_ROW_BLOCKS)
            first = cseg * code_rows + NIBBLE_ROWS * NIBBLE_ROW_BLOCKS * g
            n_rows = min(NIBBLE_ROWS * n_own, (cseg + 1) * code_rows - first)
            if n_rows > 0:
                pair_task(codes, offset, tables[first // rows_per_seg], cseg * per_seg + g * NIBBLE_ROW_BLOCKS,
                          n_own, 0, n_pad // NIBBLE_TOKENS, first, n_rows, scratch[task], acc)
        return
    planes = np.empty((u.shape[0] if version == 5 else 0, u.shape[1], NB, 8), np.uint64)   # (S, tokens, NB, 8)
    if version == 5:                                                 # only the n_tok real tokens: the padded
        for seg in range(u.shape[0]):                                # rows' sums are never stored
            planes_kernel(u[seg, :n_tok], planes[seg, :n_tok])
    if version == 5 and n_tok == 1:                                  # decoding one sequence: a GEMV,
        for task in prange(-(-R // ROWS)):                           # ROWS rows per task
            r, r_end = task * ROWS, min(R, (task + 1) * ROWS)
            while r < r_end:                                         # split where a segment ends
                seg = r // rows_per_seg
                seg_end = min(r_end, (seg + 1) * rows_per_seg)
                v5_gemv_rows(planes[seg], nonzero, negative, offset, r, seg_end, acc[0])
                r = seg_end
        return
    for r in prange(R):
        seg = r // rows_per_seg
        us = u[seg]                                                  # (tokens, 64 NB)
        if version == 5:                                             # several sequences: a small GEMM
            v5_row_tokens(planes[seg], 0, n_tok, nonzero, negative, offset, r, acc)
        elif version == 4 and n_tok == 1:
            acc[0, r] = np.int32(np.int64(masked_sad(us, 0, nonzero, negative, r)) - offset[r])
        elif version == 4:
            v4_row_tokens(us, n_tok, nonzero, negative, offset, r, acc)
        else:
            for t in range(n_tok):                                   # version 3 on the same bytes as words
                acc[t, r] = v3_row_dot(us[t].view(np.uint64).reshape(8, NB), nonzero[r], negative[r], offset[r])


@njit(cache=True)
def _rms_inv(x, eps):
    """1 / rms(x) in float32; the float64 sum of squares is fused.py's (vectorized, reassociated)."""
    return np.float32(1.0 / np.sqrt(np.float32(_sum_squares(x.reshape(1, -1), 0) / x.shape[0]) + np.float32(eps)))


@njit(fastmath=SAFE_FAST, cache=True)
def _norm_quant_words(x, g, u, version):
    """E1 + E2 for one token: writes the offset-binary bytes of q = round(rms(x; g) * s) into the
    activation row u (64 NB,) uint8 in the layout the GEMV reads, and returns the scale s.
    Column k = 64b + 8i + j goes to byte 64b + 8j + i (versions 4, 5 and 8: under bit 8j + i of the
    planes; one shuffle per block) or to byte j of word (i, b) (version 3). Padding bytes are 0.
    Version 8's tables are built from q's own bits: q + 128 with its top bit flipped back."""
    r = _rms_inv(x, BITLINEAR_EPS)
    absmax = np.float32(ACT_EPS)
    for k in range(x.shape[0]):                                      # a max: exact in any order, vectorized
        absmax = maxnum(absmax, abs(x[k] * r * g[k]))
    s = np.float32(ACT_QMAX) / absmax
    codes = np.zeros(u.shape[0], np.uint8)                           # (64 NB,) in column order
    flip = np.uint8(128 if version == 8 else 0)
    for k in range(x.shape[0]):                                      # vectorized
        codes[k] = np.uint8(np.int32(min(max(np.rint(x[k] * r * g[k] * s), -128.0), 127.0)) + 128) ^ flip
    if version >= 4:                                                 # then moved into the GEMV's layout
        transpose_blocks(codes, u)
    else:
        nb8 = u.shape[0] >> 3                                        # bytes per version-3 word row (NB * 8)
        for k in range(x.shape[0]):
            u[((k >> 3) & 7) * nb8 + ((k >> 6) << 3) + (k & 7)] = codes[k]
    return s


@njit(error_model="numpy", cache=True)
def _step(x, h, attn_norm, mlp_norm, g_norm, lb,
          p_nz, p_ng, p_off, o_nz, o_ng, o_off, p_beta, p_gain,
          u_nz, u_ng, u_off, u_beta, u_gain,
          d_nz, d_ng, d_off, d_beta, d_gain,
          head_nz, head_ng, head_off, head_beta, head_gain, final_norm, eps,
          p_codes, o_codes, u_codes, d_codes, head_codes,
          u_d, u_i, version, logits):
    """One token of each of B sequences: x (B, D) their embeddings (E10), the residual streams from
    here on; h (B, L, D) updated in place; logits (B, V). u_d (3, B padded, 64 NB_D) and u_i (1, B
    padded, 64 NB_I) are the activation-byte buffers. The weights are the planes (*_nz, *_ng) or
    version 8's codes (*_codes), whichever the engine holds (the other arrays are empty).
    The embedding rows are gathered by the caller so that this function has ONE signature whatever
    the embedding (float32, read-only memory map, int8): Numba's on-disk cache of a function that
    calls a parallel one (`_product_segments`) crashed the interpreter once it held two
    specializations (measured: a float32 engine after an mmap one in an earlier process, SIGSEGV)."""
    B, L, D = h.shape
    I = d_gain.shape[1]
    acc_p, acc_d = np.empty((B, 3 * D), np.int32), np.empty((B, D), np.int32)
    acc_u, acc_v = np.empty((B, 2 * I), np.int32), np.empty((B, logits.shape[1]), np.int32)
    s = np.empty((3, B), np.float32)                                 # activation scales (E2)
    o, p = np.empty(D, np.float32), np.empty(I, np.float32)
    a_i, a_f, a_g = np.empty(D, np.float32), np.empty(D, np.float32), np.empty(D, np.float32)
    for l in range(L):
        # ---- MLGRU token mixer (E6): the i/f/g projections of all B tokens in one launch
        for b in range(B):
            xn = x[b] * _rms_inv(x[b], eps) * attn_norm[l]           # block pre-norm
            for k in range(3):
                s[k, b] = _norm_quant_words(xn, p_gain[l, k], u_d[k, b], version)
        _product_segments(p_nz[l], p_ng[l], p_codes[l], D, p_off[l], u_d, D, B, version, acc_p)
        for b in range(B):
            c_i, c_f, c_g = p_beta[l, 0] / s[0, b], p_beta[l, 1] / s[1, b], p_beta[l, 2] / s[2, b]
            for d in range(D):                                       # E4: y = acc * beta / s
                a_i[d] = acc_p[b, d] * c_i
                a_f[d] = acc_p[b, D + d] * c_f
                a_g[d] = acc_p[b, 2 * D + d] * c_g
            mlgru_step_kernel(a_i, a_f, a_g, lb[l], h[b, l], g_norm[l], eps, o)   # E6 recurrence
            s[0, b] = _norm_quant_words(o, p_gain[l, 3], u_d[0, b], version)
        _product_segments(o_nz[l], o_ng[l], o_codes[l], D, o_off[l], u_d[:1], D, B, version, acc_d)
        for b in range(B):
            c_o = p_beta[l, 3] / s[0, b]
            for d in range(D):
                x[b, d] += acc_d[b, d] * c_o                         # residual 1
        # ---- GLU channel mixer (E8)
        for b in range(B):
            rn = x[b] * _rms_inv(x[b], eps) * mlp_norm[l]
            s[0, b] = _norm_quant_words(rn, u_gain[l], u_d[0, b], version)
        _product_segments(u_nz[l], u_ng[l], u_codes[l], I, u_off[l], u_d[:1], 2 * I, B, version, acc_u)
        for b in range(B):
            c_u = u_beta[l] / s[0, b]
            for k in range(I):                                       # vectorized: float32 throughout
                gate = np.float32(acc_u[b, k]) * c_u                 # (acc < 2^24: exact in float32)
                p[k] = gate * sigmoid32(gate) * (np.float32(acc_u[b, I + k]) * c_u)
            s[0, b] = _norm_quant_words(p, d_gain[l], u_i[0, b], version)
        _product_segments(d_nz[l], d_ng[l], d_codes[l], D, d_off[l], u_i, D, B, version, acc_d)
        for b in range(B):
            c_d = d_beta[l] / s[0, b]
            for d in range(D):
                x[b, d] += acc_d[b, d] * c_d                         # residual 2
    # ---- head (E10)
    finite = np.ones(B, np.bool_)
    for b in range(B):
        xn = x[b] * _rms_inv(x[b], eps) * final_norm
        finite[b] = np.isfinite(np.sum(xn))                          # an overflow upstream reaches here
        s[0, b] = _norm_quant_words(xn, head_gain, u_d[0, b], version)
    V = head_off.shape[0]
    _product_segments(head_nz, head_ng, head_codes, V, head_off, u_d[:1], V, B, version, acc_v)
    for b in range(B):
        c_h = head_beta / s[0, b] if finite[b] else np.float32(np.nan)   # int8 codes of inf/NaN are
        for v in range(logits.shape[1]):                             # garbage: say NaN, not a finite lie
            logits[b, v] = acc_v[b, v] * c_h


@njit(parallel=True, cache=True)
def _rescale_rows(acc, c, y):
    """y[t, r] = float32(acc[t, r]) * c[t]: E4's y = acc * beta / s for many rows (what
    np.multiply(acc, c[:, None], dtype=np.float32) computes, on both threads)."""
    for t in prange(acc.shape[0]):
        for r in range(acc.shape[1]):
            y[t, r] = np.float32(acc[t, r]) * c[t]


# ----------------------------------------------------------------------------

# on the planes layout, prefills of at least LOOKUP_FROM tokens (all sequences together) run a lookup-table
# version: 6 where VPERMW exists (AVX-512BW), else 7 where VPSHUFB does (AVX2); the pairs layout runs
# version 8 from 2 tokens on. Measured on the 370M shape, 2 threads,
# alternated in one process, medians of 7: version 5 / 6 110 / 127 ms at 64 tokens, 236 / 246 at 128,
# 387 / 399 at 192, 480 / 384 at 256; 922 / 739 at 512 (of 5). Version 4 / 7 (AMD EPYC 7003, AVX2 only,
# medians of 5, of 3 at 512): 165 / 186 ms at 32 tokens, 318 / 293 at 64, 873 / 661 at 128, 1455 / 1085
# at 256, 3078 / 1976 at 512.
LOOKUP7_FROM = 64
LOOKUP_VERSION = 6 if simd.AVAILABLE else 7
LOOKUP_FROM = 256 if simd.AVAILABLE else LOOKUP7_FROM if simd.AVX2 else None   # (without AVX2: never)
# per lookup version: (its tables of q, built into a buffer; its product into acc; the bytes of codes
# scratch it needs; its groups per 64-weight block; its tables' dtype). Both pad to 4-token calls
# (simd.NIBBLE_TOKENS is LOOKUP_TOKENS).
TABLE_VERSIONS = {
    6: (lookup_tables, lambda nz, ng, offset, tables, acc, codes: lookup_product(nz, ng, tables, acc, codes),
        lookup_codes_bytes, LOOKUP_GROUPS, np.int16),
    7: (nibble_tables_of, nibble_product, nibble_codes_bytes, NIBBLE_GROUPS, np.uint8),
    8: (nibble_tables_of, lambda codes, _, offset, tables, acc, scratch: pair_product(codes, offset, tables, acc),
        lambda R, n, n_blk: 0, NIBBLE_GROUPS, np.uint8),
}
# how the engine holds its ternary weights: "planes" (PackedTernary's two bit planes: versions 3-7) or
# "pairs" (products.PackedPairs, version 7's codes two per byte: version 8 for every product). Both are
# 2 bits per weight. With AVX2 and no AVX-512 the pairs run faster (measured: see README).
LAYOUTS = {"planes": ((3, 4, 5), (6, 7)), "pairs": ((8,), (8,))}   # layout: (step versions, prefill versions)
LAYOUT = "pairs" if simd.AVX2 and not simd.AVAILABLE else "planes"
EMBEDDINGS = ("float32", "mmap", "int8")


def _check_finite(E, engine):
    """Refuse NaN/inf weights: the int8 codes of NaN are garbage, so they would decode to finite
    nonsense. E (the embedding) and every float array the engine holds so far (gains, bounds, betas)."""
    arrays = {"model.embeddings.weight": E,
              **{k: v for k, v in vars(engine).items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}}
    bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"the model's parameters hold NaN/inf (in {', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}): a diverged run? Use an earlier checkpoint")


def mapped_resident_bytes(path):
    """Bytes of the file `path` that are mapped into this process AND resident (the Rss lines of its
    mappings in /proc/self/smaps), or None where the kernel does not say (not Linux)."""
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):   # a mapping's first line
            name = line.rstrip().removesuffix(" (deleted)")         # the engine unlinks its file at once
            inside = name.endswith(str(path))
        elif inside and head and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def _mapped_copy(E):
    """E (V, D) float32 -> (a read-only array over a private temporary file holding E, the file).

    Made so that a row read maps one 4 KiB page and nothing else: the file's pages are dropped from
    the page cache after writing (else the kernel maps the 2 MiB folios they were written in) and
    the mapping is marked random-access (no read-ahead, no fault-around). Measured on Linux 6.18:
    3 rows of a (32000, 1024) table -> 12 KiB resident. The file is unlinked as soon as it is open
    (POSIX keeps its data while the descriptor and the mapping live), so no exit, crash or kill -9
    can leave it behind in the temporary directory."""
    fd, name = tempfile.mkstemp(prefix="mmf-embedding-", suffix=".f32")
    os.unlink(name)                                                  # nameless from now on: no litter
    file = os.fdopen(fd, "w+b")
    E.tofile(file)
    file.flush()
    os.fsync(file.fileno())
    if hasattr(os, "posix_fadvise"):                                 # Linux; elsewhere only the madvise
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    view = mmap.mmap(file.fileno(), E.nbytes, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):
        view.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(view, np.float32).reshape(E.shape), (file, name)


def _huge_page_copy(a):
    out = huge_page_empty(a.shape, a.dtype)
    out[...] = a
    return out


SUPPORTED = {("mmfree", "ternary")}                # (arch, weights) pairs the packed engine runs


class Engine:
    """Engine(model) packs an mmf.MMfreeLM once; .generate(ids, max_new_tokens, temperature=0.0, ...)
    produces the same greedy tokens as model.generate. embedding: 'float32' or 'mmap' (exact), 'int8'.
    Engine.from_pretrained(dir) packs a Hugging Face checkpoint straight from its files."""

    def __init__(self, model, embedding="float32", layout=None):
        if hasattr(model, "config") and hasattr(type(model.config), "arch"):
            require(model, "kernels_numba.Engine", SUPPORTED)    # any mmf model: name its (arch, weights)
        if not isinstance(model, MMfreeLM):
            raise TypeError(f"Engine needs an mmf.MMfreeLM, got {type(model).__name__}")
        self._build(model.config, model.params.__getitem__, embedding, layout)

    @classmethod
    def from_pretrained(cls, path, embedding="float32", layout=None):
        """An engine from a Hugging Face directory (config.json + model.safetensors or shards), without
        ever holding the float model: each tensor is read through the file's memory map and packed
        before the next one is touched, so the float32 copies alive at once are the embedding (kept)
        and one weight being packed. Decodes exactly as Engine(MMfreeLM.from_pretrained(path))."""
        from mmf.interop.pretrained import open_pretrained
        config, weights = open_pretrained(path)
        engine = cls.__new__(cls)
        engine._build(config, weights.view, embedding, layout)
        return engine

    def _build(self, cfg, tensor, embedding, layout):
        """Pack and keep everything decoding needs. tensor(name) returns the parameter of that
        state-dict name: a model's own array, or a read-only view of a checkpoint file (any float dtype)."""
        layout = LAYOUT if layout is None else layout
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(LAYOUTS)} (None: {LAYOUT!r}, this CPU's faster one), "
                             f"got {layout!r}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS} ('float32' and 'mmap' exact, "
                             f"'int8' 4x smaller), got {embedding!r}")
        if cfg.output_gate != "official":
            raise ValueError(f"Engine runs the official output gate rms(g)*SiLU(h) only; this model has "
                             f"output_gate={cfg.output_gate!r} (run it with mmf: model.generate)")
        L, D, I, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
        self.config, self.eps = cfg, np.float32(cfg.rms_norm_eps)
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)    # noqa: E731
        layer = lambda l, name: tensor(f"model.layers.{l}.{name}")    # noqa: E731

        self.layout = layout

        def stack(names, n_in, parts=1):
            """Pack the weights `names` of every layer, rows concatenated per layer, into preallocated
            planes (L, rows, NB) or codes (L, row blocks, G / 2, 32) (each name's rows cut into `parts`,
            each padded), and offsets (L, rows); one float weight alive at a time. -> + betas (L, k).
            The arrays of the other layout are empty."""
            rows = sum(tensor(f"model.layers.0.{n}").shape[0] for n in names)
            pairs = layout == "pairs"
            nz = huge_page_empty((L, 0 if pairs else rows, n_blocks(n_in)), np.uint64)   # streamed every token:
            ng, off = huge_page_empty(nz.shape, np.uint64), np.empty((L, rows), np.int64)   # huge pages
            part_rows = rows // len(names) // parts
            per_name = parts * pair_row_blocks(part_rows)              # row blocks of one name (pack_pairs')
            codes = huge_page_empty((L, len(names) * per_name if pairs else 0, 16 * n_blocks(n_in) if pairs else 0,
                                     NIBBLE_ROWS), np.uint8)
            beta = np.empty((L, len(names)), np.float32)
            for l in range(L):
                r = 0
                for k, n in enumerate(names):
                    p = pack_model_weight(layer(l, n))
                    if pairs:
                        codes[l, k * per_name:(k + 1) * per_name] = pack_pairs(p, parts).codes
                    else:
                        nz[l, r:r + p.shape[0]], ng[l, r:r + p.shape[0]] = p.nonzero, p.negative
                    off[l, r:r + p.shape[0]], beta[l, k] = p.offset, p.scale
                    r += p.shape[0]
            return nz, ng, codes, off, beta

        # i, f, g stacked as rows [0, 3D) of one matrix (one kernel launch): (L, 3D, NB); o_proj (L, D, NB)
        self.p_nz, self.p_ng, self.p_codes, self.p_off, ifg_beta = stack([f"attn.{n}_proj.weight" for n in "ifg"], D)
        self.o_nz, self.o_ng, self.o_codes, self.o_off, o_beta = stack(["attn.o_proj.weight"], D)
        self.p_beta = np.concatenate([ifg_beta, o_beta], axis=1)     # (L, 4): i, f, g, o
        self.p_gain = f32([[layer(l, f"attn.{n}_proj.norm.weight") for n in "ifgo"] for l in range(L)])
        self.u_nz, self.u_ng, self.u_codes, self.u_off, ub = stack(["mlp.gate_proj.weight"], D, parts=2)   # gate, up
        self.d_nz, self.d_ng, self.d_codes, self.d_off, db = stack(["mlp.down_proj.weight"], I)
        self.u_beta, self.d_beta = ub[:, 0].copy(), db[:, 0].copy()
        self.u_gain = f32([layer(l, "mlp.gate_proj.norm.weight") for l in range(L)])
        self.d_gain = f32([layer(l, "mlp.down_proj.norm.weight") for l in range(L)])
        self.attn_norm = f32([layer(l, "attn_norm.weight") for l in range(L)])
        self.mlp_norm = f32([layer(l, "mlp_norm.weight") for l in range(L)])
        self.g_norm = f32([layer(l, "attn.g_norm.weight") for l in range(L)])
        if cfg.use_lower_bound:                                      # E7, in the model's precision
            raw = tensor("model.lower_bounds")
            raw = np.asarray(raw, np.float64 if raw.dtype == np.float64 else np.float32)
            self.lb = f32(lower_bounds_forward(raw)[0])
        else:
            self.lb = np.zeros((L, D), np.float32)
        self.lb[0] = 0.0                                             # layer 0 is unbounded (E7)
        head = pack_model_weight(tensor("lm_head.weight"))
        if layout == "pairs":
            self.head_codes = _huge_page_copy(pack_pairs(head).codes)
            self.head_nz = self.head_ng = np.empty((0, head.n_blocks), np.uint64)
        else:
            self.head_nz, self.head_ng = (_huge_page_copy(a) for a in (head.nonzero, head.negative))
            self.head_codes = np.empty((0, 0, NIBBLE_ROWS), np.uint8)
        self.head_off = np.array(head.offset)
        self.head_beta = np.float32(head.scale)
        self.head_gain = f32(tensor("lm_head.norm.weight"))
        self.final_norm = f32(tensor("model.norm.weight"))
        E = f32(tensor("model.embeddings.weight"))
        _check_finite(E, self)                                       # before the table is mapped or quantized
        self._emb_file = None                                        # (open file, its former name) of "mmap"
        if embedding == "int8":                                      # per-row absmax int8
            scale = np.maximum(np.abs(E).max(axis=1), 1e-12) / 127.0
            self.emb = np.round(E / scale[:, None]).astype(np.int8)
            self.emb_scale = scale.astype(np.float32)
        elif embedding == "mmap":
            self.emb, self._emb_file = _mapped_copy(E)
            self.emb_scale = np.ones(V, np.float32)
        else:
            self.emb, self.emb_scale = E, np.ones(V, np.float32)
        pairs = layout == "pairs"                                    # (all versions give the same integers)
        self.version = 8 if pairs else BEST                          # kernel version of one sequence's GEMVs
        self.version_tokens = 8 if pairs else BEST_TOKENS            # of batched steps and short prefills
        self.lookup_from = 2 if pairs else LOOKUP_FROM               # prefills of this many tokens run
        self.lookup_version = 8 if pairs else LOOKUP_VERSION         # this lookup-table version (6, 7 or 8)

    # ------------------------------------------------------------------------
    @property
    def nbytes(self):
        """Resident bytes of everything the engine keeps for decoding (weights, scales, gains). A
        memory-mapped embedding counts with the pages of it that are resident now (Linux), else whole."""
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        total = sum(v.nbytes for v in arrays if v is not self.emb)
        rss = mapped_resident_bytes(self._emb_file[1]) if self._emb_file is not None else None
        return int(total + (self.emb.nbytes if rss is None else rss))

    def new_state(self, batch):
        """Zero MLGRU states for `batch` sequences: (batch, L, D) float32."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an int >= 1 (sequences decoded together), got {batch!r}")
        return np.zeros((int(batch), self.config.num_layers, self.config.hidden_size), np.float32)

    def _check_step(self, tokens, state):
        """O(1) checks (shapes, dtypes, flags) plus one min/max over the B ids: the compiled step
        indexes the embedding with the ids and writes the state in place without bounds checks."""
        cfg = self.config
        if not isinstance(tokens, np.ndarray) or not np.issubdtype(tokens.dtype, np.integer):
            raise TypeError(f"tokens must be a numpy integer array (B,), got "
                            f"{tokens.dtype if isinstance(tokens, np.ndarray) else type(tokens).__name__}")
        if tokens.ndim != 1 or tokens.shape[0] < 1:
            raise ValueError(f"tokens must have shape (B,) with B >= 1, got {tokens.shape}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(f"tokens hold ids in [{lo}, {hi}] but the vocabulary is [0, {cfg.vocab_size})")
        want = (tokens.shape[0], cfg.num_layers, cfg.hidden_size)
        if not isinstance(state, np.ndarray) or state.dtype != np.float32:
            raise TypeError(f"state must be a float32 numpy array {want} (Engine.new_state(B) makes one), got "
                            f"{state.dtype if isinstance(state, np.ndarray) else type(state).__name__}")
        if state.shape != want:
            raise ValueError(f"state must have shape (B, L, D) = {want} for {tokens.shape[0]} token(s), got "
                             f"{state.shape}; make it with Engine.new_state(B)")
        if not (state.flags.c_contiguous and state.flags.writeable and state.flags.aligned):
            raise ValueError("state must be a C-contiguous, aligned, writable array (it is updated in place); "
                             "make it with Engine.new_state(B)")
        if not np.isfinite(state).all():                            # B*L*D floats: cheap beside the step
            raise ValueError("state holds NaN/inf; start from Engine.new_state(B) or a state a step returned")

    def _check_versions(self):
        """The versions set on this engine must read its layout (else they would read empty arrays)."""
        steps, prefills = LAYOUTS[self.layout]
        if (self.version not in steps or self.version_tokens not in steps or self.lookup_version not in prefills
                or (self.layout == "pairs" and self.lookup_from != 2)):
            raise ValueError(f"an engine of layout {self.layout!r} runs step versions {steps} and prefill versions "
                             f"{prefills}{' from 2 tokens on' if self.layout == 'pairs' else ''}; it has version "
                             f"{self.version}, version_tokens {self.version_tokens}, lookup_version "
                             f"{self.lookup_version}, lookup_from {self.lookup_from} (build "
                             f"Engine(model, layout=...) for the other versions)")

    def step(self, tokens, state):
        """tokens (B,) int, state (B, L, D) float32 updated in place -> logits (B, V) float32.
        The B sequences share every weight read: each BitLinear is one GEMV (B = 1) or one small
        GEMM over the B tokens."""
        self._check_step(tokens, state)
        return self._step_unchecked(tokens, state)

    def _step_unchecked(self, tokens, state):
        self._check_versions()
        cfg = self.config
        B = tokens.shape[0]
        padded = -(-B // TOKENS) * TOKENS                            # the GEMM reads TOKENS tokens at a time
        u_d = np.zeros((3, padded, 64 * n_blocks(cfg.hidden_size)), np.uint8)
        u_i = np.zeros((1, padded, 64 * n_blocks(cfg.intermediate_size)), np.uint8)
        logits = np.empty((B, cfg.vocab_size), np.float32)
        x = np.ascontiguousarray(self.emb[tokens], dtype=np.float32)   # (B,) -> (B, D) embedding rows (E10)
        x *= self.emb_scale[tokens][:, None]                         # the int8 table's row scales (else 1)
        _step(x, state, self.attn_norm,
              self.mlp_norm, self.g_norm, self.lb, self.p_nz, self.p_ng, self.p_off, self.o_nz, self.o_ng,
              self.o_off, self.p_beta, self.p_gain,
              self.u_nz, self.u_ng, self.u_off, self.u_beta, self.u_gain,
              self.d_nz, self.d_ng, self.d_off, self.d_beta, self.d_gain,
              self.head_nz, self.head_ng, self.head_off, self.head_beta, self.head_gain,
              self.final_norm, self.eps, self.p_codes, self.o_codes, self.u_codes, self.d_codes, self.head_codes,
              u_d, u_i, self.version if B == 1 else self.version_tokens, logits)
        return logits

    def _check_ids(self, ids):
        """ids (B, T) integer with B, T >= 1 and every id in [0, V)."""
        if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a numpy integer array (B, T), got "
                            f"{ids.dtype if isinstance(ids, np.ndarray) else type(ids).__name__}")
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise ValueError(f"ids must have shape (B, T) with B, T >= 1, got {ids.shape}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"ids hold token ids in [{lo}, {hi}] but the vocabulary is [0, {self.config.vocab_size})")

    def prefill_stepwise(self, ids):
        """ids (B, T) -> (logits of the last token (B, V), state (B, L, D)), one decoding step per token."""
        self._check_ids(ids)
        state = self.new_state(ids.shape[0])
        for t in range(ids.shape[1]):
            logits = self.step(ids[:, t], state)
        return logits, state

    def _quantize_rows(self, x2, gain):
        """E1 + E2 for many rows at once (fused norm + int8 quantization): -> (q int8, s (rows,))."""
        q, s, _, _ = fused.norm_quant(x2, gain, BITLINEAR_EPS, want_q=True, want_xq=False)
        return q, s

    def _product_rows(self, q, s, weights, buffers=None):
        """E4 for many rows: the ternary GEMM of the codes q (rows, in) with each (nonzero, negative,
        offset, beta) of `weights`, then y = acc * beta / s -> [(rows, out) float32]. Given `buffers`
        (version, tables, codes: _lookup_buffers, reused by every product of a prefill), that
        lookup-table version (6 or 7), whose tables of q are built once for all of `weights`; else the
        kernel version self.version_tokens."""
        if buffers is not None:
            version, table_buffer, codes = buffers
            build, product = TABLE_VERSIONS[version][:2]
            tables = build(q, n_blocks(q.shape[1]), table_buffer)
        ys = []
        for nonzero, negative, offset, beta in weights:
            if buffers is not None:
                acc = np.empty((q.shape[0], offset.shape[0]), np.int32)    # (rows, out) int32, additions only
                product(nonzero, negative, offset, tables, acc, codes)
            else:
                packed = PackedTernary._trusted(nonzero, negative, offset, (nonzero.shape[0], q.shape[1]), float(beta))
                acc = MATMULS[self.version_tokens](packed, q)
            y = np.empty(acc.shape, np.float32)
            _rescale_rows(acc, (beta / s).astype(np.float32), y)
            ys.append(y)
        return ys

    def _matrix(self, kind, l, k=0, parts=1):
        """Part k of `parts` (equal row ranges) of the stacked matrix `kind` ("p", "o", "u", "d" or
        "head") of layer l (None for the head), as _product_rows takes it: (planes or codes, the
        negative plane or None, offsets)."""
        nz, ng, codes, off = (getattr(self, f"{kind}_{a}") for a in ("nz", "ng", "codes", "off"))
        if l is not None:
            nz, ng, codes, off = nz[l], ng[l], codes[l], off[l]
        rows, blocks = off.shape[0] // parts, codes.shape[0] // parts
        if self.layout == "pairs":
            return codes[k * blocks:(k + 1) * blocks], None, off[k * rows:(k + 1) * rows]
        return nz[k * rows:(k + 1) * rows], ng[k * rows:(k + 1) * rows], off[k * rows:(k + 1) * rows]

    def _bitlinear_rows(self, x2, weights, gain, buffers=None):
        """E4 for many rows at once: fused norm + int8 quantization, then the ternary GEMM kernel."""
        return self._product_rows(*self._quantize_rows(x2, gain), [weights], buffers)[0]

    def _lookup_buffers(self, rows):
        """(version, tables, codes) scratch for self.lookup_version on `rows` tokens, large enough for
        every product of the model: allocated once per prefill, because fresh pages for the tables (21
        bytes per activation for version 6, 16 for version 7) cost more than filling them
        (products.lookup_tables: 3.5 against 1.5 ms for 512 tokens of width 2816). The codes are reused
        alike; alternated with fresh codes pages, the 370M prefill measured the same with version 6
        (876 / 883 ms at 512 tokens, 140 / 139 ms at 64)."""
        cfg = self.config
        D, I = cfg.hidden_size, cfg.intermediate_size
        _, _, codes_bytes, groups, dtype = TABLE_VERSIONS[self.lookup_version]
        quads = -(-rows // LOOKUP_TOKENS) * LOOKUP_TOKENS
        tables = np.empty(quads * groups * n_blocks(max(D, I)) * 32, dtype)
        codes = np.empty(max(codes_bytes(r, rows, n_blocks(k)) for r, k in ((D, D), (I, D), (D, I))), np.uint8)
        return self.lookup_version, tables, codes

    def _rms_rows(self, x2, g):
        y, rstd = np.empty_like(x2), np.empty(x2.shape[0], np.float32)
        fused.rmsnorm_kernel(x2, g, fused.constants(np.float32, self.eps), y, rstd)
        return y

    def prefill(self, ids):
        """ids (B, T) -> (logits of the last token (B, V), state (B, L, D)). The projections of all
        B*T prompt tokens run as ternary GEMMs (the matrix-matrix kernel); only the recurrence walks
        over time (the training block's fused E6 pass, kernels_numba/mixers.py, and its E8 GLU pass).
        Equal to prefill_stepwise up to float32 rounding. A one-token
        prompt is one decoding step (the compiled step; the GEMM path's per-layer work in Python
        measured 7.0 ms against the step's 4.1 ms on the 370M shape)."""
        self._check_ids(ids)
        self._check_versions()
        B, T = ids.shape
        if T == 1:
            return self.prefill_stepwise(ids)
        cfg = self.config
        D, I = cfg.hidden_size, cfg.intermediate_size
        x = self.emb[ids].astype(np.float32) * self.emb_scale[ids][..., None]
        x = np.ascontiguousarray(x.reshape(B * T, D))                # (B*T, D) residual stream
        state = self.new_state(B)
        c = fused.constants(np.float32, self.eps)
        h, o = np.empty((B * T, D), np.float32), np.empty((B * T, D), np.float32)
        rstd_g, h0 = np.empty(B * T, np.float32), np.zeros((B, D), np.float32)
        p = np.empty((B * T, I), np.float32)
        lookup = self.lookup_from is not None and B * T >= self.lookup_from
        buffers = self._lookup_buffers(B * T) if lookup else None    # version 6's or 7's, for every product but the head
        for l in range(cfg.num_layers):
            xn = self._rms_rows(x, self.attn_norm[l])
            a_i, a_f, a_g = (self._bitlinear_rows(xn, (*self._matrix("p", l, k, 3), self.p_beta[l, k]),
                                                  self.p_gain[l, k], buffers)
                             for k in range(3))
            # E6 in one pass: gates, the recurrence over time, o = rms(a_g; g_norm) * SiLU(h)
            mixers.mlgru_forward_kernel(a_i, a_f, a_g, self.lb[l], h0, self.g_norm[l], c, T, h, o, rstd_g)
            state[:, l] = h.reshape(B, T, D)[:, -1]
            x = x + self._bitlinear_rows(o, (*self._matrix("o", l), self.p_beta[l, 3]),
                                         self.p_gain[l, 3], buffers)
            rn = self._rms_rows(x, self.mlp_norm[l])                 # E8 GLU: gate and up from one quantization
            q, s = self._quantize_rows(rn, self.u_gain[l])
            # two GEMMs (version 6 builds q's tables once for both), so that gate and up are contiguous
            # for the GLU pass: one GEMM over the 2I rows with strided halves measured 22.1 against
            # 20.5 ms per layer (version 5, 512 tokens, alternated, 15 rounds)
            gate, up = self._product_rows(q, s, [(*self._matrix("u", l, k, 2), self.u_beta[l]) for k in range(2)],
                                          buffers)
            mixers.glu_forward_kernel(gate, up, p)                   # SiLU(gate) * up
            x = x + self._bitlinear_rows(p, (*self._matrix("d", l), self.d_beta[l]),
                                         self.d_gain[l], buffers)
        last = np.ascontiguousarray(x.reshape(B, T, D)[:, -1])       # only the last token's logits are needed
        xn = self._rms_rows(last, self.final_norm)
        head = (*self._matrix("head", None), self.head_beta)
        logits = self._bitlinear_rows(xn, head, self.head_gain, buffers if self.layout == "pairs" else None)
        logits[~np.isfinite(xn).all(axis=1)] = np.nan                # int8 codes of inf/NaN are garbage
        return logits, state

    def generate(self, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None):
        """Like model.generate: ids (B, T) or (T,) -> (B, T + max_new_tokens); temperature 0 is greedy."""
        _check_options(max_new_tokens, temperature, top_k, top_p)
        ids = np.asarray(ids)
        squeeze = ids.ndim == 1
        ids = ids[None, :] if squeeze else ids
        self._check_ids(ids)
        rng = np.random.default_rng(seed)
        logits, state = self.prefill(ids)
        out = [ids.astype(np.int64)]
        for k in range(max_new_tokens):
            tok = sample_next(logits, temperature, top_k, top_p, rng)   # (B,)
            out.append(tok[:, None])
            if k + 1 < max_new_tokens:
                logits = self._step_unchecked(tok, state)           # ids from sample_next are in range
        result = np.concatenate(out, axis=1)
        return result[0] if squeeze else result
