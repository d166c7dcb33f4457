"""BiLLM-style binarization (Huang et al., 2024, "BiLLM: Pushing the Limit of Post-Training
Quantization for LLMs"), written for one weight matrix W (N, K) at a time with its Hessian H (K, K).

The primitive, per output row over a set of entries (a mask):
    mu = mean(w),  alpha = mean|w - mu|,  w_hat = alpha * Sign(w - mu) + mu                  (binarize)
Salient weights get a second binarization of what the first left over (residual binarization):
    w_hat = binarize(w) + binarize(w - binarize(w))
Salient weights are whole columns, the ones with the largest Hessian-weighted score
    s_j = sum_i w_ij^2 / U_jj^2        (U: the upper Cholesky factor of H^-1, GPTQ's "Hinv"),
how many of them is searched (1 .. max_salient) for the lowest reconstruction error. The other
weights have a bell-shaped distribution: a searched break point p splits them into a concentrated
group |w| < p and a sparse group |w| >= p, each binarized with its own alpha and mu.
Columns are processed in blocks of 128 as in GPTQ/OBC: the grid (salient columns, scales, p) is
chosen per block, then columns are quantized one by one and each column's error e = (w - q) / U_jj
is pushed onto the columns not yet quantized (W[:, j:] -= e U[j, j:]), so they can absorb it.

Storage counted (bits): 1 sign per weight; 1 more per salient weight (the residual sign); 1 per
column (salient or not); 1 per non-salient weight (which group); per block and row 8 scales (alpha
and mu of the two salient orders and of the two groups) at 16 bits; the break point per block. The
BiLLM paper's ~1.1 bits counts the first three only; `parts` keeps each kind so both can be read.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from mmf.compression.calibration import record
from mmf.compression.common import SCALE_BITS, Compressed, compressible_weights, require_float


# ----------------------------------------------------------------------------------------------
# the binarization primitives (row-wise over a mask)

def binarize(W, mask):
    """Row-wise binarization of the masked entries of W (N, K); mask (N, K) or (1, K) bool.
    Returns (W_hat zero outside the mask, alpha (N, 1), mu (N, 1))."""
    m = np.broadcast_to(mask, W.shape)
    count = np.maximum(m.sum(axis=1, keepdims=True), 1)                      # (N, 1)
    mu = np.where(m, W, 0.0).sum(axis=1, keepdims=True) / count               # (N, 1)
    alpha = np.where(m, np.abs(W - mu), 0.0).sum(axis=1, keepdims=True) / count
    W_hat = np.where(m, alpha * np.where(W - mu > 0, 1.0, -1.0) + mu, 0.0)    # Sign(0) = -1
    return W_hat, alpha, mu


def residual_binarize(W, mask):
    """Two binarizations: of W, then of what the first left over. Returns (W_hat, [(alpha, mu)] * 2)."""
    first, a1, m1 = binarize(W, mask)
    second, a2, m2 = binarize(W - first, mask)
    return first + second, [(a1, m1), (a2, m2)]


def split_binarize(W, mask, n_candidates=40):
    """Search the break point p over quantiles (10 %..90 %) of |w| on the mask; binarize |w| < p and
    |w| >= p separately. Returns (W_hat, p, [(alpha, mu) concentrated, (alpha, mu) sparse])."""
    m = np.broadcast_to(mask, W.shape)
    A = np.abs(W)
    if not m.any():
        return np.zeros_like(W), 0.0, [binarize(W, m)[1:]] * 2
    best = None
    for p in np.quantile(A[m], np.linspace(0.1, 0.9, n_candidates)):
        conc, a_c, mu_c = binarize(W, m & (A < p))
        sparse, a_s, mu_s = binarize(W, m & (A >= p))
        err = float(np.sum(np.where(m, W - conc - sparse, 0.0) ** 2))
        if best is None or err < best[0]:
            best = (err, conc + sparse, float(p), [(a_c, mu_c), (a_s, mu_s)])
    return best[1], best[2], best[3]


def salient_columns(W, u_diag, max_salient=32):
    """Rank columns by sum_i w_ij^2 / u_jj^2 and keep the count k in 1..max_salient whose residual
    binarization of the salient columns plus residual binarization of the rest reconstructs W best
    (BiLLM's structural search). Returns a (K,) bool mask."""
    score = np.sum(W ** 2, axis=0) / u_diag ** 2                               # (K,)
    order = np.argsort(-score, kind="stable")
    best = None
    for k in range(1, min(max_salient, W.shape[1] - 1) + 1):
        cols = np.zeros(W.shape[1], bool)
        cols[order[:k]] = True
        hat = residual_binarize(W, cols[None, :])[0] + residual_binarize(W, ~cols[None, :])[0]
        err = float(np.sum((W - hat) ** 2))
        if best is None or err < best[0]:
            best = (err, cols)
    return best[1]


# ----------------------------------------------------------------------------------------------
# one matrix, block by block with OBC/GPTQ compensation

def inverse_hessian_factor(H, damp=0.01):
    """U upper-triangular with U^T U = (H + damp * mean(diag H) * I)^-1 (GPTQ's Hinv). Columns that never
    saw an input (diag 0) get diag 1 so H stays invertible."""
    H = np.array(H, dtype=np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    H[np.diag_indices_from(H)] += damp * np.mean(np.diag(H))
    return np.linalg.cholesky(np.linalg.inv(H)).T, dead


def billm_quantize(W, H, block_size=128, max_salient=32, damp=0.01, compensate=True,
                   n_candidates=40) -> Compressed:
    """BiLLM-style binarization of W (N, K) given its Hessian H (K, K). compensate=False skips the error
    propagation (same grid, same bits): the control for what compensation buys."""
    N, K = W.shape
    if H.shape != (K, K):
        raise ValueError(f"H has shape {H.shape} but W {W.shape} needs ({K}, {K})")
    U, dead = inverse_hessian_factor(H, damp)
    Wc = np.array(W, dtype=np.float64)                            # compensated as we go
    Wc[:, dead] = 0.0
    Q = np.zeros_like(Wc)
    n_salient, breaks = 0, []
    for s in range(0, K, block_size):
        e = min(s + block_size, K)
        W1, U1 = Wc[:, s:e].copy(), U[s:e, s:e]
        d = np.diag(U1)
        cols = salient_columns(W1, d, max_salient)                           # (b,) bool
        n_salient += int(cols.sum())
        _, ((a1, m1), (a2, m2)) = residual_binarize(W1, cols[None, :])
        _, p, ((a_c, mu_c), (a_s, mu_s)) = split_binarize(W1, ~cols[None, :], n_candidates)
        breaks.append(p)
        err_block = np.zeros_like(W1)
        for j in range(e - s):                                            # quantize column j on the block's grid
            w = W1[:, j:j + 1]                                            # (N, 1) current (compensated) values
            if cols[j]:
                q1 = a1 * np.where(w - m1 > 0, 1.0, -1.0) + m1
                q = q1 + a2 * np.where(w - q1 - m2 > 0, 1.0, -1.0) + m2
            else:
                conc = np.abs(w) < p
                a, mu = np.where(conc, a_c, a_s), np.where(conc, mu_c, mu_s)
                q = a * np.where(w - mu > 0, 1.0, -1.0) + mu
            Q[:, s + j] = q[:, 0]
            err = (w - q) / d[j]                                          # (N, 1)
            err_block[:, j] = err[:, 0]
            if compensate:
                W1[:, j:] -= err * U1[j:j + 1, j:]                        # OBC update within the block
        if compensate:
            Wc[:, e:] -= err_block @ U[s:e, e:]                           # ... and onto later blocks
    n_blocks = -(-K // block_size)
    parts = {"signs": N * K, "residual_signs": N * n_salient, "column_mask": K,
             "group_bitmap": N * (K - n_salient), "scales": n_blocks * (8 * N + 1) * SCALE_BITS}
    return Compressed(Q.astype(W.dtype), float(sum(parts.values())), parts,
                      {"salient_columns": n_salient, "break_points": breaks})


def compress_billm(model, batches, block_size=128, max_salient=32, damp=0.01, compensate=True,
                   progress=False) -> dict:
    """Binarize every block projection of a float model, block by block as GPTQ/BiLLM do: the
    calibration inputs of block l come from the model whose blocks < l are already binarized.
    The model is changed in place (its block weights become the reconstructions); returns
    {name: Compressed}."""
    require_float(model, "billm")
    names = compressible_weights(model)
    results = {}
    for l in tqdm(range(model.config.num_layers), desc="billm blocks", disable=not progress):
        layer_names = [n for n in names if n.startswith(f"model.layers.{l}.")]
        hessians = record(model, batches, layer_names).hessians()
        for name in layer_names:
            results[name] = billm_quantize(model.params[name], hessians[name], block_size, max_salient,
                                           damp, compensate)
            model.params[name] = results[name].W_hat.astype(model.dtype)
    return results
