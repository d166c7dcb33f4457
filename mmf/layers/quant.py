"""Quantizers: E2 (per-token int8 absmax activations), E3 (per-tensor ternary absmean weights) and
E3b (per-tensor binary weights, BitNet 2023).

Each quantizer comes in two forms that agree exactly:
  * the integer form (int8 codes + a float scale), used by the kernels and the FPGA model;
  * the "fake-quant" float form x~ = q / s, W~ = Wt * beta, used for training (the official GPU
    code does the same: it never runs integer math, it runs a float matmul on dequantized values).
Rounding is round-half-to-even (np.round), as torch.round does.
"""
import numpy as np

ACT_QMAX = 127.0     # 8-bit symmetric range: s*x lands in [-127, 127] because s = 127 / max|x|
ACT_EPS = 1e-5       # floor on max|x|: an all-zero token gets s = 127/1e-5 instead of a division by 0
WEIGHT_EPS = 1e-5    # floor on mean|W|: an all-zero matrix gets beta = 1e-5


# ----------------------------------------------------------------------------
# E2: activations, one scale per token (last axis)

def activation_scale(x):
    """s = 127 / max(max_j |x_j|, 1e-5), one per token.  (..., D) -> (..., 1)"""
    absmax = np.max(np.abs(x), axis=-1, keepdims=True)            # (..., 1)
    return (ACT_QMAX / np.maximum(absmax, ACT_EPS)).astype(x.dtype)


def activation_quant_int(x):
    """E2 integer form: (q int8 (..., D), s (..., 1)) with q = clip(round(x*s), -128, 127)."""
    s = activation_scale(x)                                        # (..., 1)
    q = np.clip(np.round(x * s), -128, 127).astype(np.int8)        # (..., D)
    return q, s


def activation_quant(x):
    """E2 fake-quant: x~ = q / s, same dtype as x. Equal to activation_quant_int's q / s."""
    s = activation_scale(x)
    return np.clip(np.round(x * s), -128, 127) / s


# ----------------------------------------------------------------------------
# E3: weights, one scale per tensor

def weight_scale(W):
    """beta = max(mean|W|, 1e-5): the absmean of the whole matrix."""
    return max(float(np.mean(np.abs(W))), WEIGHT_EPS)


def ternary_codes(W, beta):
    """E3's codes for a given scale: clip(round(W / beta), -1, 1) as int8. Like the official code, W is
    multiplied by 1/beta. Elementwise, so a matrix can be coded a block of rows at a time."""
    return np.clip(np.round(W * (1.0 / beta)), -1, 1).astype(np.int8)


def weight_quant_int(W):
    """E3 integer form: (Wt int8 in {-1,0,1}, beta)."""
    beta = weight_scale(W)
    return ternary_codes(W, beta), beta


def weight_quant(W):
    """E3 fake-quant: W~ = Wt * beta, values in {-beta, 0, +beta}, same dtype as W."""
    Wt, beta = weight_quant_int(W)
    return Wt.astype(W.dtype) * W.dtype.type(beta)


# ----------------------------------------------------------------------------
# E3b: binary weights (BitNet, Wang et al. 2023, arXiv 2310.11453), one scale per tensor
#   W~ = beta * Sign(W - alpha),  alpha = mean(W),  beta = mean|W|,  Sign(0) = -1.
# np.sign(0) is 0: using it would silently produce ternary codes, so the sign is written as a comparison.

def binary_weight_scales(W):
    """(alpha, beta): alpha = mean(W) centres the weights, beta = max(mean|W|, 1e-5) scales the signs."""
    return float(np.mean(W)), max(float(np.mean(np.abs(W))), WEIGHT_EPS)


def weight_quant_binary_int(W):
    """E3b integer form: (Wb int8 in {-1, +1}, alpha, beta) with Wb = +1 where W > alpha, else -1."""
    alpha, beta = binary_weight_scales(W)
    Wb = np.where(W > alpha, 1, -1).astype(np.int8)
    return Wb, alpha, beta


def weight_quant_binary(W):
    """E3b fake-quant: W~ = Wb * beta, values in {-beta, +beta}, same dtype as W."""
    Wb, _, beta = weight_quant_binary_int(W)
    return Wb.astype(W.dtype) * W.dtype.type(beta)


# ----------------------------------------------------------------------------
# The weight formats a model can be built with (the `weights` field of every model config).

WEIGHT_FORMATS = ("ternary", "binary", "float")


def check_weights(weights, where="weights"):
    """Refuse anything but one of WEIGHT_FORMATS, naming the offending value."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, WEIGHT_FORMATS))}, got {weights!r}")
    return weights


def resolve_weights(weights=None, quantize=None, default="ternary"):
    """The weight format from `weights`, or from the deprecated boolean `quantize` alias."""
    if weights is not None and quantize is not None and (weights != "float") != bool(quantize):
        raise ValueError(f"weights={weights!r} contradicts quantize={quantize!r}; pass only weights")
    if weights is None:
        weights = default if quantize is None or quantize else "float"
    return check_weights(weights)


def quantize_weight(W, weights):
    """W~ for the given format: E3 ternary, E3b binary, or W itself for 'float'."""
    if weights == "ternary":
        return weight_quant(W)
    if weights == "binary":
        return weight_quant_binary(W)
    return W


def weight_codes(W, weights):
    """(codes int8, beta) with W~ = codes * beta: ternary codes in {-1, 0, 1} (E3) or binary codes in
    {-1, +1} (E3b). Both are ternary values, so one add/subtract kernel serves both formats."""
    if weights == "ternary":
        return weight_quant_int(W)
    if weights == "binary":
        Wb, _, beta = weight_quant_binary_int(W)
        return Wb, beta
    raise ValueError(f"weight_codes needs weights 'ternary' or 'binary', got {weights!r} (float has no codes)")
