"""Writes notebooks 01 and 02 (without outputs) from the cell texts below.

    python notebooks/build_notebooks_01_02.py

The notebooks import mmf and never re-implement it: every number they show comes from the library,
and where a cell spells a formula out step by step for teaching, it then asserts the library agrees.
Both run top to bottom in seconds with MMF_SMOKE=1 (what CI sets).
"""
import os
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def md(text):
    return new_markdown_cell(dedent(text).strip())


def code(text):
    return new_code_cell(dedent(text).strip())


class Cells(list):
    """A notebook's cells built in order: `nb = Cells(); nb.md("..."); nb.code("...")`."""

    def md(self, text):
        self.append(md(text))

    def code(self, text):
        self.append(code(text))


SETUP = code("""
    %matplotlib inline
    import os
    import numpy as np
    import matplotlib.pyplot as plt

    SMOKE = os.environ.get("MMF_SMOKE") == "1"     # CI: tiny sizes, seconds
    rng = np.random.default_rng(0)
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
""")


# ----------------------------------------------------------------------------
# 01: ternary quantization and BitLinear (E2, E3, E4, E5)

NB01 = [
    md(r"""
    # 01 — Ternary quantization and BitLinear

    A MatMul-free LM replaces every dense layer by a **BitLinear**: the input is normalised, rounded to
    8-bit integers, and multiplied by a weight matrix whose entries are only $-1, 0, +1$ (times one scale).
    A product with $\pm 1$ or $0$ is an addition, a subtraction or nothing, so the layer needs no multiplier.

    This notebook builds the pieces with `mmf` (SPEC §3):

    | tag | what | `mmf` |
    |---|---|---|
    | E1 | RMSNorm | `mmf.layers.rmsnorm` |
    | E2 | per-token 8-bit absmax activation quantization | `mmf.layers.quant.activation_quant_int` |
    | E3 | per-tensor absmean ternary weight quantization | `mmf.layers.quant.weight_quant_int` |
    | E4 | BitLinear forward, and its integer form | `mmf.layers.bitlinear.bitlinear_forward`, `bitlinear_int_forward` |
    | E5 | the straight-through (STE) backward | `mmf.layers.bitlinear.bitlinear_backward` |
    """),
    SETUP,
    code("""
    from mmf.layers import quant
    from mmf.layers.bitlinear import (bitlinear_backward, bitlinear_forward, bitlinear_int_forward,
                               ternary_matmul_addsub)
    from mmf.gradcheck import rel_error
    from mmf.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward
    """),

    md(r"""
    ## 1. E2: activations to 8 bits, one scale per token (absmax)

    Each token $x \in \mathbb{R}^D$ gets its own scale, chosen so that its largest entry lands exactly on 127:

    $$ s = \frac{127}{\max(\max_j |x_j|,\ 10^{-5})}, \qquad q = \mathrm{clip}(\mathrm{round}(x\,s), -128, 127) \in \mathbb{Z}^D, \qquad \tilde x = q / s. $$

    `round` is round-half-to-even. The floor $10^{-5}$ keeps an all-zero token from dividing by zero.
    Step by step on two tokens of very different size:
    """),
    code("""
    x = np.array([[0.30, -1.20, 0.05, 0.80, -0.41, 0.00],       # token 0: absmax 1.2
                  [0.003, 0.010, -0.007, 0.001, 0.0, -0.002]])  # token 1: absmax 0.01 (100x smaller)
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    s = 127 / np.maximum(absmax, 1e-5)
    print("absmax per token:", absmax.ravel(), "  scale s:", s.ravel())
    print("x * s:\\n", x * s)
    q_by_hand = np.clip(np.round(x * s), -128, 127)
    print("q = clip(round(x*s)):\\n", q_by_hand)

    q, s_lib = quant.activation_quant_int(x)                    # the library
    assert np.array_equal(q, q_by_hand) and np.allclose(s_lib, s)
    print("mmf.layers.quant.activation_quant_int agrees; codes are", q.dtype)
    print("dequantized x~ = q/s:\\n", quant.activation_quant(x))
    """),
    md(r"""
    Because the scale is per token, the small token keeps its full 8-bit resolution: both rows use codes
    up to $\pm127$. The rounding error of an entry is at most half a step, $|x - \tilde x| \le \frac{1}{2s}$,
    the sawtooth below (one token of 2001 evenly spaced values in $[-1, 1]$, so $s = 127$):
    """),
    code("""
    xs = np.linspace(-1, 1, 2001)[None, :]                      # one token, absmax 1 -> s = 127
    err = quant.activation_quant(xs) - xs
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.plot(xs[0], err[0], lw=0.8)
    ax.axhline(0.5 / 127, ls="--", c="gray"); ax.axhline(-0.5 / 127, ls="--", c="gray")
    ax.set_xlim(-0.1, 0.1); ax.set_xlabel("x"); ax.set_ylabel("x~ - x")
    ax.set_title("E2 rounding error: a sawtooth bounded by ±1/(2s) (zoom on [-0.1, 0.1])")
    plt.show()
    print(f"max |x~ - x| = {np.abs(err).max():.5f}   bound 1/(2s) = {0.5 / 127:.5f}")
    """),

    md(r"""
    ## 2. E3: weights to $\{-1, 0, +1\}$, one scale per tensor (absmean)

    The whole matrix shares one scale, the mean absolute value:

    $$ \beta = \max\big(\mathrm{mean}(|W|),\ 10^{-5}\big), \qquad W_t = \mathrm{clip}(\mathrm{round}(W/\beta), -1, 1) \in \{-1,0,1\}, \qquad \tilde W = W_t\,\beta. $$

    So an entry becomes 0 when $|W| < \beta/2$ and $\pm1$ otherwise (the clip only matters above $1.5\beta$).
    Step by step on a 3×4 matrix:
    """),
    code("""
    W = np.array([[ 0.40, -0.05,  0.90, -0.30],
                  [-0.70,  0.10,  0.02,  0.25],
                  [ 0.15, -1.30,  0.60, -0.08]])
    beta = np.abs(W).mean()
    print(f"beta = mean|W| = {beta:.4f}   zero threshold beta/2 = {beta / 2:.4f}")
    print("W / beta:\\n", W / beta)
    Wt_by_hand = np.clip(np.round(W / beta), -1, 1)
    print("Wt = clip(round(W/beta), -1, 1):\\n", Wt_by_hand + 0.0)      # + 0.0 prints -0 as 0

    Wt, beta_lib = quant.weight_quant_int(W)                     # the library
    assert np.array_equal(Wt, Wt_by_hand) and np.isclose(beta_lib, beta)
    print("mmf.layers.quant.weight_quant_int agrees; ternary weights are", Wt.dtype)
    print("W~ = Wt * beta:\\n", quant.weight_quant(W))
    """),

    md(r"""
    ## 3. What ternarization does to a weight matrix

    Take a matrix initialised like the model's GLU and LM head, $W_{jk} \sim \mathcal N(0, 0.02^2)$.
    Everything between the two dashed lines $\pm\beta/2$ becomes 0; everything outside becomes $\pm\beta$.
    The **sparsity** is the fraction of zeros and the **relative error** is $\|W - \tilde W\| / \|W\|$.
    """),
    code("""
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
    """),
    md(r"""
    For a Gaussian the numbers are predictable: $\mathbb E|W| = \sigma\sqrt{2/\pi}$, so the zero band is
    $|W| < 0.399\,\sigma$ and the expected sparsity is $\mathrm{erf}(0.399/\sqrt2) \approx 0.31$.
    Other shapes of weight distribution ternarize differently (same library call, three distributions):
    """),
    code("""
    from math import erf, pi, sqrt
    print(f"Gaussian prediction: sparsity = {erf(0.5 * sqrt(2 / pi) / sqrt(2)):.3f}\\n")
    print(f"{'distribution':<14}{'sparsity':>10}{'rel. error':>12}")
    for name, sample in [("gaussian", rng.normal(0, 1, (n, n))),
                         ("uniform", rng.uniform(-1, 1, (n, n))),
                         ("laplace", rng.laplace(0, 1, (n, n)))]:
        Wq = quant.weight_quant(sample)
        print(f"{name:<14}{np.mean(Wq == 0):>10.3f}"
              f"{np.linalg.norm(sample - Wq) / np.linalg.norm(sample):>12.3f}")
    """),
    md(r"""
    A relative error of ~0.4–0.5 per matrix is large: a ternary model is not a rounded float model, it is
    *trained* ternary. The latent float weights $W$ are what the optimizer updates; the forward pass only
    ever sees $\tilde W$. That needs a gradient through `round`, which is the next section.
    """),

    md(r"""
    ## 4. E4 BitLinear and the straight-through estimator (E5)

    $$ y = \tilde x_n \tilde W^\top, \qquad \tilde x_n = \mathrm{actquant}\big(\mathrm{rms}(x; g, 10^{-6})\big), \qquad \tilde W = \mathrm{weightquant}(W). $$

    `round` has derivative 0 almost everywhere (and is undefined at the jumps), so the true gradient is
    useless for learning. The **straight-through estimator** pretends each quantizer is the identity in the
    backward pass. In an autograd framework this is the one-liner `x + (q(x) - x).detach()`: the forward value
    is $q(x)$ and the gradient is that of $x$. With $dy$ from upstream:

    $$ dW = dy^\top \tilde x_n \quad(\text{the quantized input}), \qquad d\tilde x_n = dy\,\tilde W \quad(\text{the quantized weight}), $$

    and $d\tilde x_n$ flows back through the RMSNorm as if it were $dx_n$. The picture: the forward uses the
    staircase, the backward uses the slope of the identity line.
    """),
    code("""
    w_line = np.linspace(-0.06, 0.06, 601).reshape(1, -1)       # one matrix whose entries sweep a range
    Wt_line, beta_line = quant.weight_quant_int(w_line)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(w_line[0], Wt_line[0] * beta_line, label="forward: W~ = Wt·β (E3 staircase)")
    ax.plot(w_line[0], w_line[0], ls="--", label="backward: STE treats it as W (slope 1)")
    ax.set_xlabel("latent weight W"); ax.legend(); ax.set_title(f"β = {beta_line:.4f}")
    plt.show()
    """),
    md(r"""
    Now with the library: one BitLinear, the same input, the backward run with quantization **on**
    (the STE gradient) and **off** (the float gradient of an ordinary RMSNorm + linear layer). Then we
    check the STE formulas above by hand against `bitlinear_backward`.
    """),
    code("""
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
    """),
    md(r"""
    The STE gradient is not the float gradient: it sees the quantized $\tilde x_n$ and $\tilde W$. $dW$ moves
    little (8-bit activations are fine-grained), $dx$ and $dg$ move a lot (a ternary weight is coarse). `mmf`'s STE backward is checked against an independent PyTorch autograd oracle that uses
    the `x + (q(x) - x).detach()` trick (`tests/test_oracle_torch.py`): logits and every gradient of a 2-layer
    model agree to ~1e-15 in float64. Finite differences cannot check it: they would measure the staircase.

    BitLinear comes in two variants with identical gradients (E5): the caching one keeps $\tilde x_n$ for $dW$,
    the **fused** one keeps only $x$ and the norm statistics and recomputes $\tilde x_n$ in backward (the paper's
    memory saving):
    """),
    code("""
    _, cache_fused = bitlinear_forward(x, W, g, quantize=True, fused=True)
    grads_fused = bitlinear_backward(dy, cache_fused)
    for name, a, b in zip(("dx", "dW", "dg"), (dx_q, dW_q, dg_q), grads_fused):
        print(f"{name}: caching and fused identical -> {np.array_equal(a, b)}")
    """),

    md(r"""
    ## 5. The integer form: additions and subtractions only (E4)

    Pull the two scales out of the product: with $q$ the int8 codes of $x_n$ and $W_t$ the ternary matrix,

    $$ y = \tilde x_n \tilde W^\top = \frac{q}{s}\,(W_t\,\beta)^\top = \big(q\,W_t^\top\big)\cdot\frac{\beta}{s}. $$

    Each entry of $q W_t^\top$ is $\sum_{k:\,W_t=+1} q_k - \sum_{k:\,W_t=-1} q_k$: an exact int32 sum, no
    multiplication. The only multiply left is one $\beta/s$ per output. A tiny example with
    `mmf.layers.bitlinear.ternary_matmul_addsub`:
    """),
    code("""
    q_small = np.array([[12, -7, 100, 3, -128, 45]], dtype=np.int8)
    Wt_small = np.array([[1, 0, -1, 1, 0, -1],
                         [0, -1, 1, 0, 1, 0]], dtype=np.int8)
    acc = ternary_matmul_addsub(q_small, Wt_small)
    print("row 0: 12 - 100 + 3 - 45 =", 12 - 100 + 3 - 45, "   row 1: 7 + 100 - 128 =", 7 + 100 - 128)
    print("ternary_matmul_addsub ->", acc, acc.dtype)
    assert np.array_equal(acc, q_small.astype(np.int64) @ Wt_small.T.astype(np.int64))
    """),
    md(r"""
    The same on a real BitLinear: `bitlinear_int_forward` (int8 codes, ternary weights, int32 accumulator,
    one rescale per output) against the float fake-quant path `bitlinear_forward` used for training. They
    are the same numbers up to float rounding, in float64 and in float32:
    """),
    code("""
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
    print(f"\\nper token: {nonzero} additions/subtractions (nonzeros of Wt, {nonzero / Wt.size:.0%} of {Wt.size}),"
          f" 0 weight multiplies, {N} rescales")
    print(f"weight storage: log2(3) = {np.log2(3):.2f} bits ideal, 2 bits packed, vs 32 bits float32")
    """),
    md(r"""
    **Summary.** E2 and E3 turn a BitLinear into integer additions and subtractions plus one scale per
    output; E5 (the STE) lets it train anyway, by sending the gradient straight through both quantizers
    to latent float weights. Next: `02_mlgru_and_glu` builds the token and channel mixers from BitLinears.
    """),
]


# ----------------------------------------------------------------------------
# 02: MLGRU and GLU (E6, E7, E8, E9)

NB02 = [
    md(r"""
    # 02 — The MLGRU token mixer and the GLU channel mixer

    A MatMul-free block (E9) has two halves, both built from BitLinears (notebook 01):

    $$ r = x + \mathrm{MLGRU}\big(\mathrm{rms}(x; g_{attn})\big), \qquad x' = r + \mathrm{GLU}\big(\mathrm{rms}(r; g_{mlp})\big). $$

    * the **token mixer** (MLGRU, E6, with forget-gate lower bounds E7) moves information *along time*
      with an element-wise linear recurrence: no attention, no $QK^\top$ product;
    * the **channel mixer** (GLU, E8) mixes *across channels* inside each token.

    Everything below calls `mmf` (`mmf.layers.recurrence`, `mmf.layers.mlgru`, `mmf.layers.glu`, `mmf.models.block`, `mmf.gradcheck`).
    """),
    SETUP,
    code("""
    import mmf
    from mmf.layers.activations import sigmoid, silu
    from mmf.layers.bitlinear import bitlinear_forward
    from mmf.models.block import block_forward, sub_dict
    from mmf.layers.glu import glu_forward
    from mmf.gradcheck import TOLERANCE, run_all
    from mmf.layers.mlgru import lower_bounds_forward, mlgru_scan_forward, mlgru_step_forward
    from mmf.layers.quant import weight_quant_int
    from mmf.layers.recurrence import recurrence_step, scan_forward

    # a small model just to borrow correctly shaped, officially initialised layer parameters
    cfg = mmf.MMfreeConfig(vocab_size=64, hidden_size=16, num_layers=4, intermediate_size=32)
    model = mmf.MMfreeLM(cfg, seed=0, dtype=np.float64)
    layer1 = model.layer_params(1)                     # keys below model.layers.1.
    attn, mlp = sub_dict(layer1, "attn."), sub_dict(layer1, "mlp.")
    print("MLGRU parameters:", {k: v.shape for k, v in attn.items()})
    print("GLU parameters:  ", {k: v.shape for k, v in mlp.items()})
    """),

    md(r"""
    ## 1. The token mixer (E6)

    With $x_n$ the block's pre-normed input (B, T, D), four BitLinears D→D:

    $$ i_t = \mathrm{BL}_i(x_{n,t}), \quad f_t = \sigma\big(\mathrm{BL}_f(x_{n,t})\big), \quad f_t \leftarrow lb + (1 - lb)\,f_t \ \ (\text{layers} > 0), $$
    $$ i_t \leftarrow \mathrm{SiLU}(i_t) \odot (1 - f_t), \qquad h_t = f_t \odot h_{t-1} + i_t, \qquad h_{-1} = 0, $$
    $$ o_t = \mathrm{rms}\big(\mathrm{BL}_g(x_{n,t}); g_{norm}\big) \odot \mathrm{SiLU}(h_t), \qquad \mathrm{out}_t = \mathrm{BL}_o(o_t). $$

    The recurrence has no matrix acting on $h$: each channel is a separate leaky accumulator, so the state
    update is $D$ multiply-adds, and decoding a token costs the same at step 10 as at step 10,000.
    """),
    code("""
    B, T, D = 2, (8 if SMOKE else 16), cfg.hidden_size
    xn = rng.standard_normal((B, T, D))
    lb = model.lower_bounds()                           # (L, D), E7
    out, h, cache = mlgru_scan_forward(xn, attn, lb[1], np.zeros((B, D)))
    print("xn", xn.shape, "-> out", out.shape, " every state h", h.shape)
    """),

    md(r"""
    ## 2. The recurrence unrolled

    One step is `mmf.layers.recurrence.recurrence_step`: $h_t = f_t \odot h_{t-1} + i_t$. Feed it
    $i_t = (1 - f)\,u_t$ as the MLGRU does: then $h$ is an exponential moving average of $u$ with memory
    $\approx 1/(1-f)$ tokens. Four channels with four constant forget gates, an input that is 1 for the first
    5 tokens and 0 afterwards. First the first few steps as numbers, then the whole trace:
    """),
    code("""
    T_plot = 30 if SMOKE else 60
    forget = np.array([0.5, 0.8, 0.95, 0.99])           # one channel per forget gate, (D=4,)
    u = np.zeros((T_plot, 4)); u[:5] = 1.0               # a pulse of 5 tokens
    h_t, trace = np.zeros((1, 4)), []
    for t in range(T_plot):
        h_t = recurrence_step(h_t, forget[None, :], (1 - forget[None, :]) * u[t])   # (1, 4)
        trace.append(h_t[0])
        if t < 4:
            print(f"t={t}  u={u[t, 0]:.0f}  h={h_t[0]}")
    trace = np.array(trace)                             # (T_plot, 4)

    fig, ax = plt.subplots(figsize=(8, 3))
    for c, f in enumerate(forget):
        ax.plot(trace[:, c], marker=".", label=f"f = {f}  (memory ~{1 / (1 - f):.0f} tokens)")
    ax.axvspan(-0.5, 4.5, color="gray", alpha=0.15, label="input u = 1")
    ax.set_xlabel("t"); ax.set_ylabel("h_t"); ax.legend(fontsize=8)
    ax.set_title("h_t = f h_(t-1) + (1 - f) u_t: larger f remembers longer, but rises slower")
    plt.show()
    """),
    md(r"""
    The same recurrence on the MLGRU's real gates: a few channels of $h_t$ from the scan above
    (batch element 0). Channels whose forget gate sits near 1 drift slowly; others follow the input.
    """),
    code("""
    # the gates from the library's pieces (E6), checked against the scan: h_t - f_t h_(t-1) must equal i_t
    a_f, _ = bitlinear_forward(xn, attn["f_proj.weight"], attn["f_proj.norm.weight"])
    a_i, _ = bitlinear_forward(xn, attn["i_proj.weight"], attn["i_proj.norm.weight"])
    f_gate = lb[1] + (1 - lb[1]) * sigmoid(a_f)          # (B, T, D), lower-bounded forget gate
    i_gate = silu(a_i) * (1 - f_gate)
    h_before = np.concatenate([np.zeros((B, 1, D)), h[:, :-1]], axis=1)
    assert np.allclose(h - f_gate * h_before, i_gate)
    fig, axs = plt.subplots(1, 2, figsize=(10, 3))
    for c in range(4):
        axs[0].plot(h[0, :, c], marker=".", label=f"channel {c}")
        axs[1].plot(f_gate[0, :, c], marker=".")
    axs[0].set_title("h_t (layer 1, batch 0)"); axs[0].set_xlabel("t"); axs[0].legend(fontsize=8)
    axs[1].set_title("forget gate f_t (>= lb_1)"); axs[1].set_xlabel("t")
    plt.show()
    """),

    md(r"""
    ## 3. Forget-gate lower bounds across layers (E7)

    One parameter $P \in \mathbb R^{L\times D}$ shared by the model (init zeros):

    $$ S = \mathrm{softmax}(P,\ \text{axis}=\text{layers}), \qquad lb = \mathrm{cumsum}(S) - S_0, \qquad f \leftarrow lb_\ell + (1-lb_\ell)\,f \ \ (\ell > 0). $$

    $lb$ rises with depth, from $lb_0 = 0$ (layer 0 is unbounded) towards 1: upper layers are forced to
    remember longer (a minimum memory of $1/(1-lb_\ell)$ tokens), lower layers may forget fast. At
    initialisation $S = 1/L$ so $lb_\ell = \ell/L$; training moves $P$ per channel:
    """),
    code("""
    L = 6
    P0 = np.zeros((L, 5))
    P1 = P0 + rng.normal(0, 1.0, P0.shape)               # perturbed, as training would
    lb0, _ = lower_bounds_forward(P0)
    lb1, _ = lower_bounds_forward(P1)
    print("lb at init (every channel):", lb0[:, 0], " = l/L:", np.allclose(lb0[:, 0], np.arange(L) / L))

    fig, axs = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    axs[0].plot(lb0[:, 0], marker="o"); axs[0].set_title("P = 0: lb_l = l / L")
    for c in range(P1.shape[1]):
        axs[1].plot(lb1[:, c], marker="o", label=f"channel {c}")
    axs[1].set_title("P perturbed: still rising, from 0, below 1")
    for ax in axs:
        ax.set_xlabel("layer l"); ax.set_ylim(0, 1)
    axs[0].set_ylabel("lower bound lb_l"); axs[1].legend(fontsize=8)
    plt.show()
    assert np.all(lb1[0] == 0) and np.all(np.diff(lb1, axis=0) >= 0) and np.all(lb1 < 1)
    """),

    md(r"""
    ## 4. Step versus scan

    The **scan** processes a whole sequence (training, prefill); the **step** advances one token with a
    carried state (decoding). They are the same function of the inputs: running `mlgru_step_forward`
    $T$ times, passing $h$ along, reproduces `mlgru_scan_forward`. At the model level, prefilling half the
    sequence and decoding the rest one token at a time gives the same logits as one full forward.
    """),
    code("""
    h_prev, outs = np.zeros((B, D)), []
    for t in range(T):
        out_t, h_prev, _ = mlgru_step_forward(xn[:, t], h_prev, attn, lb[1])   # (B, D) each
        outs.append(out_t)
    print("layer : max |step - scan| =", np.abs(np.stack(outs, axis=1) - out).max())

    ids = rng.integers(0, cfg.vocab_size, (B, T))
    full = model.forward(ids)                            # (B, T, V)
    half = T // 2
    logits, state = model.forward(ids[:, :half], return_state=True)
    pieces = [logits]
    for t in range(half, T):
        logits, state = model.forward(ids[:, t:t + 1], state=state, return_state=True)
        pieces.append(logits)
    print("model : max |prefill + decode - full forward| =", np.abs(np.concatenate(pieces, axis=1) - full).max())
    """),

    md(r"""
    ## 5. The channel mixer (E8)

    One fused BitLinear `gate_proj` maps D → 2I; its output splits into $[\text{gate} \mid \text{up}]$:

    $$ p = \mathrm{SiLU}(\text{gate}) \odot \text{up}, \qquad \mathrm{out} = \mathrm{BL}_{down}(p) \quad (I \to D). $$

    The official width rule is $I = 256\,\lceil \lfloor 8D/3 \rfloor / 256 \rceil$ (D=1024 → 2816). Because gate
    and up are **one** BitLinear, they share **one** ternary scale $\beta$ (two separate projections would
    each have their own):
    """),
    code("""
    print("E8 rule: D=1024 ->", mmf.MMfreeConfig(vocab_size=2, hidden_size=1024, num_layers=1).intermediate_size)
    out_glu, _ = glu_forward(xn, mlp)
    print("xn", xn.shape, "-> gate_proj", mlp["gate_proj.weight"].shape, "-> [gate | up] 2 x",
          mlp["down_proj.weight"].shape[1], "-> out", out_glu.shape)

    W_gu = mlp["gate_proj.weight"]                       # (2I, D)
    _, beta_shared = weight_quant_int(W_gu)
    _, beta_gate = weight_quant_int(W_gu[: cfg.intermediate_size])
    _, beta_up = weight_quant_int(W_gu[cfg.intermediate_size:])
    print(f"shared beta = {beta_shared:.5f}   (gate alone would be {beta_gate:.5f}, up alone {beta_up:.5f})")
    """),
    md(r"""
    And the whole block (E9), the two mixers with their pre-norms and residuals:
    """),
    code("""
    x_in = rng.standard_normal((B, T, D))
    x_out, h_last, _ = block_forward(x_in, layer1, lb[1], np.zeros((B, D)))
    print("block:", x_in.shape, "->", x_out.shape, "  carried MLGRU state", h_last.shape)
    """),

    md(r"""
    ## 6. Gradient check of every layer

    Each backward in `mmf` is checked against centred finite differences in float64 with quantization
    **off** (through `round` a finite difference only sees the staircase; the quantized STE backward is
    checked against a PyTorch oracle instead, see notebook 01). The relative error per tensor is

    $$ \mathrm{rel}(a, b) = \frac{\|a - b\|}{\|a\| + \|b\|}, $$

    and every tensor of every layer, and of a 2-layer model, must be below the tolerance. This is
    `mmf.gradcheck.run_all()` (also `python -m mmf.gradcheck`):
    """),
    code("""
    results = run_all()                                  # {(layer, tensor): relative error}
    width = max(len(t) for _, t in results)
    print(f"{'layer':<28}{'tensor':<{width + 2}}{'rel. error':>11}")
    current = None
    for (layer, tensor), err in results.items():
        print(f"{layer if layer != current else '':<28}{tensor:<{width + 2}}{err:>11.2e}  {'ok' if err < TOLERANCE else 'FAIL'}")
        current = layer
    print(f"\\n{sum(e < TOLERANCE for e in results.values())} / {len(results)} tensors below {TOLERANCE:g}")
    """),
    code("""
    worst = {}
    for (layer, _), err in results.items():
        worst[layer] = max(worst.get(layer, 0.0), err)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(list(worst), list(worst.values()))
    ax.axvline(TOLERANCE, c="r", ls="--", label=f"tolerance {TOLERANCE:g}")
    ax.set_xscale("log"); ax.invert_yaxis(); ax.set_xlabel("worst relative error over the layer's tensors")
    ax.legend(); plt.show()
    """),
    md(r"""
    **Summary.** The MLGRU mixes tokens with a per-channel leaky recurrence whose forget gates are bounded
    from below more strongly in deeper layers; the GLU mixes channels with one fused ternary projection.
    Both are four or three BitLinears around element-wise operations, so the whole block is additions,
    subtractions and element-wise math, and every gradient is checked.
    """),
]


# ----------------------------------------------------------------------------

def write(cells, name):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = os.path.join(HERE, name)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    write(NB01, "01_ternary_quantization_and_bitlinear.ipynb")
    write(NB02, "02_mlgru_and_glu.ipynb")
