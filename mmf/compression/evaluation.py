"""Validation loss of a (compressed) model, with the activations at either precision.

The papers evaluate BiLLM and OneBit with 16-bit float activations; mmf's native BitLinear quantizes
every activation to int8 per token (E2). A compressed model here is a weights='float' model, whose
BitLinears run float activations; `Int8ActivationBackend` runs the same float weights on E2-quantized
activations (every BitLinear or plain linear, the LM head included), so both numbers can be reported.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from mmf.backend import NumpyBackend
from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.layers.loss import cross_entropy_forward
from mmf.layers.quant import activation_quant
from mmf.layers.rmsnorm import rmsnorm_forward
from mmf.text.corpus import eval_windows

ACTIVATIONS = ("float", "int8")


class Int8ActivationBackend(NumpyBackend):
    """Forward only: x~ = E2(rms(x; g)), y = x~ @ W^T with W used as stored (float weights)."""

    def __init__(self):
        super().__init__(weights="float", fused=True)

    def bitlinear_forward(self, x, W, g):
        xn, norm_cache = rmsnorm_forward(x, g, BITLINEAR_EPS)                # (..., K)
        return activation_quant(xn) @ W.T, None                               # (..., K) -> (..., N)

    def linear_forward(self, x, W):                        # the float Transformer++'s plain projections
        return activation_quant(x) @ W.T, None

    def bitlinear_backward(self, dy, cache):
        raise NotImplementedError("Int8ActivationBackend is for evaluation only")


def validation_loss(model, tokens, block_size=128, max_windows=None, batch_size=16, activations="float",
                    progress=False) -> float:
    """Mean cross-entropy (nats/token) over consecutive validation windows (the trainer's evaluation)."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if activations == "int8" and model.config.weights != "float":
        raise ValueError(f"a weights={model.config.weights!r} model already runs int8 activations; "
                         "evaluate it with activations='float' (its own forward)")
    x, y = eval_windows(tokens, block_size, max_windows)                    # (N, T), (N, T)
    own = model.backend
    if activations == "int8":
        model.backend = Int8ActivationBackend()
    try:
        total = 0.0
        for s in tqdm(range(0, len(x), batch_size), desc="eval", disable=not progress, leave=False):
            logits = model.forward(x[s:s + batch_size])                       # (b, T, V)
            total += cross_entropy_forward(logits, y[s:s + batch_size])[0] * logits.shape[0]
    finally:
        model.backend = own
    return total / len(x)
