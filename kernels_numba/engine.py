"""Engine: an mmf.MMfreeLM loaded once into packed form, decoding with carried MLGRU state.

What is resident after loading (float32 model -> engine):
  * every BitLinear (4 MLGRU projections, GLU gate/down, LM head) as a PackedTernary: 2 bits per
    weight + one scale beta (E3) + one row offset; its RMSNorm gain in float32;
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
  logits = BitLinear_head(rms(x; norm)). Every BitLinear product is the add/subtract kernel of
  products.py version 4 (AVX-512 masks + VPSADBW) or, on CPUs without AVX-512BW, version 3
  (SWAR); the whole step is one compiled function.

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
from mmf.models.mmfree import MMfreeLM
from mmf.models.registry import require

from . import fused, scan, simd
from .fused import ACT_EPS, ACT_QMAX, SAFE_FAST, _sum_squares
from .packing import PackedTernary, n_blocks, pack_model_weight
from .expf import sigmoid32
from .scan import mlgru_step_kernel
from .simd import TOKENS, masked_sad
from .products import matmul_v3, matmul_v4, v3_row_dot, v4_byte_position, v4_row_tokens


# ----------------------------------------------------------------------------
# kernels of one decoding step (float32; B sequences share every weight read)

@njit(parallel=True, fastmath=True, cache=True)
def _product_segments(nonzero, negative, offset, u, rows_per_seg, n_tok, simd_on, acc):
    """acc[t, r] = packed row r . token t's activation bytes u[r // rows_per_seg, t], for t < n_tok.
    u is (S, tokens padded to TOKENS, 64 NB) uint8: S segments of rows read S different inputs
    (the i/f/g projections of one token read xn through three norms), all in one launch.
    simd_on: version 4 (one token: masked_sad; several: TOKENS at a time, sharing each block's masks);
    else version 3 (SWAR) on the same bytes viewed as its (8, NB) words, one token at a time."""
    R, NB = nonzero.shape
    for r in prange(R):
        us = u[r // rows_per_seg]                                    # (tokens, 64 NB)
        if simd_on and n_tok == 1:                                   # decoding one sequence: a GEMV
            acc[0, r] = np.int32(np.int64(masked_sad(us, 0, nonzero, negative, r)) - offset[r])
        elif simd_on:                                                # several sequences: a small GEMM
            v4_row_tokens(us, n_tok, nonzero, negative, offset, r, acc)
        else:
            for t in range(n_tok):                                   # version 3 on the same bytes as words
                acc[t, r] = v3_row_dot(us[t].view(np.uint64).reshape(8, NB), nonzero[r], negative[r], offset[r])


@njit(cache=True)
def _rms_inv(x, eps):
    """1 / rms(x) in float32; the float64 sum of squares is fused.py's (vectorized, reassociated)."""
    return np.float32(1.0 / np.sqrt(np.float32(_sum_squares(x.reshape(1, -1), 0) / x.shape[0]) + np.float32(eps)))


@njit(fastmath=SAFE_FAST, cache=True)
def _norm_quant_words(x, g, u, simd_on):
    """E1 + E2 for one token: writes the offset-binary bytes of q = round(rms(x; g) * s) into the
    activation row u (64 NB,) uint8 in the layout the GEMV reads, and returns the scale s.
    Column k = 64b + 8i + j goes to byte 64b + 8j + i (version 4: under bit 8j + i of the planes) or
    to byte j of word (i, b) (version 3)."""
    r = _rms_inv(x, BITLINEAR_EPS)
    absmax = np.float32(ACT_EPS)
    for k in range(x.shape[0]):                                      # a max: exact in any order
        absmax = max(absmax, abs(x[k] * r * g[k]))
    s = np.float32(ACT_QMAX) / absmax
    nb8 = u.shape[0] >> 3                                            # bytes per version-3 word row (NB * 8)
    codes = np.empty(x.shape[0], np.uint8)
    for k in range(x.shape[0]):                                      # vectorized
        codes[k] = np.uint8(np.int32(min(max(np.rint(x[k] * r * g[k] * s), -128.0), 127.0)) + 128)
    if simd_on:                                                      # then scattered into the GEMV's layout
        for k in range(x.shape[0]):
            u[v4_byte_position(k)] = codes[k]
    else:
        for k in range(x.shape[0]):
            u[((k >> 3) & 7) * nb8 + ((k >> 6) << 3) + (k & 7)] = codes[k]
    return s


@njit(error_model="numpy", cache=True)
def _step(tokens, h, emb, emb_scale, attn_norm, mlp_norm, g_norm, lb,
          p_nz, p_ng, p_off, o_nz, o_ng, o_off, p_beta, p_gain,
          u_nz, u_ng, u_off, u_beta, u_gain,
          d_nz, d_ng, d_off, d_beta, d_gain,
          head_nz, head_ng, head_off, head_beta, head_gain, final_norm, eps,
          u_d, u_i, simd_on, logits):
    """One token of each of B sequences: tokens (B,), h (B, L, D) updated in place, logits (B, V).
    u_d (3, B padded, 64 NB_D) and u_i (1, B padded, 64 NB_I) are the activation-byte buffers."""
    B, L, D = h.shape
    I = d_gain.shape[1]
    x = np.empty((B, D), np.float32)                                 # residual streams
    for b in range(B):
        x[b] = emb[tokens[b]].astype(np.float32) * emb_scale[tokens[b]]   # embedding (E10)
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
                s[k, b] = _norm_quant_words(xn, p_gain[l, k], u_d[k, b], simd_on)
        _product_segments(p_nz[l], p_ng[l], p_off[l], u_d, D, B, simd_on, acc_p)
        for b in range(B):
            c_i, c_f, c_g = p_beta[l, 0] / s[0, b], p_beta[l, 1] / s[1, b], p_beta[l, 2] / s[2, b]
            for d in range(D):                                       # E4: y = acc * beta / s
                a_i[d] = acc_p[b, d] * c_i
                a_f[d] = acc_p[b, D + d] * c_f
                a_g[d] = acc_p[b, 2 * D + d] * c_g
            mlgru_step_kernel(a_i, a_f, a_g, lb[l], h[b, l], g_norm[l], eps, o)   # E6 recurrence
            s[0, b] = _norm_quant_words(o, p_gain[l, 3], u_d[0, b], simd_on)
        _product_segments(o_nz[l], o_ng[l], o_off[l], u_d[:1], D, B, simd_on, acc_d)
        for b in range(B):
            c_o = p_beta[l, 3] / s[0, b]
            for d in range(D):
                x[b, d] += acc_d[b, d] * c_o                         # residual 1
        # ---- GLU channel mixer (E8)
        for b in range(B):
            rn = x[b] * _rms_inv(x[b], eps) * mlp_norm[l]
            s[0, b] = _norm_quant_words(rn, u_gain[l], u_d[0, b], simd_on)
        _product_segments(u_nz[l], u_ng[l], u_off[l], u_d[:1], 2 * I, B, simd_on, acc_u)
        for b in range(B):
            c_u = u_beta[l] / s[0, b]
            for k in range(I):                                       # vectorized: float32 throughout
                gate = np.float32(acc_u[b, k]) * c_u                 # (acc < 2^24: exact in float32)
                p[k] = gate * sigmoid32(gate) * (np.float32(acc_u[b, I + k]) * c_u)
            s[0, b] = _norm_quant_words(p, d_gain[l], u_i[0, b], simd_on)
        _product_segments(d_nz[l], d_ng[l], d_off[l], u_i, D, B, simd_on, acc_d)
        for b in range(B):
            c_d = d_beta[l] / s[0, b]
            for d in range(D):
                x[b, d] += acc_d[b, d] * c_d                         # residual 2
    # ---- head (E10)
    for b in range(B):
        xn = x[b] * _rms_inv(x[b], eps) * final_norm
        s[0, b] = _norm_quant_words(xn, head_gain, u_d[0, b], simd_on)
    _product_segments(head_nz, head_ng, head_off, u_d[:1], head_nz.shape[0], B, simd_on, acc_v)
    for b in range(B):
        c_h = head_beta / s[0, b]
        for v in range(logits.shape[1]):
            logits[b, v] = acc_v[b, v] * c_h


# ----------------------------------------------------------------------------

EMBEDDINGS = ("float32", "mmap", "int8")


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
            inside = line.rstrip().endswith(str(path))
        elif inside and head and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def _mapped_copy(E):
    """E (V, D) float32 -> (a read-only array over a private temporary file holding E, the file).

    Made so that a row read maps one 4 KiB page and nothing else: the file's pages are dropped from
    the page cache after writing (else the kernel maps the 2 MiB folios they were written in) and
    the mapping is marked random-access (no read-ahead, no fault-around). Measured on Linux 6.18:
    3 rows of a (32000, 1024) table -> 12 KiB resident. The file is deleted with the engine."""
    file = tempfile.NamedTemporaryFile(prefix="mmf-embedding-", suffix=".f32")
    E.tofile(file)
    file.flush()
    os.fsync(file.fileno())
    if hasattr(os, "posix_fadvise"):                                 # Linux; elsewhere only the madvise
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    view = mmap.mmap(file.fileno(), E.nbytes, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):
        view.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(view, np.float32).reshape(E.shape), file


SUPPORTED = {("mmfree", "ternary")}                # (arch, weights) pairs the packed engine runs


class Engine:
    """Engine(model) packs an mmf.MMfreeLM once; .generate(ids, max_new_tokens, temperature=0.0, ...)
    produces the same greedy tokens as model.generate. embedding: 'float32' or 'mmap' (exact), 'int8'."""

    def __init__(self, model, embedding="float32"):
        if hasattr(model, "config") and hasattr(type(model.config), "arch"):
            require(model, "kernels_numba.Engine", SUPPORTED)    # any mmf model: name its (arch, weights)
        if not isinstance(model, MMfreeLM):
            raise TypeError(f"Engine needs an mmf.MMfreeLM, got {type(model).__name__}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS} ('float32' and 'mmap' exact, "
                             f"'int8' 4x smaller), got {embedding!r}")
        cfg, P = model.config, model.params
        if cfg.output_gate != "official":
            raise ValueError(f"Engine runs the official output gate rms(g)*SiLU(h) only; this model has "
                             f"output_gate={cfg.output_gate!r} (run it with mmf: model.generate)")
        L, D, I, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
        self.config, self.eps = cfg, np.float32(cfg.rms_norm_eps)
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)    # noqa: E731
        layer = lambda l, name: P[f"model.layers.{l}.{name}"]         # noqa: E731

        def stack(names_per_layer):
            """Pack the weights named for each layer and stack: planes (L, rows, NB), offsets, betas."""
            packed = [[pack_model_weight(f32(layer(l, n))) for n in names] for l, names in names_per_layer]
            nz = np.stack([np.concatenate([p.nonzero for p in ps]) for ps in packed])
            ng = np.stack([np.concatenate([p.negative for p in ps]) for ps in packed])
            off = np.stack([np.concatenate([p.offset for p in ps]) for ps in packed])
            beta = np.array([[p.scale for p in ps] for ps in packed], np.float32)
            return nz, ng, off, beta

        # i, f, g stacked as rows [0, 3D) of one matrix (one kernel launch): (L, 3D, NB); o_proj (L, D, NB)
        self.p_nz, self.p_ng, self.p_off, ifg_beta = stack([(l, [f"attn.{n}_proj.weight" for n in "ifg"])
                                                             for l in range(L)])
        self.o_nz, self.o_ng, self.o_off, o_beta = stack([(l, ["attn.o_proj.weight"]) for l in range(L)])
        self.p_beta = np.concatenate([ifg_beta, o_beta], axis=1)     # (L, 4): i, f, g, o
        self.p_gain = f32([[layer(l, f"attn.{n}_proj.norm.weight") for n in "ifgo"] for l in range(L)])
        self.u_nz, self.u_ng, self.u_off, ub = stack([(l, ["mlp.gate_proj.weight"]) for l in range(L)])
        self.d_nz, self.d_ng, self.d_off, db = stack([(l, ["mlp.down_proj.weight"]) for l in range(L)])
        self.u_beta, self.d_beta = ub[:, 0].copy(), db[:, 0].copy()
        self.u_gain = f32([layer(l, "mlp.gate_proj.norm.weight") for l in range(L)])
        self.d_gain = f32([layer(l, "mlp.down_proj.norm.weight") for l in range(L)])
        self.attn_norm = f32([layer(l, "attn_norm.weight") for l in range(L)])
        self.mlp_norm = f32([layer(l, "mlp_norm.weight") for l in range(L)])
        self.g_norm = f32([layer(l, "attn.g_norm.weight") for l in range(L)])
        lb = model.lower_bounds()
        self.lb = np.zeros((L, D), np.float32) if lb is None else f32(lb)
        self.lb[0] = 0.0                                             # layer 0 is unbounded (E7)
        head = pack_model_weight(f32(P["lm_head.weight"]))
        self.head_nz, self.head_ng, self.head_off = head.nonzero, head.negative, head.offset
        self.head_beta = np.float32(head.scale)
        self.head_gain = f32(P["lm_head.norm.weight"])
        self.final_norm = f32(P["model.norm.weight"])
        E = f32(P["model.embeddings.weight"])
        self._emb_file = None                                        # the file behind embedding="mmap"
        if embedding == "int8":                                      # per-row absmax int8
            scale = np.maximum(np.abs(E).max(axis=1), 1e-12) / 127.0
            self.emb = np.round(E / scale[:, None]).astype(np.int8)
            self.emb_scale = scale.astype(np.float32)
        elif embedding == "mmap":
            self.emb, self._emb_file = _mapped_copy(E)
            self.emb_scale = np.ones(V, np.float32)
        else:
            self.emb, self.emb_scale = E, np.ones(V, np.float32)
        self.simd = simd.AVAILABLE                                   # GEMV version 4 (else 3: same integers)


    # ------------------------------------------------------------------------
    @property
    def nbytes(self):
        """Resident bytes of everything the engine keeps for decoding (weights, scales, gains). A
        memory-mapped embedding counts with the pages of it that are resident now (Linux), else whole."""
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        total = sum(v.nbytes for v in arrays if v is not self.emb)
        rss = mapped_resident_bytes(self._emb_file.name) if self._emb_file is not None else None
        return int(total + (self.emb.nbytes if rss is None else rss))

    def new_state(self, batch):
        return np.zeros((batch, self.config.num_layers, self.config.hidden_size), np.float32)

    def step(self, tokens, state):
        """tokens (B,) int, state (B, L, D) float32 updated in place -> logits (B, V) float32.
        The B sequences share every weight read: each BitLinear is one GEMV (B = 1) or one small
        GEMM over the B tokens."""
        cfg = self.config
        B = tokens.shape[0]
        padded = -(-B // TOKENS) * TOKENS                            # the GEMM reads TOKENS tokens at a time
        u_d = np.zeros((3, padded, 64 * n_blocks(cfg.hidden_size)), np.uint8)
        u_i = np.zeros((1, padded, 64 * n_blocks(cfg.intermediate_size)), np.uint8)
        logits = np.empty((B, cfg.vocab_size), np.float32)
        _step(np.ascontiguousarray(tokens, dtype=np.int64), state, self.emb, self.emb_scale, self.attn_norm,
              self.mlp_norm, self.g_norm, self.lb, self.p_nz, self.p_ng, self.p_off, self.o_nz, self.o_ng,
              self.o_off, self.p_beta, self.p_gain,
              self.u_nz, self.u_ng, self.u_off, self.u_beta, self.u_gain,
              self.d_nz, self.d_ng, self.d_off, self.d_beta, self.d_gain,
              self.head_nz, self.head_ng, self.head_off, self.head_beta, self.head_gain,
              self.final_norm, self.eps, u_d, u_i, self.simd, logits)
        return logits

    def prefill_stepwise(self, ids):
        """ids (B, T) -> (logits of the last token (B, V), state (B, L, D)), one decoding step per token."""
        state = self.new_state(ids.shape[0])
        for t in range(ids.shape[1]):
            logits = self.step(ids[:, t], state)
        return logits, state

    def _bitlinear_rows(self, x2, nonzero, negative, offset, beta, gain):
        """E4 for many rows at once: fused norm + int8 quantization, then the ternary GEMM kernel."""
        q, s, _, _ = fused.norm_quant(x2, gain, BITLINEAR_EPS, want_q=True, want_xq=False)
        packed = PackedTernary(nonzero, negative, offset, (nonzero.shape[0], x2.shape[1]), float(beta))
        product = matmul_v4 if self.simd else matmul_v3
        return np.multiply(product(packed, q), beta / s[:, None], dtype=np.float32)   # y = acc * beta / s

    def _rms_rows(self, x2, g):
        y, rstd = np.empty_like(x2), np.empty(x2.shape[0], np.float32)
        fused.rmsnorm_kernel(x2, g, fused.constants(np.float32, self.eps), y, rstd)
        return y

    def prefill(self, ids):
        """ids (B, T) -> (logits of the last token (B, V), state (B, L, D)). The projections of all
        B*T prompt tokens run as ternary GEMMs (the matrix-matrix kernel); only the recurrence walks
        over time (the compiled scan). Equal to prefill_stepwise up to float32 rounding."""
        B, T = ids.shape
        cfg = self.config
        D, I = cfg.hidden_size, cfg.intermediate_size
        x = self.emb[ids].astype(np.float32) * self.emb_scale[ids][..., None]
        x = np.ascontiguousarray(x.reshape(B * T, D))                # (B*T, D) residual stream
        state = self.new_state(B)
        sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))                 # noqa: E731 (float32 in, float32 out)
        for l in range(cfg.num_layers):
            xn = self._rms_rows(x, self.attn_norm[l])
            a_i, a_f, a_g = (self._bitlinear_rows(xn, self.p_nz[l, k * D:(k + 1) * D], self.p_ng[l, k * D:(k + 1) * D],
                                                  self.p_off[l, k * D:(k + 1) * D], self.p_beta[l, k], self.p_gain[l, k])
                             for k in range(3))
            f = self.lb[l] + (np.float32(1.0) - self.lb[l]) * sigmoid(a_f)              # E6 gates
            i = a_i * sigmoid(a_i) * (np.float32(1.0) - f)
            h = scan.scan_forward(f.reshape(B, T, D), i.reshape(B, T, D), np.zeros((B, D), np.float32))
            state[:, l] = h[:, -1]
            h = h.reshape(B * T, D)
            o = self._rms_rows(a_g, self.g_norm[l]) * (h * sigmoid(h))
            x = x + self._bitlinear_rows(np.ascontiguousarray(o), self.o_nz[l], self.o_ng[l], self.o_off[l],
                                         self.p_beta[l, 3], self.p_gain[l, 3])
            rn = self._rms_rows(x, self.mlp_norm[l])                 # E8 GLU
            gu = self._bitlinear_rows(rn, self.u_nz[l], self.u_ng[l], self.u_off[l], self.u_beta[l], self.u_gain[l])
            p = np.ascontiguousarray(gu[:, :I] * sigmoid(gu[:, :I]) * gu[:, I:])
            x = x + self._bitlinear_rows(p, self.d_nz[l], self.d_ng[l], self.d_off[l], self.d_beta[l], self.d_gain[l])
        last = np.ascontiguousarray(x.reshape(B, T, D)[:, -1])       # only the last token's logits are needed
        xn = self._rms_rows(last, self.final_norm)
        logits = self._bitlinear_rows(xn, self.head_nz, self.head_ng, self.head_off, self.head_beta, self.head_gain)
        return logits, state

    def generate(self, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None):
        """Like model.generate: ids (B, T) or (T,) -> (B, T + max_new_tokens); temperature 0 is greedy."""
        _check_options(max_new_tokens, temperature, top_k, top_p)
        ids = np.asarray(ids)
        squeeze = ids.ndim == 1
        ids = ids[None, :] if squeeze else ids
        if ids.ndim != 2 or ids.shape[1] < 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integer (B, T) or (T,) with T >= 1, got {ids.dtype} {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"ids must lie in [0, {self.config.vocab_size})")
        rng = np.random.default_rng(seed)
        logits, state = self.prefill(ids)
        out = [ids.astype(np.int64)]
        for k in range(max_new_tokens):
            tok = sample_next(logits, temperature, top_k, top_p, rng)   # (B,)
            out.append(tok[:, None])
            if k + 1 < max_new_tokens:
                logits = self.step(tok, state)
        result = np.concatenate(out, axis=1)
        return result[0] if squeeze else result
