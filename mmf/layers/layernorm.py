"""LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * g + b, over the last axis.

RWKV-4 normalizes with LayerNorm (a gain and a bias, centred), where the MatMul-free LM uses RMSNorm
(E1: a gain only, not centred). mmf's RWKV-4 keeps LayerNorm for its block norms so that the only
change from RWKV-4 is the one the paper makes: dense layers become BitLinears (whose own norm is RMSNorm).

Shapes: x (..., D), g and b (D,).
"""
import numpy as np

from mmf.checks import check_array


def layernorm_forward(x, g, b, eps=1e-5):
    check_array("layernorm x", x, ndim_min=1)
    check_array("layernorm g", g, shape=(x.shape[-1],), dtype=x.dtype)
    check_array("layernorm b", b, shape=(x.shape[-1],), dtype=x.dtype)
    xc = x - np.mean(x, axis=-1, keepdims=True)                          # (..., D) centred
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = xc * rstd                                                      # (..., D)
    y = xhat * g + b
    cache = (xhat, g, rstd)
    return y, cache


def layernorm_backward(dy, cache):
    xhat, g, rstd = cache
    D = xhat.shape[-1]
    dg = np.sum((dy * xhat).reshape(-1, D), axis=0)                       # (D,)
    db = np.sum(dy.reshape(-1, D), axis=0)                                # (D,)
    dxhat = dy * g
    # xhat depends on every x_j of the token twice: through the mean (hence - mean(dxhat)) and
    # through rstd (hence the projection on xhat)
    dx = rstd * (dxhat - np.mean(dxhat, axis=-1, keepdims=True)
                 - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dg, db
