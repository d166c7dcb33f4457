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
# # 01 — Ternary quantization and BitLinear
#
# A MatMul-free LM replaces every dense layer by a **BitLinear**: the input is normalised, rounded to
# 8-bit integers, and multiplied by a weight matrix whose entries are only $-1, 0, +1$ (times one scale).
# A product with $\pm 1$ or $0$ is an addition, a subtraction or nothing, so the **matrix product** needs no
# multiplier: that is the $O(D^2)$ part of the work. What still multiplies is $O(D)$ per token: the RMSNorm
# in front (squares, a reciprocal square root, the gain), the quantizer's scaling $x \cdot s$, and one
# rescale $\beta / s$ per output. Section 5 counts both.
#
# This notebook builds the pieces with `mmf` (equations as tagged in `docs/equations.md`):
#
# | tag | what | `mmf` |
# |---|---|---|
# | E1 | RMSNorm | `mmf.layers.rmsnorm` |
# | E2 | per-token 8-bit absmax activation quantization | `mmf.layers.quant.activation_quant_int` |
# | E3 | per-tensor absmean ternary weight quantization | `mmf.layers.quant.weight_quant_int` |
# | E4 | BitLinear forward, and its integer form | `mmf.layers.bitlinear.bitlinear_forward`, `bitlinear_int_forward` |
# | E5 | the straight-through (STE) backward | `mmf.layers.bitlinear.bitlinear_backward` |

# %%
# %matplotlib inline
import os
import numpy as np
import matplotlib.pyplot as plt

SMOKE = os.environ.get("MMF_SMOKE") == "1"     # CI: tiny sizes, seconds
rng = np.random.default_rng(0)
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %%
from mmf.layers import quant
from mmf.layers.bitlinear import (bitlinear_backward, bitlinear_forward, bitlinear_int_forward,
                           ternary_matmul_addsub)
from mmf.gradcheck import rel_error
from mmf.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward

# %% [markdown]
# ## 1. E2: activations to 8 bits, one scale per token (absmax)
#
# Each token $x \in \mathbb{R}^D$ gets its own scale, chosen so that its largest entry lands exactly on 127:
#
# $$ s = \frac{127}{\max(\max_j |x_j|,\ 10^{-5})}, \qquad q = \mathrm{clip}(\mathrm{round}(x\,s), -128, 127) \in \mathbb{Z}^D, \qquad \tilde x = q / s. $$
#
# `round` is round-half-to-even. The floor $10^{-5}$ keeps an all-zero token from dividing by zero.
# Step by step on two tokens of very different size:

# %%
x = np.array([[0.30, -1.20, 0.05, 0.80, -0.41, 0.00],       # token 0: absmax 1.2
              [0.003, 0.010, -0.007, 0.001, 0.0, -0.002]])  # token 1: absmax 0.01 (100x smaller)
absmax = np.abs(x).max(axis=-1, keepdims=True)
s = 127 / np.maximum(absmax, 1e-5)
print("absmax per token:", absmax.ravel(), "  scale s:", s.ravel())
print("x * s:\n", x * s)
q_by_hand = np.clip(np.round(x * s), -128, 127)
print("q = clip(round(x*s)):\n", q_by_hand)

q, s_lib = quant.activation_quant_int(x)                    # the library
assert np.array_equal(q, q_by_hand) and np.allclose(s_lib, s)
print("mmf.layers.quant.activation_quant_int agrees; codes are", q.dtype)
print("dequantized x~ = q/s:\n", quant.activation_quant(x))

# %% [markdown]
# Because the scale is per token, the small token keeps its full 8-bit resolution: both rows use codes
# up to $\pm127$. The rounding error of an entry is at most half a step, $|x - \tilde x| \le \frac{1}{2s}$,
# the sawtooth below (one token of 2001 evenly spaced values in $[-1, 1]$, so $s = 127$):

# %%
xs = np.linspace(-1, 1, 2001)[None, :]                      # one token, absmax 1 -> s = 127
err = quant.activation_quant(xs) - xs
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.plot(xs[0], err[0], lw=0.8)
ax.axhline(0.5 / 127, ls="--", c="gray"); ax.axhline(-0.5 / 127, ls="--", c="gray")
ax.set_xlim(-0.1, 0.1); ax.set_xlabel("x"); ax.set_ylabel("x~ - x")
ax.set_title("E2 rounding error: a sawtooth bounded by ±1/(2s) (zoom on [-0.1, 0.1])")
plt.show()
print(f"max |x~ - x| = {np.abs(err).max():.5f}   bound 1/(2s) = {0.5 / 127:.5f}")

# %% [markdown]
# **Try this.** Put one outlier in a token: the scale is set by the largest entry, so everything else
# is squeezed into fewer codes. *Expect* most of the ordinary entries to round to code 0 once the outlier
# is large enough (the cell prints the fraction for a few outlier sizes and checks that it only grows).

# %%
token = rng.standard_normal((1, 64))
zero_fraction = []
for outlier in (1, 10, 100, 1000):
    t_ = token.copy(); t_[0, 0] = outlier * np.abs(token).max()
    q_, _ = quant.activation_quant_int(t_)
    zero_fraction.append(np.mean(q_[0, 1:] == 0))
    print(f"outlier {outlier:5d}x the largest entry: {zero_fraction[-1]:.0%} of the other entries quantize to 0")
assert all(a <= b for a, b in zip(zero_fraction, zero_fraction[1:])) and zero_fraction[-1] > zero_fraction[0]

# %% [markdown]
# ## 2. E3: weights to $\{-1, 0, +1\}$, one scale per tensor (absmean)
#
# The whole matrix shares one scale, the mean absolute value:
#
# $$ \beta = \max\big(\mathrm{mean}(|W|),\ 10^{-5}\big), \qquad W_t = \mathrm{clip}(\mathrm{round}(W/\beta), -1, 1) \in \{-1,0,1\}, \qquad \tilde W = W_t\,\beta. $$
#
# So an entry becomes 0 when $|W| < \beta/2$ and $\pm1$ otherwise (the clip only matters above $1.5\beta$).
# Step by step on a 3×4 matrix:

# %%
W = np.array([[ 0.40, -0.05,  0.90, -0.30],
              [-0.70,  0.10,  0.02,  0.25],
              [ 0.15, -1.30,  0.60, -0.08]])
beta = np.abs(W).mean()
print(f"beta = mean|W| = {beta:.4f}   zero threshold beta/2 = {beta / 2:.4f}")
print("W / beta:\n", W / beta)
Wt_by_hand = np.clip(np.round(W / beta), -1, 1)
print("Wt = clip(round(W/beta), -1, 1):\n", Wt_by_hand + 0.0)      # + 0.0 prints -0 as 0

Wt, beta_lib = quant.weight_quant_int(W)                     # the library
assert np.array_equal(Wt, Wt_by_hand) and np.isclose(beta_lib, beta)
print("mmf.layers.quant.weight_quant_int agrees; ternary weights are", Wt.dtype)
print("W~ = Wt * beta:\n", quant.weight_quant(W))

# %% [markdown]
# ## 3. What ternarization does to a weight matrix
#
# Take a matrix initialised like the model's GLU and LM head, $W_{jk} \sim \mathcal N(0, 0.02^2)$.
# Everything between the two dashed lines $\pm\beta/2$ becomes 0; everything outside becomes $\pm\beta$.
# The **sparsity** is the fraction of zeros and the **relative error** is $\|W - \tilde W\| / \|W\|$.

# %%
n = 128 if SMOKE else 1024
W = rng.normal(0.0, 0.02, size=(n, n))
Wt, beta = quant.weight_quant_int(W)
sparsity = np.mean(Wt == 0)
rel_err = np.linalg.norm(W - quant.weight_quant(W)) / np.linalg.norm(W)

fig, ax = plt.subplots(figsize=(8, 3))
ax.hist(W.ravel(), bins=120, color="tab:blue", alpha=0.8)
for t in (-beta / 2, beta / 2):
    ax.axvline(t, ls="--", c="k")
for v in (-beta, 0, beta):
    ax.axvline(v, c="tab:red", lw=1)
ax.set_xlabel("latent weight W"); ax.set_ylabel("count")
ax.set_title(f"{n}x{n} N(0, 0.02): dashed ±β/2 = ±{beta / 2:.4f} (zero band), red: the 3 values -β, 0, +β")
plt.show()
print(f"beta = {beta:.5f}   sparsity (fraction of zeros) = {sparsity:.3f}   relative error = {rel_err:.3f}")
print("counts of -1 / 0 / +1:", [int(np.sum(Wt == v)) for v in (-1, 0, 1)])

# %% [markdown]
# For a Gaussian the numbers are predictable: $\mathbb E|W| = \sigma\sqrt{2/\pi}$, so the zero band is
# $|W| < 0.399\,\sigma$ and the expected sparsity is $\mathrm{erf}(0.399/\sqrt2) \approx 0.31$.
# Other shapes of weight distribution ternarize differently (same library call, three distributions):

# %%
from math import erf, pi, sqrt
from IPython.display import Markdown, display
half_mean_abs = 0.5 * sqrt(2 / pi)                     # beta/2 in units of sigma for a Gaussian
predicted = erf(half_mean_abs / sqrt(2))
assert round(half_mean_abs, 3) == 0.399 and round(predicted, 2) == 0.31    # the numbers the text quotes
print(f"Gaussian prediction: sparsity = {predicted:.3f}\n")
print(f"{'distribution':<14}{'sparsity':>10}{'rel. error':>12}")
errors = {}
for name, sample in [("gaussian", rng.normal(0, 1, (n, n))),
                     ("uniform", rng.uniform(-1, 1, (n, n))),
                     ("laplace", rng.laplace(0, 1, (n, n)))]:
    Wq = quant.weight_quant(sample)
    errors[name] = np.linalg.norm(sample - Wq) / np.linalg.norm(sample)
    print(f"{name:<14}{np.mean(Wq == 0):>10.3f}{errors[name]:>12.3f}")
assert abs(np.mean(quant.weight_quant(rng.normal(0, 1, (n, n))) == 0) - predicted) < 0.02
least, most = min(errors, key=errors.get), max(errors, key=errors.get)
display(Markdown(f"Across these three shapes ternarization loses a relative error of "
                 f"**{errors[least]:.2f} to {errors[most]:.2f}** of the matrix's norm "
                 f"(least for the {least}, most for the {most} distribution)."))

# %% [markdown]
# An error of that size is large: a ternary model is not a rounded float model, it is *trained*
# ternary. The latent float weights $W$ are what the optimizer updates; the forward pass only ever sees
# $\tilde W$. That needs a gradient through `round`, which is the next section.
#
# **Try this.** Give the Gaussian matrix a few outliers (a small fraction of its entries made much larger)
# and ternarize again.
# *Expect* β = mean|W| to grow with the outliers, so the zero band ±β/2 widens: more weights become 0
# and the relative error grows. The cell checks exactly that; change the fraction or the factor and watch.

# %%
n_out = n * n // 100                                   # 1% of the entries ...
outlier_factor = 20                                    # ... made 20x larger
W_out = rng.normal(0.0, 0.02, size=(n, n))
W_out.flat[rng.choice(n * n, n_out, replace=False)] *= outlier_factor
for label, M_ in (("plain", W), ("with outliers", W_out)):
    Wt_, beta_ = quant.weight_quant_int(M_)
    err_ = np.linalg.norm(M_ - quant.weight_quant(M_)) / np.linalg.norm(M_)
    print(f"{label:14s} beta = {beta_:.4f}  sparsity = {np.mean(Wt_ == 0):.3f}  relative error = {err_:.3f}")
assert quant.weight_quant_int(W_out)[1] > beta and np.mean(quant.weight_quant_int(W_out)[0] == 0) > sparsity

# %% [markdown]
# ## 4. E4 BitLinear and the straight-through estimator (E5)
#
# $$ y = \tilde x_n \tilde W^\top, \qquad \tilde x_n = \mathrm{actquant}\big(\mathrm{rms}(x; g, 10^{-6})\big), \qquad \tilde W = \mathrm{weightquant}(W). $$
#
# `round` has derivative 0 almost everywhere (and is undefined at the jumps), so the true gradient is
# useless for learning. The **straight-through estimator** pretends each quantizer is the identity in the
# backward pass. In an autograd framework this is the one-liner `x + (q(x) - x).detach()`: the forward value
# is $q(x)$ and the gradient is that of $x$. With $dy$ from upstream:
#
# $$ dW = dy^\top \tilde x_n \quad(\text{the quantized input}), \qquad d\tilde x_n = dy\,\tilde W \quad(\text{the quantized weight}), $$
#
# and $d\tilde x_n$ flows back through the RMSNorm as if it were $dx_n$. The picture: the forward uses the
# staircase, the backward uses the slope of the identity line.

# %%
w_line = np.linspace(-0.06, 0.06, 601).reshape(1, -1)       # one matrix whose entries sweep a range
Wt_line, beta_line = quant.weight_quant_int(w_line)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(w_line[0], Wt_line[0] * beta_line, label="forward: W~ = Wt·β (E3 staircase)")
ax.plot(w_line[0], w_line[0], ls="--", label="backward: STE treats it as W (slope 1)")
ax.set_xlabel("latent weight W"); ax.legend(); ax.set_title(f"β = {beta_line:.4f}")
plt.show()

# %% [markdown]
# Now with the library: one BitLinear, the same input, the backward run with quantization **on**
# (the STE gradient) and **off** (the float gradient of an ordinary RMSNorm + linear layer). Then we
# check the STE formulas above by hand against `bitlinear_backward`.

# %%
M, K, N = 8, 32, 16                                          # tokens, in features, out features
x = rng.standard_normal((M, K))
W = 0.05 * rng.standard_normal((N, K))
g = 1 + 0.1 * rng.standard_normal(K)
dy = rng.standard_normal((M, N))

y_q, cache_q = bitlinear_forward(x, W, g, quantize=True)
dx_q, dW_q, dg_q = bitlinear_backward(dy, cache_q)           # STE gradient
y_f, cache_f = bitlinear_forward(x, W, g, quantize=False)
dx_f, dW_f, dg_f = bitlinear_backward(dy, cache_f)           # float gradient

print("relative difference STE vs float:")
for name, a, b in [("y", y_q, y_f), ("dx", dx_q, dx_f), ("dW", dW_q, dW_f), ("dg", dg_q, dg_f)]:
    print(f"  {name:<3} {rel_error(a, b):.3f}")

# the STE formulas by hand, from the library's pieces
xn, norm_cache = rmsnorm_forward(x, g, 1e-6)                 # E1 inside the BitLinear (eps 1e-6, E4)
x_tilde, W_tilde = quant.activation_quant(xn), quant.weight_quant(W)
dx_by_hand, dg_by_hand = rmsnorm_backward(dy @ W_tilde, norm_cache)   # dx~ = dy W~, then straight through
print("dW == dy.T @ x~        :", np.allclose(dW_q, dy.T @ x_tilde))
print("dx == rms-backward(dy @ W~):", np.allclose(dx_q, dx_by_hand), "  dg too:", np.allclose(dg_q, dg_by_hand))
print("dW == dy.T @ x_n (float input)?", np.allclose(dW_q, dy.T @ xn), "-> the STE really uses the quantized input")

# %% [markdown]
# The STE gradient is not the float gradient: it sees the quantized $\tilde x_n$ and $\tilde W$. $dW$ moves
# little (8-bit activations are fine-grained), $dx$ and $dg$ move a lot (a ternary weight is coarse). `mmf`'s STE backward is checked against an independent PyTorch autograd oracle that uses
# the `x + (q(x) - x).detach()` trick (`tests/test_oracle_torch.py`): logits and every gradient of a 2-layer
# model agree to float64 rounding (`python tests/test_oracle_torch.py` prints the worst difference). Finite
# differences cannot check it: they would measure the staircase.
#
# BitLinear comes in two variants with identical gradients (E5): the caching one keeps $\tilde x_n$ for $dW$,
# the **fused** one keeps only $x$ and the norm statistics and recomputes $\tilde x_n$ in backward (the paper's
# memory saving):

# %%
_, cache_fused = bitlinear_forward(x, W, g, quantize=True, fused=True)
grads_fused = bitlinear_backward(dy, cache_fused)
for name, a, b in zip(("dx", "dW", "dg"), (dx_q, dW_q, dg_q), grads_fused):
    print(f"{name}: caching and fused identical -> {np.array_equal(a, b)}")

# %% [markdown]
# ## 5. The integer form: additions and subtractions only (E4)
#
# Pull the two scales out of the product: with $q$ the int8 codes of $x_n$ and $W_t$ the ternary matrix,
#
# $$ y = \tilde x_n \tilde W^\top = \frac{q}{s}\,(W_t\,\beta)^\top = \big(q\,W_t^\top\big)\cdot\frac{\beta}{s}. $$
#
# Each entry of $q W_t^\top$ is $\sum_{k:\,W_t=+1} q_k - \sum_{k:\,W_t=-1} q_k$: an exact int32 sum, no
# multiplication. Multiplies remain around the product, not inside it: one $\beta/s$ per output, and
# before it the RMSNorm and the quantizer's $x \cdot s$ (counted below). A tiny example with
# `mmf.layers.bitlinear.ternary_matmul_addsub`:

# %%
q_small = np.array([[12, -7, 100, 3, -128, 45]], dtype=np.int8)
Wt_small = np.array([[1, 0, -1, 1, 0, -1],
                     [0, -1, 1, 0, 1, 0]], dtype=np.int8)
acc = ternary_matmul_addsub(q_small, Wt_small)
print("row 0: 12 - 100 + 3 - 45 =", 12 - 100 + 3 - 45, "   row 1: 7 + 100 - 128 =", 7 + 100 - 128)
print("ternary_matmul_addsub ->", acc, acc.dtype)
assert np.array_equal(acc, q_small.astype(np.int64) @ Wt_small.T.astype(np.int64))

# %% [markdown]
# The same on a real BitLinear: `bitlinear_int_forward` (int8 codes, ternary weights, int32 accumulator,
# one rescale per output) against the float fake-quant path `bitlinear_forward` used for training. They
# are the same numbers up to float rounding, in float64 and in float32:

# %%
M, K, N = (4, 64, 32) if SMOKE else (16, 256, 128)
for dtype in (np.float64, np.float32):
    x = rng.standard_normal((M, K)).astype(dtype)
    W = rng.normal(0, 0.02, (N, K)).astype(dtype)
    g = (1 + 0.1 * rng.standard_normal(K)).astype(dtype)
    Wt, beta = quant.weight_quant_int(W)
    y_int = bitlinear_int_forward(x, Wt, beta, g)            # additions/subtractions + one scale
    y_float, _ = bitlinear_forward(x, W, g, quantize=True)   # float fake-quant
    diff = np.abs(y_int - y_float).max()
    print(f"{np.dtype(dtype).name}: max |y_int - y_float| = {diff:.2e}   (max |y| = {np.abs(y_float).max():.2f})")

nonzero = int(np.count_nonzero(Wt))
multiplies = {"RMSNorm (x², gain)": 2 * K, "quantizer (x·s)": K, "rescale (β/s)": N}
print(f"\nper token: {nonzero} additions/subtractions in the product (nonzeros of Wt, "
      f"{nonzero / Wt.size:.0%} of {Wt.size}), 0 weight multiplies;")
print(f"           {sum(multiplies.values())} multiplies outside it, {multiplies}, plus one reciprocal square root")
print(f"weight storage: log2(3) = {np.log2(3):.2f} bits ideal, 2 bits packed, vs 32 bits float32")

# %% [markdown]
# **Summary.** E2 and E3 turn a BitLinear's matrix product into integer additions and subtractions; the
# multiplies that remain (norm, quantizer scale, one rescale per output) grow with the width, not its square; E5 (the STE) lets it train anyway, by sending the gradient straight through both quantizers
# to latent float weights. Next: `02_mlgru_and_glu` builds the token and channel mixers from BitLinears.
