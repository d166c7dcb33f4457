"""Recurrent generation: prefill the prompt once, then O(1) work per new token.

An MLGRU layer's whole memory of the past is its hidden state h (B, D) (E6), so decoding never
re-reads the prefix: `model.forward(prompt, return_state=True)` runs the prompt once and returns the
last logits and the per-layer states; each new token is then one `forward` of length 1 carrying that
state. (A Transformer would need a growing KV cache here; this model needs L vectors of size D.)

Sampling: logits / temperature, optionally cut to the top-k tokens and/or the smallest set whose
probability reaches top-p (nucleus), then one draw from a seeded generator. temperature == 0 is greedy
(argmax), which equals argmax decoding with full-sequence `forward` (tests/test_generate.py).
"""
from __future__ import annotations

import numpy as np


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN or inf logits: no token can be drawn from them (argmax of NaN is 0,
    a silent wrong answer). Usually NaN/inf parameters (a diverged run) or a corrupted state."""


def check_finite_logits(logits: np.ndarray, where: str = "generate") -> None:
    """Raise NonFiniteLogitsError unless every logit is finite."""
    if not np.isfinite(logits).all():
        bad = np.argwhere(~np.isfinite(logits))[0]
        raise NonFiniteLogitsError(
            f"{where}: the model produced non-finite logits (e.g. {logits[tuple(bad)]} at row {bad[0]}, "
            f"token {bad[-1]}); its parameters or state hold NaN/inf. Check them with "
            "np.isfinite(p).all() for p in model.params.values(), or use an earlier checkpoint")


def _check_options(max_new_tokens, temperature, top_k, top_p):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def next_token_probs(logits: np.ndarray, temperature: float, top_k: int | None = None,
                     top_p: float | None = None) -> np.ndarray:
    """logits (B, V) -> sampling distribution (B, V) after temperature, top-k and top-p (temperature > 0)."""
    z = logits.astype(np.float64) / temperature                        # (B, V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]        # (B, 1) k-th largest logit
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")                 # (B, V) most likely first
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p                # mass strictly before each token
        keep_sorted = before < top_p                                   # the first token is always kept
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample_next(logits: np.ndarray, temperature: float, top_k, top_p, rng: np.random.Generator) -> np.ndarray:
    """One token per row of logits (B, V) -> (B,) int64. Non-finite logits raise NonFiniteLogitsError."""
    check_finite_logits(logits, "sample_next")
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)                 # greedy
    p = next_token_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p, axis=-1)                                         # (B, V)
    u = rng.random(p.shape[0]) * cdf[:, -1]                             # (B,) one uniform per row
    return np.minimum((cdf <= u[:, None]).sum(axis=-1), p.shape[-1] - 1).astype(np.int64)


def generate(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None) -> np.ndarray:
    """Continue `ids` (B, T) — or (T,) — by max_new_tokens tokens; returns (B, T + new) (or (T + new,))."""
    _check_options(max_new_tokens, temperature, top_k, top_p)
    ids = np.asarray(ids)
    squeeze = ids.ndim == 1
    if squeeze:
        ids = ids[None, :]                                              # (T,) -> (1, T)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"ids must be (B, T) or (T,) with T >= 1 prompt tokens, got shape {ids.shape}")
    rng = np.random.default_rng(seed)
    logits, state = model.forward(ids, state=None, return_state=True)   # prefill: (B, T, V)
    last = logits[:, -1]                                                # (B, V)
    out = [ids.astype(np.int64)]
    for k in range(max_new_tokens):
        tok = sample_next(last, temperature, top_k, top_p, rng)         # (B,)
        out.append(tok[:, None])
        if k + 1 < max_new_tokens:                                      # one step, carrying the state
            logits, state = model.forward(tok[:, None], state=state, return_state=True)   # (B, 1, V)
            last = logits[:, -1]
    result = np.concatenate(out, axis=1)                                # (B, T + new)
    return result[0] if squeeze else result
