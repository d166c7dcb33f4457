"""NumbaBackend: mmf's layer functions on compiled kernels, selected by MMfreeLM(..., backend="numba").

It subclasses mmf.backend.NumpyBackend and overrides, with identical signatures and cache-in /
cache-out contracts, what it accelerates:

  rmsnorm_forward / rmsnorm_backward     fused row kernels (E1)
  bitlinear_forward / bitlinear_backward one-pass RMSNorm + int8 quantization (E1+E2); the weight
                                         ternarized once per call (E3); the product either as a float
                                         GEMM on x~, W~ (matmul="blas", the same numbers as the
                                         reference) or as the add/subtract kernel on packed weights
                                         (matmul="ternary", the E4 integer form). The fused backward
                                         recomputes x~ from x, rstd and s instead of storing it (E5).
  sigmoid / silu / silu_grad             one elementwise pass each (float32; E6/E8 gates)
  scan_forward / scan_backward           compiled MLGRU recurrence (E6)
  cross_entropy_forward / _backward      one-pass logsumexp and softmax-minus-onehot (E11)

With weights='float' (the float baselines, and finite-difference mode) BitLinear falls back to the
reference: the kernels are for quantized models. Binary weights (E3b) take the same path as ternary
ones: their codes {-1, +1} are ternary values with one scale. Every override is tested equal to the method it replaces
(tests/test_kernels_backend.py).
"""
from typing import NamedTuple, Optional

import numpy as np

from mmf.backend import NumpyBackend
from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.checks import check_array
from mmf.layers.quant import weight_codes, weight_scale

from . import adamw, block, fused, heap, scan
from .packing import pack_ternary
from .products import matmul_best


class BitLinearCache(NamedTuple):
    """What the BitLinear backward needs. xq is None in the fused variant (recomputed)."""
    x: np.ndarray               # (M, K) input rows
    g: np.ndarray               # (K,) norm gain
    rstd: np.ndarray            # (M,) 1 / rms of each row
    s: np.ndarray               # (M,) activation scale of each row (E2)
    xq: Optional[np.ndarray]    # (M, K) x~ = q / s, or None when fused
    Wq: np.ndarray              # (N, K) W~ = Wt * beta
    lead: tuple                 # the input's leading shape (..., K) -> (...)


def _rows(a):
    """(..., K) -> C-contiguous (M, K) view or copy."""
    return np.ascontiguousarray(a.reshape(-1, a.shape[-1]))


class NumbaBackend(NumpyBackend):
    name = "numba"

    def __init__(self, quantize=None, fused=True, matmul="blas", weights=None):
        super().__init__(quantize, fused, weights)
        if matmul not in ("blas", "ternary"):
            raise ValueError(f"matmul must be 'blas' (float GEMM on x~, W~) or 'ternary' "
                             f"(packed add/subtract kernel), got {matmul!r}")
        self.matmul = matmul
        if fused:
            heap.keep_freed_memory()                                 # no page faults from step to step

    # E1 ------------------------------------------------------------------------
    def rmsnorm_forward(self, x, g, eps):
        check_array("rmsnorm x", x, ndim_min=1)
        check_array("rmsnorm g", g, shape=(x.shape[-1],), dtype=x.dtype)
        x2 = _rows(x)
        y = np.empty_like(x2)
        rstd = np.empty(x2.shape[0], x.dtype)
        fused.rmsnorm_kernel(x2, g, fused.constants(x.dtype, eps), y, rstd)
        return y.reshape(x.shape), (x, g, rstd.reshape(x.shape[:-1] + (1,)))   # the reference's cache layout

    def rmsnorm_backward(self, dy, cache):
        x, g, rstd = cache
        dx, dg = fused.rmsnorm_backward_rows(_rows(dy), _rows(x), g, np.ascontiguousarray(rstd.reshape(-1)))
        return dx.reshape(x.shape), dg

    def rmsnorm_normalized(self, cache):
        x, g, rstd = cache                                           # rstd is (M,) here, one per row
        return x * rstd.reshape(x.shape[:-1] + (1,)) * g

    # E4 / E5 -------------------------------------------------------------------
    def bitlinear_forward(self, x, W, g):
        if self.weights == "float":
            return super().bitlinear_forward(x, W, g)
        check_array("bitlinear x", x, ndim_min=1)
        check_array("bitlinear W", W, ndim=2, dtype=x.dtype)
        check_array("bitlinear g", g, shape=(x.shape[-1],), dtype=x.dtype)
        if W.shape[1] != x.shape[-1]:
            raise ValueError(f"bitlinear W has shape {W.shape} [out, in] but x has {x.shape[-1]} input features")
        x2 = _rows(x)                                                # (..., K) -> (M, K)
        y, rstd, s, xq, Wq = self._bitlinear_rows(x2, W, g, keep_xq=not self.fused)
        cache = BitLinearCache(x2, g, rstd, s, xq, Wq, x.shape[:-1])
        return y.reshape(x.shape[:-1] + (W.shape[0],)), cache

    def _weight(self, W):
        """(W~ (N, K) float, packed codes or None): the ternary W~ in one kernel pass for the float
        product; the codes (E3/E3b) and their packing for the add/subtract product."""
        if self.weights == "ternary" and self.matmul == "blas":
            beta = weight_scale(W)                                   # NumPy's mean: the reference's scale
            Wq = np.empty_like(W)
            fused.ternary_weight_kernel(W, W.dtype.type(1.0 / beta), W.dtype.type(beta), Wq)
            return Wq, None
        Wt, beta = weight_codes(W, self.weights)                     # E3/E3b: (N, K) int8, scalar
        Wq = Wt.astype(W.dtype) * W.dtype.type(beta)                 # W~, as the reference builds it
        return Wq, (pack_ternary(Wt), beta) if self.matmul == "ternary" else None

    def _bitlinear_rows(self, x2, W, g, keep_xq):
        """The BitLinear forward on rows x2 (M, K): y (M, N), rstd (M,), s (M,), x~ (M, K) if keep_xq
        else None, W~ (N, K). The fused training block (block.py) calls it without keeping x2."""
        Wq, packed = self._weight(W)
        if packed is not None:
            q, s, rstd, xq = fused.norm_quant(x2, g, BITLINEAR_EPS, want_q=True, want_xq=keep_xq)
            codes, beta = packed
            acc = matmul_best(codes, q)                              # (M, N) int32, additions only
            y = np.multiply(acc, x2.dtype.type(beta) / s[:, None], dtype=x2.dtype)   # E4: y = acc * beta / s
        else:
            _, s, rstd, xq = fused.norm_quant(x2, g, BITLINEAR_EPS, want_q=False, want_xq=True)
            y = xq @ Wq.T                                            # (M, K) @ (K, N) -> (M, N)
            if not keep_xq:
                xq = None                                            # dropped: rebuilt in backward
        return y, rstd, s, xq, Wq

    def bitlinear_backward(self, dy, cache):
        if not isinstance(cache, BitLinearCache):                    # weights='float': the reference's cache
            return super().bitlinear_backward(dy, cache)
        x2, g, rstd, s, xq, Wq, lead = cache
        dx, dW, dg = self._bitlinear_grads(dy.reshape(-1, dy.shape[-1]), x2, g, rstd, s, xq, Wq)
        return dx.reshape(lead + (x2.shape[1],)), dW, dg

    @staticmethod
    def _ste_products(dy2, xq, Wq):
        """The STE backward's two float products (E5): dW = dy^T x~ and dx~ = dy W~."""
        dW = dy2.T @ xq                                              # (N, M) @ (M, K) -> (N, K)
        dxq = dy2 @ Wq                                               # (M, N) @ (N, K) -> (M, K)
        return dW, dxq

    @staticmethod
    def _bitlinear_grads(dy2, x2, g, rstd, s, xq, Wq, add=None, out=None):
        """The STE backward (E5) on rows: dy2 (M, N), x2 (M, K) -> dx (M, K), dW (N, K), dg (K,);
        add/out as in fused.rmsnorm_backward_rows (dx added to another gradient in the same pass)."""
        if xq is None:                                               # fused: recompute x~ (E5)
            xq = np.empty_like(x2)
            fused.requant_kernel(x2, g, rstd, s, xq)
        dW, dxq = NumbaBackend._ste_products(dy2, xq, Wq)
        del xq
        dx, dg = fused.rmsnorm_backward_rows(np.ascontiguousarray(dxq), x2, g, rstd, add, out)   # STE: dxn = dx~
        return dx, dW, dg

    # E6/E8 gates ---------------------------------------------------------------
    # one pass on expf.py's exp (within 1 ulp) for float32; float64 (finite differences) stays NumPy
    def sigmoid(self, z):
        return fused.gate(z, fused.sigmoid_kernel) if z.dtype == np.float32 else super().sigmoid(z)

    def silu(self, z):
        return fused.gate(z, fused.silu_kernel) if z.dtype == np.float32 else super().silu(z)

    def silu_grad(self, z):
        return fused.gate(z, fused.silu_grad_kernel) if z.dtype == np.float32 else super().silu_grad(z)

    # E6 ------------------------------------------------------------------------
    def scan_forward(self, f, i, h0):
        return scan.scan_forward(np.ascontiguousarray(f), np.ascontiguousarray(i), np.ascontiguousarray(h0))

    def scan_backward(self, dh, f, h, h0):
        return scan.scan_backward(np.ascontiguousarray(dh), np.ascontiguousarray(f),
                                  np.ascontiguousarray(h), np.ascontiguousarray(h0))

    # E9 whole block --------------------------------------------------------------
    def _fused_block(self, x, gate):
        """block.py runs the block when fused, float32, quantized, with the official output gate;
        anything else is the reference's composition of the methods above."""
        return self.fused and gate == "official" and self.weights != "float" and x.dtype == np.float32

    def block_forward(self, x, p, lb, h0, eps, gate):
        if not self._fused_block(x, gate):
            return super().block_forward(x, p, lb, h0, eps, gate)
        return block.block_forward(self, x, p, lb, h0, eps)

    def block_backward(self, dout, cache):
        if not isinstance(cache, block.FusedBlockCache):
            return super().block_backward(dout, cache)
        return block.block_backward(self, dout, cache)

    # E10 embedding gradient: a scatter-add split over columns, in token order (bit-exact) -----
    def embedding_backward(self, ids, dx, vocab_size):
        dE = np.zeros((vocab_size, dx.shape[-1]), dx.dtype)
        fused.embedding_backward_kernel(np.ascontiguousarray(ids.reshape(-1), dtype=np.int64), _rows(dx), dE)
        return dE

    # AdamW: one pass per parameter ------------------------------------------------
    def adamw_update(self, p, g, m, v, lr, decay, b1, b2, eps, c1, c2):
        adamw.adamw_update(p, g, m, v, lr, decay, b1, b2, eps, c1, c2)

    # E11 -----------------------------------------------------------------------
    def cross_entropy_forward(self, logits, targets):
        z = _rows(logits)                                            # (N, V)
        t = np.ascontiguousarray(targets.reshape(-1)).astype(np.int64)
        lse = np.empty(z.shape[0], np.float64)
        nll = np.empty(z.shape[0], np.float64)
        fused.cross_entropy_kernel(z, t, lse, nll)
        return float(nll.mean()), (z, t, lse.astype(z.dtype), logits.shape)

    def cross_entropy_backward(self, cache):
        z, t, lse, shape = cache
        dz = np.empty_like(z)
        fused.cross_entropy_backward_kernel(z, t, lse, dz)
        return dz.reshape(shape)
