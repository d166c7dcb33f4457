"""What the compression methods act on and how their size is counted.

Scope (the same for every method): the 2-D weights of the blocks (`model.layers.{l}.*_proj.weight`:
for the MatMul-free LM the four MLGRU projections and the two GLU projections). The token embedding,
the LM head, every norm gain and the forget-gate lower bounds stay float.

Bits per weight count exactly what a compressed tensor needs to be rebuilt: its codes (1 bit per
sign, log2(3) per ternary code), and every scale, offset (16 bits each, as the papers count fp16
scales) and mask bit. `bits_per_weight` divides the total over the compressed tensors by their
number of weights; the float parts outside the scope are not in it (they are listed separately).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCALE_BITS = 16                  # a stored scale or offset (fp16)
TERNARY_BITS = math.log2(3)      # information in one ternary code (packed 5 per byte = 1.6 bits in practice)


@dataclass
class Compressed:
    """One compressed weight: its float reconstruction W_hat (what the model runs) and its size."""
    W_hat: np.ndarray                        # (N, K) reconstruction, the dtype of the original
    bits: float                              # total storage of codes + scales + masks, in bits
    parts: dict = field(default_factory=dict)   # bits by kind, e.g. {"signs": ..., "scales": ...}
    info: dict = field(default_factory=dict)    # method-specific facts (salient columns, break points)

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.W_hat.size


def compressible_weights(model) -> list[str]:
    """Names of the block projection weights: every 2-D parameter below `model.layers.`."""
    return [k for k, p in model.params.items() if k.startswith("model.layers.") and p.ndim == 2]


def require_float(model, method: str):
    """Post-training methods need a float model: a ternary/binary one has already been quantized."""
    weights = getattr(model.config, "weights", None)
    if weights != "float":
        raise ValueError(f"{method} compresses a trained float model (weights='float'), but this model has "
                         f"weights={weights!r}: it is already quantized. Train one with "
                         f"`python -m mmf.train --weights=float` and pass that checkpoint")
    return model


def sign(x):
    """+1 where x > 0, else -1 (Sign(0) = -1, the convention of E3b): exactly one bit per entry."""
    return np.where(x > 0, 1.0, -1.0).astype(x.dtype)


def bits_per_weight(results: dict) -> float:
    """Over all compressed tensors: total bits / total weights."""
    return sum(c.bits for c in results.values()) / sum(c.W_hat.size for c in results.values())


def apply(model, results: dict):
    """Put the reconstructions into the (float) model in place; returns the model."""
    for name, c in results.items():
        model.params[name] = c.W_hat.astype(model.dtype)
    return model


def summary(results: dict) -> dict:
    """JSON-able facts for the checkpoint's extra: bits/weight overall and per kind of storage."""
    parts: dict = {}
    for c in results.values():
        for k, v in c.parts.items():
            parts[k] = parts.get(k, 0.0) + v
    n = sum(c.W_hat.size for c in results.values())
    return {"bits_per_weight": bits_per_weight(results), "compressed_weights": int(n),
            "bits_per_weight_by_part": {k: v / n for k, v in parts.items()},
            "tensors": sorted(results)}
