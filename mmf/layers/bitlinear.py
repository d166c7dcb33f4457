"""E4/E5 BitLinear: RMSNorm -> int8 activations -> ternary (or binary) weights, no bias, STE backward.

    forward:  xn = rms(x; g, 1e-6);  x~ = actquant(xn);  y = x~ @ W~.T           (E4)
    backward: quantizers are identity (STE, E5):
              dW = dy.T @ x~   (the *quantized* input),  dx~ = dy @ W~  (the *quantized* weight),
              then dx~ flows back through the RMSNorm to dx and dg.

Two variants with identical gradients:
  * caching (fused=False): keeps x~ in the cache for dW;
  * fused   (fused=True):  keeps only x and the norm statistics and recomputes x~ in backward
    (the paper's fused BitLinear: one activation tensor per layer stored instead of two).

Shapes: x (..., K) in, W (N, K) [out, in] like the state dict, g (K,), y (..., N).
weights selects the weight quantizer: 'ternary' (E3, the MatMul-free LM and BitNet b1.58), 'binary'
(E3b, BitNet) or 'float', which turns both quantizers off (a plain RMSNorm + linear: the float
baselines, and the mode finite-difference checks use).
"""
import numpy as np

from mmf.checks import check_array
from mmf.layers.quant import activation_quant, activation_quant_int, quantize_weight, resolve_weights
from mmf.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward, rmsnorm_normalized

BITLINEAR_EPS = 1e-6  # the released models' fused kernel uses 1e-6, not the module's 1e-8 (E4)


def bitlinear_forward(x, W, g, weights="ternary", fused=False, quantize=None):
    """quantize is the older boolean spelling of weights (True = 'ternary', False = 'float')."""
    weights = resolve_weights(weights if quantize is None else None, quantize)
    check_array("bitlinear x", x, ndim_min=1)
    check_array("bitlinear W", W, ndim=2, dtype=x.dtype)
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"bitlinear W has shape {W.shape} [out, in] but x has {x.shape[-1]} input features")
    xn, norm_cache = rmsnorm_forward(x, g, BITLINEAR_EPS)           # (..., K)
    quantize = weights != "float"
    xq = activation_quant(xn) if quantize else xn                    # (..., K)  x~
    Wq = quantize_weight(W, weights)                                 # (N, K)    W~
    y = xq @ Wq.T                                                    # (..., K) -> (..., N)
    # fused: drop x~ and rebuild it in backward from x and rstd (already in norm_cache)
    cache = (norm_cache, None if fused else xq, Wq, quantize)
    return y, cache


def bitlinear_backward(dy, cache):
    norm_cache, xq, Wq, quantize = cache
    if xq is None:                                                   # fused variant: recompute x~
        xn = rmsnorm_normalized(norm_cache)
        xq = activation_quant(xn) if quantize else xn
    K = Wq.shape[1]
    dW = dy.reshape(-1, dy.shape[-1]).T @ xq.reshape(-1, K)          # (N, M) @ (M, K) -> (N, K)
    dxq = dy @ Wq                                                    # (..., N) -> (..., K)
    dx, dg = rmsnorm_backward(dxq, norm_cache)                       # STE: dxn = dx~
    return dx, dW, dg


# ----------------------------------------------------------------------------
# The integer form (E4): what the kernels and the FPGA compute, additions and subtractions only.

def ternary_matmul_addsub(q, Wt):
    """acc[m, n] = sum_{k: Wt[n,k]=+1} q[m,k] - sum_{k: Wt[n,k]=-1} q[m,k], exact in int32.

    A readable reference, written with masks so that no multiplication appears: a ternary weight
    only decides whether an activation is added, subtracted or skipped. q (M, K) int8, Wt (N, K) int8.
    """
    q32 = q.astype(np.int32)
    acc = np.empty((q.shape[0], Wt.shape[0]), dtype=np.int32)       # (M, N)
    for n in range(Wt.shape[0]):
        plus, minus = Wt[n] == 1, Wt[n] == -1                       # (K,) masks
        acc[:, n] = q32[:, plus].sum(axis=1) - q32[:, minus].sum(axis=1)
    return acc


def bitlinear_int_forward(x, Wt, beta, g):
    """E4 integer form: y = (q @ Wt.T) * beta / s. Equals bitlinear_forward up to float rounding.

    x (M, K) float, Wt (N, K) int8 ternary, beta the weight scale, g (K,) the norm gain.
    """
    xn, _ = rmsnorm_forward(x, g, BITLINEAR_EPS)                     # (M, K)
    q, s = activation_quant_int(xn)                                  # (M, K) int8, (M, 1)
    acc = ternary_matmul_addsub(q, Wt)                               # (M, N) int32
    return (acc * (beta / s)).astype(x.dtype)                        # (M, N), the input's float dtype
