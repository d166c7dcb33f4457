"""E1 RMSNorm: y = x / sqrt(mean(x^2) + eps) * g, over the last axis.

Shapes: x (..., D), g (D,). Used as the block pre-norms, g_norm in the MLGRU, the final norm,
and inside every BitLinear (E4).
"""
import numpy as np

from mmf.checks import check_array


def rmsnorm_forward(x, g, eps=1e-6):
    check_array("rmsnorm x", x, ndim_min=1)
    check_array("rmsnorm g", g, shape=(x.shape[-1],), dtype=x.dtype)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)   # (..., 1)
    y = x * rstd * g                                                      # (..., D)
    cache = (x, g, rstd)
    return y, cache


def rmsnorm_normalized(cache):
    """Recompute y = x * rstd * g from a cache (the fused BitLinear does this instead of storing y)."""
    x, g, rstd = cache
    return x * rstd * g


def rmsnorm_backward(dy, cache):
    x, g, rstd = cache
    xhat = x * rstd                                                       # (..., D)
    dg = np.sum((dy * xhat).reshape(-1, x.shape[-1]), axis=0)             # (D,)
    dxhat = dy * g                                                        # (..., D)
    # xhat = x * rstd and rstd depends on every x_j of the token, hence the projection term:
    # dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
    dx = rstd * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dg
