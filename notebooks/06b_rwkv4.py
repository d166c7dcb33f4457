# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06b — The third contender: a MatMul-free RWKV-4
#
# The paper's Table 1 compares its MLGRU language model not only with Transformer++ but with a
# **MatMul-free RWKV-4**: RWKV-4 (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era") with
# every dense layer replaced by a ternary BitLinear. At 370M parameters it averages 40.0 on the paper's
# zero-shot tasks against the MLGRU's 40.3 (45.5 against 46.2 at 1.3B). The paper prefers the MLGRU for
# hardware: RWKV-4's token mixer needs exponentials and a division per channel per token.
#
# This notebook shows, with `mmf`'s implementation:
#
# | section | what | `mmf` |
# |---|---|---|
# | 1 | the WKV recurrence: a decayed, softmax-like average of the values | `mmf.layers.wkv` |
# | 2 | why it needs a running maximum: the naive form overflows, the stable one does not | `wkv_naive_forward`, `wkv_scan_forward` |
# | 3 | what the MLGRU simplifies | `mmf.layers.recurrence` |
# | 4 | the model: token shift, time mixing, channel mixing, O(1) decoding state | `mmf.RWKV4LM` |
# | 5 | a tiny training run beside the MatMul-free LM | `mmf.training.trainer` |
#
# `MMF_SMOKE=1` (CI) shrinks section 5 to seconds.

# %%
# %matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np

import mmf
from mmf.layers import recurrence, wkv
from mmf.models.registry import config_to_dict
from mmf.text.corpus import REPO_ROOT
from mmf.training.trainer import PRESETS, TrainConfig, train

SMOKE = os.environ.get("MMF_SMOKE") == "1"        # CI: tiny sizes, seconds
RUNS = os.path.join(REPO_ROOT, "runs", "nb06b")   # gitignored
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The WKV recurrence
#
# Per channel, with keys $k_i$, values $v_i$, a learned decay $w = -e^{\text{time\_decay}} < 0$ and a
# learned bonus $u$ (`time_first`) for the current token:
#
# $$\mathrm{wkv}_t = \frac{\sum_{i<t} e^{(t-1-i)w + k_i}\, v_i + e^{u+k_t}\, v_t}
#                         {\sum_{i<t} e^{(t-1-i)w + k_i} + e^{u+k_t}}$$
#
# It is a weighted average of the values: token $i$ weighs $e^{k_i}$, faded by $e^{w}$ for every step
# since. Carried as a recurrence, only the past's numerator $A$ and denominator $B$ are needed:
#
# $$\mathrm{wkv}_t = \frac{A + e^{u+k_t} v_t}{B + e^{u+k_t}}, \qquad
#   A \leftarrow e^{w} A + e^{k_t} v_t, \qquad B \leftarrow e^{w} B + e^{k_t}.$$
#
# Below: one channel, a value that is 1 at token 3 and 0 elsewhere, with a large key there. How long
# the output remembers it depends on the decay.

# %%
T = 16
k = np.zeros((1, T, 3)); k[0, 3] = 4.0             # (B, T, C): token 3 has a large key in every channel
v = np.zeros((1, T, 3)); v[0, 3] = 1.0             # ... and the only nonzero value
time_decay = np.array([-2.0, 0.0, 1.5])            # three channels: slow, medium, fast decay
w, u = -np.exp(time_decay), np.zeros(3)
y, _, _ = wkv.wkv_scan_forward(k, v, w, u, wkv.wkv_initial_state(1, 3, np.float64))
for c in range(3):
    plt.plot(y[0, :, c], "o-", label=f"time_decay={time_decay[c]:+.1f}  (e^w = {np.exp(w[c]):.3f} per step)")
plt.axvline(3, color="k", lw=0.5)
plt.xlabel("token t"); plt.ylabel("wkv_t"); plt.legend(); plt.title("how long one token is remembered")
plt.show()

# %% [markdown]
# The scan is a loop over `wkv_step`, one token at a time with a state of three numbers per channel;
# decoding uses exactly that step (checked here, bit for bit).

# %%
state, steps = wkv.wkv_initial_state(1, 3, np.float64), []
for t in range(T):
    y_t, state = wkv.wkv_step(k[:, t], v[:, t], w, u, state)
    steps.append(y_t)
assert np.array_equal(np.stack(steps, axis=1), y)
print("state after the last token (a, b, p), each (B, C):")
for name, s in zip("abp", state):
    print(f"  {name} = {s[0]}")

# %% [markdown]
# ## 2. Why a running maximum
#
# Written as above, $e^{k}$ overflows float32 for $k > 88$. A parallel implementation that computes all
# positions at once factors the decay out, $e^{(t-1)w}\sum_{i<t} e^{k_i - iw} v_i$, and then
# $e^{-iw}$ overflows after a few hundred tokens, or after 89 in float32 at the mildest decay $w=-1$.
#
# RWKV-4's kernels therefore carry $A = a\,e^{p}$, $B = b\,e^{p}$ with $p$ the largest exponent among the
# terms of the sums (every term's exponent falls by $-w$ per step, so $p$ follows the keys up and down: a
# running maximum of decayed exponents), and factor the largest exponent out of every sum:
#
# $$q = \max(p, u+k_t):\quad \mathrm{wkv}_t = \frac{e^{p-q} a + e^{u+k_t-q} v_t}{e^{p-q} b + e^{u+k_t-q}}$$
# $$q' = \max(p+w, k_t):\quad a \leftarrow e^{p+w-q'} a + e^{k_t-q'} v_t,\quad
#   b \leftarrow e^{p+w-q'} b + e^{k_t-q'},\quad p \leftarrow q'$$
#
# Every exponent is $\le 0$: nothing overflows. Below, in float32: the naive form (`wkv_naive_forward`,
# kept in the library for exactly this demonstration) against the stable scan, at $w=-1$. Before it
# overflows, the naive form already goes wrong: its factor $e^{(t-1)w}$ sinks below float32's smallest
# normal number ($\approx 10^{-38}$, near $t = 88$) and loses its significant digits.

# %%
rng = np.random.default_rng(0)
T = 200
k32 = rng.standard_normal((1, T, 1)).astype(np.float32)
v32 = rng.standard_normal((1, T, 1)).astype(np.float32)
w32, u32 = np.array([-1.0], np.float32), np.array([0.5], np.float32)
naive = wkv.wkv_naive_forward(k32, v32, w32, u32)
stable, _, cache = wkv.wkv_scan_forward(k32, v32, w32, u32, wkv.wkv_initial_state(1, 1, np.float32))
p_all = cache[-1]                                   # the running max exponent after every token (B, T, C)
first_bad = int(np.argmax(~np.isfinite(naive[0, :, 0])))
print(f"naive float32: first non-finite output at token {first_bad}; "
      f"stable: all {T} finite = {bool(np.isfinite(stable).all())}")
gap = np.abs(naive[0, :, 0] - stable[0, :, 0])
print(f"|naive - stable| over tokens 0-59: {gap[:60].max():.1e}; over tokens 60-{first_bad - 1}: "
      f"{gap[60:first_bad].max():.1e}")
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
ax[0].plot(stable[0, :, 0], label="stable (running max)")
ax[0].plot(naive[0, :, 0], "--", label="naive (NaN from here on)")
ax[0].axvline(first_bad, color="r", lw=0.5); ax[0].set_xlabel("token t"); ax[0].set_title("wkv_t, float32")
ax[0].legend()
ax[1].plot(p_all[0, :, 0]); ax[1].set_xlabel("token t"); ax[1].set_title("p: the largest (decayed) exponent in the sums")
plt.tight_layout(); plt.show()

# %% [markdown]
# The backward (`wkv_scan_backward`) differentiates the stable form as written, in reverse token order,
# so it is as overflow-free as the forward. `tests/test_rwkv4.py` checks it with float64 finite
# differences on a 120-token sequence whose naive form overflows even float64, and against an independent
# PyTorch autograd reference that computes the WKV as a masked softmax instead (tests/oracle_torch_rwkv4.py).

# %% [markdown]
# ## 3. What the MLGRU simplifies
#
# The MLGRU's recurrence (E6 in docs/equations.md) is $h_t = f_t \odot h_{t-1} + i_t$: the numerator
# recurrence alone, with a data-dependent gate $f_t = \sigma(\cdot) \in (0,1)$ instead of a fixed $e^{w}$.
#
# | per channel, per token | RWKV-4 WKV | MLGRU |
# |---|---|---|
# | state | $a, b, p$ (3 numbers) | $h$ (1 number) |
# | decay | $e^{w}$ fixed per channel, plus $e^{k}$ per token | $f_t$ from the input (a sigmoid) |
# | exponentials | 4 (two per max-shifted pair) | none in the recurrence |
# | division | 1 | none |
# | bookkeeping | two maxima | none |
#
# Both are elementwise and linear in their state (no matrix between states), which is what makes both
# MatMul-free. The MLGRU step is one multiply-add:

# %%
h = recurrence.recurrence_step(np.zeros((1, 3)), np.full((1, 3), 0.9), np.ones((1, 3)))
print("MLGRU h_1 =", h[0])

# %% [markdown]
# ## 4. The model
#
# `mmf.RWKV4LM` has the same interface as `mmf.MMfreeLM` (forward with a carried state, loss and
# gradients, generate). Per block: LayerNorm → time mixing → residual, LayerNorm → channel mixing →
# residual. Both mixers first **token-shift**: each channel blends the current token with the previous
# one, $\mu x_t + (1-\mu) x_{t-1}$, with learned $\mu$ per channel (`time_mix_k`, `time_mix_v`, ...).
# Time mixing: $k, v, r$ = BitLinears of the blends, $\mathrm{out} = \mathrm{BitLinear}(\sigma(r) \odot
# \mathrm{wkv})$. Channel mixing: $\sigma(\mathrm{BitLinear}_r) \odot \mathrm{BitLinear}_v(\mathrm{ReLU}(\mathrm{BitLinear}_k)^2)$.
#
# With RWKV-4's channel-mixing width $F = 4D$, a block has $4D^2$ (time mixing) $+ 2DF + D^2$ (channel
# mixing) $= 13D^2$ ternary weights. An MLGRU block has $4D^2 + 3DI$, and at $D = 256$ the official GLU
# width rule (E8) gives $I = 768 = 3D$: $13D^2$ as well, so the two models have equal non-embedding sizes
# at the width the baselines study uses.

# %%
D, L, V = 256, 2, 512
rwkv = mmf.RWKV4LM(mmf.RWKV4Config(vocab_size=V, hidden_size=D, num_layers=L), seed=0)
mlgru = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=L), seed=0)
def matrices(m):
    """the block weight matrices: 2-D '.weight' parameters other than the (V, D) embedding and head"""
    return sum(p.size for n, p in m.params.items() if n.endswith(".weight") and p.ndim == 2 and p.shape[0] != V)
print(config_to_dict(rwkv.config))
print(f"ternary block weights: RWKV-4 {matrices(rwkv):,}, MLGRU {matrices(mlgru):,} (I = "
      f"{mlgru.config.intermediate_size})  13 D^2 L = {13 * D * D * L:,}")
print("\nblock 0's parameters (RWKV-4 state-dict names; a BitLinear adds NAME.norm.weight):")
for name, p in rwkv.layer_params(0).items():
    print(f"  blocks.0.{name:<28} {p.shape}")

# %% [markdown]
# The decoding state per layer is five vectors: the two token-shift inputs and the WKV $a, b, p$. Greedy
# decoding with that carried state equals re-running the whole sequence for every token:

# %%
prompt = np.array([[1, 2, 3, 4]])
fast = rwkv.generate(prompt, 12, temperature=0)
seq = prompt
for _ in range(12):
    seq = np.concatenate([seq, rwkv.forward(seq)[:, -1].argmax(-1)[:, None]], axis=1)
print(fast[0], "\nsame as full-sequence argmax:", bool(np.array_equal(fast, seq)))
_, state = rwkv.forward(prompt, return_state=True)
print("state of layer 0:", {f: a.shape for f, a in state[0]._asdict().items()})

# %% [markdown]
# ## 5. A tiny training run beside the MatMul-free LM
#
# Same data (the embedded story corpus), same width, depth, token budget and schedule; only the block
# differs, and the channel mixer's width $F$ is chosen so that both have the same number of block weights:
# $4D^2 + 3DI = 5D^2 + 2DF$, i.e. $F = (3I - D)/2$ for the MLGRU's GLU width $I$.
# `python -m mmf.train --arch=rwkv4` does the same from the command line. Without `MMF_SMOKE` this
# trains the `tiny` preset (a few minutes each on two cores); the numbers printed are from this run, a
# single seed at one learning rate, so they say little about which architecture is better.

# %%
base = dict(PRESETS["smoke"] if SMOKE else PRESETS["tiny"], progress=False, sample_prompts="")
glu_width = mmf.MMfreeConfig(vocab_size=1, hidden_size=base["hidden_size"], num_layers=1).intermediate_size
widths = {"mmfree": glu_width, "rwkv4": (3 * glu_width - base["hidden_size"]) // 2}
summaries = {}
for arch in ("mmfree", "rwkv4"):
    cfg = TrainConfig(**{**base, "arch": arch, "intermediate_size": widths[arch],
                         "out_dir": os.path.join(RUNS, arch)})
    summaries[arch] = s = train(cfg)
    V = s["model"].config.vocab_size
    body = sum(p.size for p in s["model"].params.values() if not (p.ndim == 2 and p.shape[0] == V))
    print(f"{arch}: {body:,} non-embedding params, val {s['val_loss']:.3f} nats/token "
          f"({s['val_bits_per_byte']:.3f} bits/byte) after {s['steps']} steps, {s['train_seconds']:.0f} s")

# %%
for arch, s in summaries.items():
    h = s["history"]
    line, = plt.plot(h["step"], h["train_loss"], lw=0.7, alpha=0.6, label=f"{arch} train")
    plt.plot(h["val_step"], h["val_loss"], "o-", color=line.get_color(), label=f"{arch} val")
plt.xlabel("step"); plt.ylabel("loss (nats/token)"); plt.yscale("log"); plt.legend()
plt.title("MLGRU vs RWKV-4 token mixer, ternary BitLinears"); plt.show()

# %% [markdown]
# The comparison at the baselines' protocol (Tiny Shakespeare, equal non-embedding parameters, the same
# tokens, the best of three learning rates, two seeds) is the RWKV-4 row of the baselines study
# (`python -m mmf.experiments.baselines`, notebook 06).
