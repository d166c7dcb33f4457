"""Round-to-nearest (RTN): quantize each weight on its own, no data, no correction.

    ternary (absmean, E3 generalised):  beta = mean|W|,  W_hat = beta * clip(round(W / beta), -1, 1)
    binary  (sign):                     per tensor E3b: W_hat = beta * Sign(W - mean(W)), beta = mean|W|;
                                        per channel: W_hat = beta_row * Sign(W), beta_row = mean|W_row|
                                        (XNOR-Net's scale: the least-squares one for the signs of W; a
                                        per-row centre would be a noisy estimate that flips signs)

`per="tensor"` uses one (alpha, beta) for the whole matrix: exactly mmf's E3 / E3b, so a per-tensor RTN
ternary model IS a ternary MatMul-free model (`as_native_ternary`). `per="channel"` gives every output
row (every output channel) its own scales, the usual PTQ choice: more scales, smaller error.
Bits: log2(3) per ternary code or 1 per sign, plus 16 per stored scale (1 or N of them; the binary
centre alpha only chooses the signs and is not stored).
"""
from __future__ import annotations

import numpy as np

from mmf.compression.common import SCALE_BITS, TERNARY_BITS, Compressed, compressible_weights, require_float
from mmf.layers.quant import WEIGHT_EPS, weight_quant, weight_quant_binary

PER = ("tensor", "channel")


def _check_per(per):
    if per not in PER:
        raise ValueError(f"per must be 'tensor' or 'channel', got {per!r}")


def rtn_ternary(W, per="tensor") -> Compressed:
    """Absmean ternary of W (N, K): per tensor (E3 itself) or with one beta per output row."""
    _check_per(per)
    if per == "tensor":
        return Compressed(weight_quant(W), W.size * TERNARY_BITS + SCALE_BITS,
                          {"codes": W.size * TERNARY_BITS, "scales": SCALE_BITS})
    beta = np.maximum(np.mean(np.abs(W), axis=1, keepdims=True), WEIGHT_EPS)       # (N, 1)
    codes = np.clip(np.round(W / beta), -1, 1)                                      # (N, K) in {-1, 0, 1}
    scales = W.shape[0] * SCALE_BITS
    return Compressed((codes * beta).astype(W.dtype), W.size * TERNARY_BITS + scales,
                      {"codes": W.size * TERNARY_BITS, "scales": scales})


def rtn_binary(W, per="tensor") -> Compressed:
    """Sign binary of W (N, K): per tensor (E3b itself) or with one (alpha, beta) per output row."""
    _check_per(per)
    if per == "tensor":
        return Compressed(weight_quant_binary(W), W.size + SCALE_BITS, {"signs": W.size, "scales": SCALE_BITS})
    beta = np.maximum(np.mean(np.abs(W), axis=1, keepdims=True), WEIGHT_EPS)       # (N, 1) scale
    signs = np.where(W > 0, 1.0, -1.0)                                              # Sign(0) = -1 (E3b)
    scales = W.shape[0] * SCALE_BITS
    return Compressed((signs * beta).astype(W.dtype), W.size + scales, {"signs": W.size, "scales": scales})


def compress_rtn(model, kind="ternary", per="tensor") -> dict:
    """{name: Compressed} for every block projection of a float model (the model is not changed)."""
    require_float(model, f"rtn-{kind}")
    if kind not in ("ternary", "binary"):
        raise ValueError(f"kind must be 'ternary' or 'binary', got {kind!r}")
    quant = rtn_ternary if kind == "ternary" else rtn_binary
    return {name: quant(model.params[name], per) for name in compressible_weights(model)}


def as_native_ternary(model):
    """The float model's parameters in a weights='ternary' model: its E3 forward quantizes every BitLinear
    per tensor on the fly, so the block projections are exactly `rtn_ternary(W, 'tensor')`. Unlike the
    compressed float model, its LM head is ternary too and its activations int8 (E2): mmf's native format,
    the one `kernels_numba.Engine` and the accelerator model run."""
    import dataclasses
    from mmf.models.registry import build_model
    require_float(model, "rtn-ternary (native)")
    if type(model.config).arch != "mmfree":
        raise ValueError(f"rtn-ternary-native is the MatMul-free LM's own ternary format; this model is "
                         f"arch={type(model.config).arch!r} (its ternary variant has other parameters); "
                         "use rtn-ternary")
    native = build_model(dataclasses.replace(model.config, weights="ternary"), dtype=model.dtype)
    for k, v in model.params.items():
        native.params[k] = v.copy()
    return native
