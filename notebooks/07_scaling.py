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
# # 07 — Scaling: does the MatMul-free LM's loss fall faster with compute than a Transformer's?
#
# The paper's central figure fits loss against training compute for the MatMul-free LM and for a
# Transformer++, and finds the MatMul-free curve steeper: the two cross near $10^{23}$ FLOPs. Its
# functional form and coefficients are not published, and checking it needs a GPU cluster. What a laptop
# can do is ask the same question honestly at $10^{11}$–$10^{13}$ FLOPs: at equal compute, how far is a
# ternary MatMul-free model from a float Transformer++, and does the gap shrink as both grow?
#
# This notebook explains the study `python -m mmf.scaling` (in `mmf/experiments/scaling.py`): the grid,
# how compute is counted, how the curves are fitted and how uncertain they are, what a token costs in
# energy, and what the results can and cannot say. It reads the study's CSV; in smoke mode
# (`MMF_SMOKE=1`) it trains a seconds-long smoke grid instead, whose numbers show only that the pipeline
# works.

# %%
# %matplotlib inline
import contextlib
import io
import os
import tempfile

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

import mmf
from mmf.experiments import scaling
from mmf.experiments.fit import fit_power_law, residual_runs
from mmf.experiments.flops import training_compute
from mmf.experiments.runner import read_csv

SMOKE = os.environ.get("MMF_SMOKE") == "1"     # CI: a smoke grid, seconds

# %% [markdown]
# ## 1. The grid
#
# Architectures and sizes are two tables (`scaling.ARCHS`, `scaling.SIZES`); every run is one
# architecture at one size and one seed. The default grid: MMfree ternary, MMfree float and Transformer++
# float at seven sizes, two seeds at the two smallest sizes (to see how much of a difference is noise).
# Every run gets the same token rule — **2 tokens per non-embedding parameter** — and its architecture's
# learning rate from the baselines sweep (notebook 06). `--plan` prints the grid without training:

# %%
plan = scaling.plan(scaling.DEFAULT_ARCHS, list(scaling.SIZES))
for p in plan:
    print(f"{p['name']:32s} {p['params_nonembedding']:>8,} non-embedding params {p['tokens']:>10,} tokens "
          f"{p['flops']:.2e} FLOPs  ~{p['est_s'] / 60:.1f} min")
print(f"estimated total: {sum(p['est_s'] for p in plan) / 3600:.2f} h in one process, at the published runs' rates")

# %% [markdown]
# The time estimate divides each run's tokens by the training rate that the published grid
# (`docs/results/scaling.csv`) measured for that architecture at that width: its runs' tokens over
# their wall seconds (`scaling.measured_rates()`). Those runs shared the machine's 2 cores, two at a
# time, so the estimate is a cautious one for a single process.
#
# ## 2. Counting compute the same way for everyone
#
# The scaling-law convention (Kaplan et al. 2020), which the paper follows, counts **every operation
# alike**, whatever its precision: training FLOPs $= 6\,N_\text{matmul}\,\text{tokens}$ + attention,
# where $N_\text{matmul}$ counts the entries of every weight matrix that takes part in a product (the LM
# head included, the embedding — a lookup — not), a multiply-add is 2 FLOPs, and backward costs twice
# forward. Attention adds the products $QK^\top$ and $PV$: with $T$-token sequences there are
# $T(T+1)/2$ causal query–key pairs, so $6LD(T+1)$ FLOPs per training token.
#
# By that convention a ternary model and a float one of the same shape cost the same. The MatMul-free
# claim is about *which* operations: beside the headline the counter splits the same products into
# float multiplies, float adds and integer additions. A check by hand on a tiny model:

# %%
V, D, I = 10, 4, 6
tiny = mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1, intermediate_size=I)
c = training_compute(tiny, tokens=100, context=8)
by_hand = 4 * D * D + 2 * I * D + D * I + V * D          # i, f, g, o; GLU gate (2I x D) and down; LM head
print(f"N_matmul = {c.n_matmul} (by hand {by_hand}); FLOPs = {c.flops:.0f} = 6 x {by_hand} x 100")
for name, cfg in [("MMfree ternary", tiny),
                  ("Transformer++ float", mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1,
                                                                num_heads=2, intermediate_size=I))]:
    k = training_compute(cfg, tokens=100, context=8)
    print(f"{name:20s} FLOPs {k.flops:>8.0f} (attention {k.flops_attention:>5.0f}) | float mul {k.float_mul:>7.0f}"
          f"  float add {k.float_add:>7.0f}  int add {k.int_add:>6.0f}")

# %% [markdown]
# For ternary weights the forward product is additions only (int8 activations times $\{-1,0,+1\}$); the
# backward products are not: the input gradient is a float gradient times ternary weights (float
# additions), the weight gradient a float gradient times int8 activations (float multiply-adds). So the
# MatMul-free saving is an *inference* saving; training still multiplies.
#
# ## 3. The runs
#
# Each run lives in its own folder with a resumable checkpoint; killing the study loses at most the
# steps since the last checkpoint of the run in progress, and finished runs are never rewritten. The
# CSV keeps, per run, the best validation point (6 evaluations per run), the final training loss and
# the compute columns.

# %%
if SMOKE:
    out_dir = tempfile.mkdtemp(prefix="mmf-scaling-")
    with contextlib.redirect_stdout(io.StringIO()):
        scaling.main(["--smoke", "--only=mmfree-ternary,transformer-float", "--no_progress",
                      f"--out_dir={out_dir}"])
    rows = read_csv(os.path.join(out_dir, "runs.csv"))
elif os.path.exists(os.path.join("..", "runs", "scaling", "runs.csv")):
    out_dir = os.path.join("..", "runs", "scaling")
    rows = read_csv(os.path.join(out_dir, "runs.csv"))
else:                                                 # the committed copy (no curves, no plots of runs)
    out_dir = None
    rows = read_csv(scaling.RESULTS_CSV)
rows = scaling.check_scaling_csv(rows, "the study's CSV")
display(Markdown(scaling.results_markdown(rows)))

# %% [markdown]
# ## 4. Loss curves and loss against compute
#
# Left: validation loss during training, one panel per size (dashed: the second seed). Right: each run's
# best validation loss against its training FLOPs, a fitted curve per architecture with its bootstrap band,
# and the residuals underneath.

# %%
if out_dir is not None:
    archs = list(dict.fromkeys(r["variant"] for r in rows))
    paths = scaling.plot_all(out_dir, rows, archs, smoke=SMOKE)
    for p in paths[:2]:
        display(Image(filename=p))
else:
    print("no run folders here: run python -m mmf.scaling to draw the curves")

# %% [markdown]
# ## 5. How the fit works, and how it can fail
#
# The form is $L(C) = a\,C^{-b} + c$: a power law that levels off at $c$, the loss no amount of compute
# removes. It is fitted by least squares on $L$ with NumPy alone: for each $c$ on a grid in $[0, \min L)$,
# $\log(L - c)$ against $\log C$ is a straight line with a closed-form fit; the best $c$ then seeds a
# Levenberg–Marquardt refinement. Uncertainty comes from a bootstrap over sizes and seeds: resample the
# sizes with replacement, take one seed of each, refit, and read percentiles.
#
# A fit always returns numbers, so the method must be checked where the truth is known. On synthetic
# data with $b = 0.25$ and a floor, the right form recovers $b$; a pure power law (no floor) fitted to the
# same data leaves residuals in long runs of one sign (a U shape) — the signature of a wrong form that
# the study reports for every real fit as well.

# %%
rng = np.random.default_rng(0)
C = np.geomspace(1e12, 1e15, 12)
L = 2000.0 * C ** -0.25 + 2.0 + rng.normal(0, 0.002, C.shape)
right, wrong = fit_power_law(C, L, "saturating"), fit_power_law(C, L, "power")
print(f"true b = 0.25, c = 2.0 | saturating fit: b = {right.b:.3f}, c = {right.c:.3f}, residual sign runs "
      f"{residual_runs(right.residuals)}/12 | pure power law: b = {wrong.b:.3f}, runs {residual_runs(wrong.residuals)}/12")
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(C, right.residuals, "o-", label="a C^-b + c (right form)")
ax.plot(C, wrong.residuals, "s-", label="a C^-b (wrong form)")
ax.axhline(0, color="k", lw=0.5)
ax.set_xscale("log")
ax.set_xlabel("C (FLOPs)")
ax.set_ylabel("residual")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# A crossing of the two fitted curves *inside* the measured range is a measurement; one found by
# extending the curves beyond it is an extrapolation, reported only as an illustration with its bootstrap
# spread — small errors in $b$ move an extrapolated crossing by orders of magnitude.
#
# ## 6. Energy per generated token
#
# Two estimates at batch 1, from operation counts: **arithmetic** (operations × per-operation energies
# from Horowitz, ISSCC 2014, 45 nm: int8 add 0.03 pJ, fp16 add 0.4 pJ, fp16 multiply 1.1 pJ) and **memory**
# (bytes read per token — weights at 2 bits ternary or 16 bits float, plus the KV cache or the recurrent
# state — × 1.3–2.6 nJ per 64-bit DRAM access, the same source). For MMfree ternary, the FPGA cycle
# model's J/token sits beside them: simulated time per token × the paper's measured board power, i.e. a
# whole board, idle power included, which is why it is the largest.

# %%
display(Markdown(scaling.energy_markdown()))
if out_dir is not None:
    display(Image(filename=paths[2]))

# %% [markdown]
# Memory dominates arithmetic by two to three orders of magnitude at every size: at batch 1 the weights
# must be read for each token, and ternary weights are 8× smaller than fp16 ones — that, more than the
# cheaper additions, is where a ternary model saves energy. A Transformer's KV cache adds bytes that grow
# with the context; the MLGRU's state does not.
#
# ## 7. What this can and cannot say
#
# - These models are tiny (tens of thousands to under two million non-embedding parameters) and see 2 tokens
#   per parameter — far from the paper's regime. An exponent fitted here describes $10^{11}$–$10^{14}$
#   FLOPs of early training on one small corpus; it is not evidence for or against a crossing at
#   $10^{23}$.
# - One learning rate per architecture, swept at one size (notebook 06); a rate that suits the largest
#   size may not suit the smallest.
# - Two seeds at two sizes measure noise only roughly; a gap smaller than the seed spread is no gap.
# - The FLOP convention ignores precision by design; the operation split and the energy estimates are
#   where precision enters, and they leave out elementwise work for every architecture alike.
