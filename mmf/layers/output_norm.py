"""OneBit's output LayerNorm: a LayerNorm without parameters on every block projection's output.

OneBit (Xu et al., 2024) builds each 1-bit linear layer as
    y = LayerNorm( ((x * b) Sign(W)^T) * a )        a (N,) per output, b (K,) per input (SVID scales)
where the LayerNorm runs over the layer's N output features and has no gain and no bias:
    z_c = z - mean(z),   y = z_c / sqrt(mean(z_c^2) + eps)          (per token, over the last axis)
so it stores nothing: 0 extra bits per weight. It fixes every projection's output to mean 0 and
variance 1 per token, whatever the scales a, b did, which is what keeps OneBit's distillation stable.

Two pieces:
  output_norm_forward / output_norm_backward   the normalisation itself (shapes (..., N))
  OutputNormOps                                a backend view whose projections (BitLinear and plain
                                               linear) end with that normalisation; every other
                                               operation is the wrapped backend's own. A model whose
                                               config says `projection_output_norm=True` runs its
                                               blocks through it (its LM head stays as it is).
"""
import numpy as np

from mmf.backend import NumpyBackend
from mmf.checks import check_array

OUTPUT_NORM_EPS = 1e-5          # the OneBit code's nn.LayerNorm default


def output_norm_forward(x, eps=OUTPUT_NORM_EPS):
    """x (..., N) -> y (..., N) with mean 0 and variance ~1 over the last axis, cache."""
    check_array("output norm x", x, ndim_min=1)
    xc = x - np.mean(x, axis=-1, keepdims=True)                          # (..., N) centred
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)  # (..., 1)
    y = xc * rstd                                                         # (..., N)
    return y, (y, rstd)


def output_norm_backward(dy, cache):
    """dy (..., N) -> dx (..., N). y depends on every x_j of the token through the mean (hence the
    mean of dy is removed) and through rstd (hence the component along y is removed)."""
    y, rstd = cache
    return rstd * (dy - np.mean(dy, axis=-1, keepdims=True) - y * np.mean(dy * y, axis=-1, keepdims=True))


class OutputNormOps:
    """The backend `inner` with OneBit's output LayerNorm after every projection it runs.

    bitlinear_forward / linear_forward return (y, (inner cache, norm cache)); the backward passes undo
    the norm first, then the projection (reverse order). Everything else is `inner`'s."""

    def __init__(self, inner, eps=OUTPUT_NORM_EPS):
        self.inner, self.eps = inner, eps

    def __getattr__(self, name):                 # norms, gates, scans, weights, fused: the inner backend's
        return getattr(self.inner, name)

    # the E9 block: the reference block run on this view, so that every projection ends with the norm
    # (the inner backend's own block, e.g. the Numba fused one, calls its projections directly)
    block_forward = NumpyBackend.block_forward
    block_backward = NumpyBackend.block_backward

    def bitlinear_forward(self, x, W, g):
        z, c_proj = self.inner.bitlinear_forward(x, W, g)                 # (..., K) -> (..., N)
        y, c_norm = output_norm_forward(z, self.eps)
        return y, (c_proj, c_norm)

    def bitlinear_backward(self, dy, cache):
        c_proj, c_norm = cache
        return self.inner.bitlinear_backward(output_norm_backward(dy, c_norm), c_proj)

    def linear_forward(self, x, W):
        z, c_proj = self.inner.linear_forward(x, W)                       # (..., K) -> (..., N)
        y, c_norm = output_norm_forward(z, self.eps)
        return y, (c_proj, c_norm)

    def linear_backward(self, dy, cache):
        c_proj, c_norm = cache
        return self.inner.linear_backward(output_norm_backward(dy, c_norm), c_proj)
