"""OneBit-style 1-bit weights (Xu et al., 2024, "OneBit: Towards Extremely Low-bit Large Language
Models"): a sign matrix and two float vectors per weight.

Sign-Value-Independent Decomposition (SVID):
    W ~ Sign(W) * (a b^T)        a (N,) one scale per output row, b (K,) one per input column,
where a b^T is a rank-1 approximation of |W|. As a layer it needs no float matrix product:
    y = ((x * b) Sign(W)^T) * a  (scale the input, add/subtract, scale the output).
Two ways to get a, b:
  * SVD: a b^T = sigma_1 u_1 v_1^T, the best rank-1 approximation of |W| (Eckart-Young), so the squared
    error is exactly sum_{i>=2} sigma_i^2 of |W|. |W| has no negative entries, so u_1 and v_1 can be
    taken non-negative (Perron-Frobenius) and a, b are real scales.
  * NMF with one component, as the OneBit code does (scikit-learn's NMF): here by Lee-Seung
    multiplicative updates. For a non-negative matrix the best non-negative rank-1 factorisation IS the
    SVD's, so NMF converges to the same a b^T; it only differs by how far it got.
Storage: 1 bit per sign plus (N + K) scales at 16 bits.

OneBit's layer also puts a LayerNorm without affine parameters on each projection's output, to keep
training stable at 7B scale:  y = LayerNorm( ((x * b) Sign(W)^T) * a ).  It stores nothing (0 bits).
mmf has it as a model option, `projection_output_norm=True` in the float model's config
(mmf/layers/output_norm.py); `python -m mmf.compress --methods=onebit-ln` turns it on for the
distillation (distill.py), the evaluation and the saved checkpoint, `--methods=onebit` leaves it off.
"""
from __future__ import annotations

import numpy as np

from mmf.compression.common import SCALE_BITS, Compressed, compressible_weights, require_float, sign

DECOMPOSITIONS = ("svd", "nmf")


def rank1_svd(A):
    """a (N,), b (K,) >= 0 with a b^T the best rank-1 approximation of A (N, K) >= 0."""
    U, S, Vt = np.linalg.svd(np.asarray(A, np.float64), full_matrices=False)
    u, v = U[:, 0], Vt[0]
    if u.sum() < 0:                                        # the pair (u, v) is defined up to one sign
        u, v = -u, -v
    root = np.sqrt(S[0])
    return np.maximum(u, 0) * root, np.maximum(v, 0) * root


def rank1_nmf(A, iters=200, eps=1e-12):
    """a (N,), b (K,) >= 0 minimising ||A - a b^T||^2 by multiplicative updates (Lee & Seung 2001),
    from a flat start; each update keeps the factors non-negative and does not increase the error."""
    A = np.asarray(A, np.float64)
    a = np.full(A.shape[0], np.sqrt(A.mean()))
    b = np.full(A.shape[1], np.sqrt(A.mean()))
    for _ in range(iters):
        a *= (A @ b) / (a * (b @ b) + eps)
        b *= (A.T @ a) / (b * (a @ a) + eps)
    return a, b


def svid(W, decomposition="svd", iters=200):
    """(signs (N, K) in {-1, +1}, a (N,), b (K,)) with W ~ signs * (a b^T)."""
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"decomposition must be one of {DECOMPOSITIONS}, got {decomposition!r}")
    A = np.abs(W)
    a, b = rank1_svd(A) if decomposition == "svd" else rank1_nmf(A, iters)
    return sign(np.asarray(W, np.float64)), a, b


def onebit_weight(W, decomposition="svd") -> Compressed:
    S, a, b = svid(W, decomposition)
    N, K = W.shape
    parts = {"signs": N * K, "scales": (N + K) * SCALE_BITS}
    return Compressed((S * np.outer(a, b)).astype(W.dtype), float(sum(parts.values())), parts,
                      {"a": a, "b": b, "decomposition": decomposition})


def compress_onebit(model, decomposition="svd") -> dict:
    """{name: Compressed} (SVID) for every block projection of a float model (the model is not changed)."""
    require_float(model, "onebit")
    return {name: onebit_weight(model.params[name], decomposition) for name in compressible_weights(model)}
