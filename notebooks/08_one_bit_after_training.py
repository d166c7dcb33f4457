# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · One bit after training: RTN, BiLLM-style and OneBit-style compression
#
# There are two roads to a language model with ~1-bit weights.
#
# * **Train it that way** (BitNet, BitNet b1.58, the MatMul-free LM): quantization-aware training (QAT)
#   with the straight-through estimator, what notebooks 01–03 teach.
# * **Train in float, squeeze afterwards** (post-training quantization, PTQ): take the trained float
#   weights and replace them by signs and a few scales. Round-to-nearest (RTN) does it weight by weight;
#   **BiLLM** (Huang et al., 2024) spends extra bits where a Hessian says the error hurts most and
#   corrects the rest as it goes; **OneBit** (Xu et al., 2024) factors each matrix into a sign matrix and
#   two scale vectors and then *distils* the float model into it — a short training run after all.
#
# This notebook walks through each method on **one layer** of a trained float MatMul-free model, then
# compares them on the **whole model** against QAT. Everything runs through `mmf.compression`
# (one file per method) and `python -m mmf.compress`; the compressed models are ordinary
# `weights="float"` models, so forward, `generate`, checkpoints and `mmf.load` work unchanged.
#
# Scope (as in both papers): the block projections are compressed; the token embedding and the LM head
# stay float. With `MMF_SMOKE=1` (CI) everything shrinks to seconds.

# %%
# %matplotlib inline
import os
import numpy as np
import matplotlib.pyplot as plt

import mmf
from mmf.compression import billm, calibration, common, onebit, rtn
from mmf.compression.evaluation import validation_loss
from mmf.compress import Options, SMOKE as SMOKE_OPTIONS, load_data, run_method
from mmf.training.checkpoint import load_checkpoint

SMOKE = os.environ.get("MMF_SMOKE") == "1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mmf.__file__)))
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. A trained float model
#
# The README's experiment trains a float model on Tiny Shakespeare
# (`python -m mmf.train --preset=shakespeare --hidden_size=192 --num_layers=3 --weights=float --out_dir=runs/compress/float_s0`). If that
# checkpoint exists it is used; otherwise (and always in smoke mode) a tiny float model is trained here
# on the embedded story corpus in seconds, and every number below is that small model's.

# %%
BIG = os.path.join(REPO_ROOT, "runs", "compress", "float_s0", "ckpt.ckpt")
if os.path.exists(BIG) and not SMOKE:
    path = BIG
else:
    from mmf.training.trainer import PRESETS, TrainConfig, train
    out = os.path.join(REPO_ROOT, "runs", "nb08", "float")
    cfg = TrainConfig(**{**PRESETS["smoke"], "weights": "float", "hidden_size": 64, "num_layers": 2,
                         "max_steps": 20 if SMOKE else 300, "eval_interval": 20 if SMOKE else 100,
                         "out_dir": out, "sample_prompts": "", "progress": False})
    train(cfg)
    path = os.path.join(out, "ckpt.ckpt")
ck = load_checkpoint(path)
model = ck.build_model()
data = load_data(ck)
print(path, "|", type(model.config).__name__, model.config.weights, "|", f"{model.num_params():,} params")
print("compressed tensors:", len(common.compressible_weights(model)), "e.g.", common.compressible_weights(model)[:3])

# %% [markdown]
# ## 2. One layer: what the weights look like, and RTN
#
# The GLU's fused gate/up projection of the first block. A trained weight matrix is bell-shaped around 0
# with a few large entries. RTN binary keeps one bit per weight and one scale (E3b: β·Sign(W − mean W));
# RTN ternary keeps a zero too (E3: log2 3 ≈ 1.58 bits).

# %%
NAME = "model.layers.0.mlp.gate_proj.weight"
W = model.params[NAME].astype(np.float64)
variants = {"RTN binary / tensor": rtn.rtn_binary(W, "tensor"), "RTN binary / channel": rtn.rtn_binary(W, "channel"),
            "RTN ternary / tensor": rtn.rtn_ternary(W, "tensor"), "RTN ternary / channel": rtn.rtn_ternary(W, "channel")}
rel = lambda W_hat: np.sum((W - W_hat) ** 2) / np.sum(W ** 2)
for label, c in variants.items():
    print(f"{label:24s} {c.bits_per_weight:5.3f} bits/weight   relative squared error {rel(c.W_hat):.3f}")

fig, axes = plt.subplots(1, 3, figsize=(13, 3))
axes[0].hist(W.ravel(), bins=120, color="gray")
axes[0].set_title(f"{NAME.split('model.')[1]}: float")
axes[1].hist(variants["RTN binary / channel"].W_hat.ravel(), bins=120, color="tab:red")
axes[1].set_title("RTN binary per channel: 2 values per row")
axes[2].hist(variants["RTN ternary / tensor"].W_hat.ravel(), bins=120, color="tab:blue")
axes[2].set_title("RTN ternary per tensor: 3 values")
fig.tight_layout()

# %% [markdown]
# ## 3. BiLLM step by step
#
# **Calibration.** BiLLM needs what the layer sees: run the model's own forward on a few hundred training
# windows with a backend that records each projection's input X, and form the Hessian of the layer's
# squared output error, H = 2XᵀX/n. (`calibration.RecordingBackend` is the NumPy backend plus that hook.)

# %%
opts = SMOKE_OPTIONS if SMOKE else Options(calib_sequences=128)
batches = calibration.calibration_batches(data.train, model.config.vocab_size, opts.calib_sequences,
                                          opts.block_size, seed=0, batch_size=opts.batch_size)
rec = calibration.record(model, batches, [NAME], keep=[NAME])
H, X = rec.hessians()[NAME], rec.inputs(NAME).astype(np.float64)
print(f"H {H.shape} from {X.shape[0]:,} calibration tokens")

# %% [markdown]
# **Salient columns.** Quantizing column j costs about w_ij² / U_jj² in output error (U: the Cholesky factor of
# H⁻¹ that GPTQ uses), so columns with large weights *and* large or independent inputs are salient. BiLLM
# keeps whole columns (a 1-bit-per-column mask) and searches how many.

# %%
U, _ = billm.inverse_hessian_factor(H)
block = slice(0, min(opts.billm_block, W.shape[1]))
W1, d = W[:, block], np.diag(U)[block]
score = np.sum(W1 ** 2, axis=0) / d ** 2
cols = billm.salient_columns(W1, d, opts.billm_max_salient)
fig, axes = plt.subplots(1, 2, figsize=(13, 3.2))
axes[0].bar(np.arange(len(score)), score, color=np.where(cols, "tab:red", "tab:gray"))
axes[0].set_title(f"column score in the first block: {cols.sum()} salient (red)")
axes[0].set_xlabel("input column")
axes[1].imshow(np.abs(W1), aspect="auto", cmap="Greys")
for j in np.flatnonzero(cols):
    axes[1].axvline(j, color="tab:red", lw=0.6, alpha=0.6)
axes[1].set_title("|W| of the block, salient columns marked")
fig.tight_layout()

# %% [markdown]
# **Residual binarization** of the salient columns (a second sign and scale for what the first left over)
# and **split binarization** of the rest (a searched break point p: |w| < p and |w| ≥ p get their own
# scale). Both must beat one plain binarization of the same weights.

# %%
salient, rest = cols[None, :], ~cols[None, :]
e = lambda hat, m: np.sum(np.where(np.broadcast_to(m, W1.shape), W1 - hat, 0) ** 2)
print(f"salient columns:  plain {e(billm.binarize(W1, salient)[0], salient):.4f}  "
      f"residual {e(billm.residual_binarize(W1, salient)[0], salient):.4f}")
print(f"other weights:    plain {e(billm.binarize(W1, rest)[0], rest):.4f}  "
      f"split {e(billm.split_binarize(W1, rest)[0], rest):.4f}")
A = np.abs(W1[np.broadcast_to(rest, W1.shape)])
ps = np.quantile(A, np.linspace(0.1, 0.9, 40))
errs = [e(billm.binarize(W1, rest & (np.abs(W1) < p))[0] + billm.binarize(W1, rest & (np.abs(W1) >= p))[0], rest)
        for p in ps]
plt.figure(figsize=(6, 3))
plt.plot(ps, errs, "o-", ms=3)
plt.axhline(e(billm.binarize(W1, rest)[0], rest), color="k", ls="--", label="one scale")
plt.xlabel("break point p"); plt.ylabel("squared error"); plt.legend(); plt.title("the split search")
plt.tight_layout()

# %% [markdown]
# **Error compensation (OBC/GPTQ).** Columns are quantized one at a time; each column's error is pushed onto
# the columns not yet quantized, weighted by H⁻¹, so they absorb it. Same grid, same bits — only the
# layer's *output* error on the calibration inputs changes.

# %%
with_obc = billm.billm_quantize(W, H, opts.billm_block, opts.billm_max_salient)
without = billm.billm_quantize(W, H, opts.billm_block, opts.billm_max_salient, compensate=False)
out_err = lambda W_hat: np.sum((X @ (W - W_hat).T) ** 2) / np.sum((X @ W.T) ** 2)
print(f"relative output error: RTN binary/channel {out_err(variants['RTN binary / channel'].W_hat):.4f} | "
      f"BiLLM without OBC {out_err(without.W_hat):.4f} | with OBC {out_err(with_obc.W_hat):.4f}")
print(f"BiLLM bits/weight {with_obc.bits_per_weight:.3f}, by kind:",
      {k: round(v / W.size, 3) for k, v in with_obc.parts.items()})

# %% [markdown]
# Read the bits by kind: the signs are 1 bit, the residual signs of the salient columns a little more, the
# column mask almost nothing — that is the ~1.1 bits the BiLLM paper reports. The *group bitmap* (which of
# the two groups each non-salient weight is in) and the per-row, per-block scales are stored too; counted
# honestly they cost more than the signs on a matrix this narrow.
#
# ## 4. OneBit step by step
#
# Sign-Value-Independent Decomposition: W ≈ Sign(W) ⊙ (a bᵀ), with a bᵀ a rank-1 approximation of |W|.
# The SVD gives the best one, with squared error Σᵢ≥₂ σᵢ² of |W|; rank-1 NMF (what the OneBit code uses)
# converges to the same factors, because |W| is non-negative.

# %%
sigma = np.linalg.svd(np.abs(W), compute_uv=False)
for dec in ("svd", "nmf"):
    S, a, b = onebit.svid(W, dec)
    print(f"{dec}: ||  |W| - a b^T ||^2 = {np.sum((np.abs(W) - np.outer(a, b)) ** 2):.6f}   "
          f"sum_(i>=2) sigma_i^2 = {np.sum(sigma[1:] ** 2):.6f}")
ob = onebit.onebit_weight(W)
print(f"OneBit bits/weight {ob.bits_per_weight:.3f}; relative squared error {rel(ob.W_hat):.3f} "
      f"(RTN binary/channel {rel(variants['RTN binary / channel'].W_hat):.3f})")
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
axes[0].semilogy(sigma[:40] ** 2, "o-", ms=3)
axes[0].set_title("singular values² of |W|: one dominates")
axes[1].hist(ob.W_hat.ravel(), bins=120, color="tab:green")
axes[1].set_title("Sign(W) ⊙ a bᵀ: every row and column its own magnitude")
fig.tight_layout()

# %% [markdown]
# OneBit's layer has one more piece: a **LayerNorm without parameters on the projection's output**,
# y = LN( ((x ⊙ b) Sign(W)ᵀ) ⊙ a ), over the layer's output features. It stores nothing (0 bits/weight),
# but it changes what the layer computes: every token's output gets mean 0 and variance 1, whatever the
# float layer produced. `mmf.compress --methods=onebit-ln` puts it on every block projection
# (`projection_output_norm=True` in the model's config, so `mmf.load` rebuilds it); `onebit` leaves it
# out. Below: the same calibration inputs through the float layer, through SVID, and through SVID with the
# output norm (`mmf/layers/output_norm.py`).

# %%
from mmf.layers.output_norm import output_norm_forward
Z_float, Z_svid = X @ W.T, X @ ob.W_hat.T                       # (n, K) -> (n, N)
Y_ln = output_norm_forward(Z_svid)[0]
for label, Z in (("float layer", Z_float), ("SVID", Z_svid), ("SVID + output LayerNorm", Y_ln)):
    print(f"{label:24s} per-token mean {Z.mean(-1).mean():+.4f}   per-token std {Z.std(-1).mean():.4f}")
assert np.allclose(Y_ln.std(-1), 1.0, atol=1e-2)                # what the norm guarantees (up to its eps)

# %% [markdown]
# ## 5. The whole model
#
# `run_method` is what `python -m mmf.compress` runs per method: compress a copy of the float model,
# time it, and hand back an ordinary model. OneBit's row after distillation trains the signs (through the
# straight-through estimator) and the scales to imitate the float model (logits KL + hidden-state MSE);
# `onebit-ln` does the same with the output LayerNorm on every projection (its row before distillation is
# `onebit-nmf-ln`).

# %%
tab = [("float", model, 32.0, 0.0)]
for method in ("rtn-ternary", "rtn-binary", "billm", "onebit", "onebit-ln"):
    for label, m, summary, secs in run_method(method, model, data, opts, seed=0):
        tab.append((label, m, summary["bits_per_weight"], secs))
windows = 8 if SMOKE else 100
print(f"{'method':14s} {'bits/weight':>11s} {'val bits/char':>14s} {'seconds':>8s}")
for label, m, bits, secs in tab:
    loss = validation_loss(m, data.val, opts.block_size, windows, opts.batch_size)
    print(f"{label:14s} {bits:11.3f} {data.bits_per_char(loss):14.4f} {secs:8.1f}")

# %% [markdown]
# The compressed models are ordinary models: they generate through the normal API.

# %%
tok = ck.build_tokenizer()
prompt = np.array(tok.encode("ROMEO:" if "shakespeare" in data.name else "Once upon a time"), dtype=np.int64)
for label, m, _, _ in tab[:1] + tab[-1:]:
    print(f"--- {label} (projection_output_norm={m.config.projection_output_norm}) ---")
    print(tok.decode(m.generate(prompt, 40, temperature=0.8, top_k=20, seed=0)))

# %% [markdown]
# ## 6. The measured table: PTQ against QAT
#
# The README's full experiment (Tiny Shakespeare, two float MatMul-free models and two float Transformer++s;
# QAT models trained with
# `python -m mmf.train --weights=ternary|binary`, and "QAT from float" continuing the float checkpoint with
# quantization on for as many tokens as OneBit's distillation) is committed as
# `docs/results/compression.csv`. It is shown here as stored (numbers come from that file, not from this
# notebook's run).

# %%
table = os.path.join(REPO_ROOT, "docs", "results", "compression.md")
print(open(table).read() if os.path.exists(table) else "docs/results/compression.md not found")

# %% [markdown]
# ### What it says about the two roads
#
# Read the committed table with three questions: (1) how far does plain RTN binary fall behind the float
# model, (2) how much of that gap do BiLLM's extra bits and OneBit's distillation buy back, and at what
# cost in bits and seconds, and (3) where do the QAT rows sit — for the same bits per weight, a model
# trained quantized from the start had the whole training budget to adapt to its grid, while PTQ gets a
# few minutes and a few hundred sequences. The README discusses the measured numbers.
#
# ## 7. Try this
#
# 1. **No Hessian.** Call `billm.billm_quantize(W, np.eye(W.shape[1]))`: with H = I the salience score is
#    |w|² alone and compensation has nothing to propagate (H⁻¹ is diagonal). *Expected:* the weight error
#    barely changes but the output error on the calibration inputs `X` rises toward the no-OBC number.
# 2. **Fewer salient columns.** Re-run section 3 with `billm.salient_columns(W1, d, max_salient=1)`.
#    *Expected:* the salient part's error falls less and the total weight error rises; bits/weight drop a
#    little (fewer residual signs).
# 3. **Distil longer.** `run_method("onebit", model, data, Options(kd_steps=300), seed=0)`.
#    *Expected:* validation bits/char keep falling with more steps, while bits/weight stay exactly the same —
#    distillation changes signs and scales, not the storage.
