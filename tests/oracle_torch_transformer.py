"""An independent PyTorch float64 autograd reference of the Transformer++ baseline and its 1-bit
variants, the oracle for mmf.TransformerLM's hand-written straight-through backward.

Written from the equations in mmf/layers/attention.py, rope.py and swiglu.py's docstrings, sharing no
code with mmf; autograd differentiates it. It reuses tests/oracle_torch.py's RMSNorm (E1) and its E2/E3
quantizers, and adds the E3b binary weight quantizer and the per-token-and-head ternary Q/K quantizer,
each with the straight-through estimator x + (q(x) - x).detach() and with the same tie bookkeeping:
`tie_margin` is the smallest distance of any rounding input to a rounding tie (or, for binary weights,
of any W to the threshold alpha, in units of beta).

Parameters come as a dict of NumPy arrays keyed by the Hugging Face Llama state-dict names (plus
'<proj>.norm.weight' for BitLinear projections), so the same numbers load into mmf.TransformerLM.params.
Shapes: B batch, T time, D width, H heads, hd = D / H, I MLP width, V vocab.
"""
import math

import numpy as np
import torch

from oracle_torch import Quantizer, below, rmsnorm, to_torch


class TransformerQuantizer(Quantizer):
    """The quantizers of one variant: E2 activations and E3 ternary / E3b binary weights in BitLinears
    (none for weights='float'), and optionally ternary Q/K."""

    def __init__(self, weights="ternary", ternary_qk=False):
        super().__init__()
        self.weight_format, self.ternary_qk = weights, ternary_qk

    def activations(self, x):
        return x if self.weight_format == "float" else super().activations(x)

    def weights(self, W):
        if self.weight_format in ("float", "ternary"):
            return W if self.weight_format == "float" else super().weights(W)
        # E3b: W~ = beta * Sign(W - alpha), alpha = mean(W), beta = max(mean|W|, 1e-5), Sign(0) = -1
        alpha = W.detach().mean()
        beta = torch.clamp(W.detach().abs().mean(), min=1e-5)
        self.tie_margin = min(self.tie_margin, float(torch.min(torch.abs(W.detach() - alpha)) / beta))
        Wq = torch.where(W.detach() > alpha, beta, -beta)
        return W + (Wq - W).detach()

    def qk(self, x):
        """Per row (one token, one head): s = max(mean|x|, 1e-5); x~ = clip(round(x / s), -1, 1) s."""
        if not self.ternary_qk:
            return x
        s = torch.clamp(x.detach().abs().mean(dim=-1, keepdim=True), min=1e-5)
        self._record(x / s)
        xq = torch.clamp(torch.round(x.detach() / s), -1, 1) * s
        return x + (xq - x).detach()


def projection(x, p, name, quant):
    """BitLinear (E4) when the projection has a norm gain, else a plain linear.  (..., K) -> (..., N)"""
    W = p[name + ".weight"]
    if name + ".norm.weight" in p:
        return quant.activations(rmsnorm(x, p[name + ".norm.weight"])) @ quant.weights(W).T
    return x @ W.T


def rope(x, theta=10000.0):
    """x (B, H, T, hd) at positions 0..T-1: pair (x[k], x[k + hd/2]) turned by pos * theta^(-2k/hd)."""
    T, hd = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)          # (hd/2,)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]         # (T, hd/2)
    c, s = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)                # rotate each pair


def attention(xn, p, H, quant):
    B, T, D = xn.shape
    heads = lambda z: z.reshape(B, T, H, D // H).transpose(1, 2)                 # (B, H, T, hd)
    q = quant.qk(rope(heads(projection(xn, p, "q_proj", quant))))
    k = quant.qk(rope(heads(projection(xn, p, "k_proj", quant))))
    v = heads(projection(xn, p, "v_proj", quant))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)                         # (B, H, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    ctx = (att @ v).transpose(1, 2).reshape(B, T, D)
    return projection(ctx, p, "o_proj", quant)


def mlp(xn, p, quant):
    gate = projection(xn, p, "gate_proj", quant)
    up = projection(xn, p, "up_proj", quant)
    return projection(torch.nn.functional.silu(gate) * up, p, "down_proj", quant)


def model_logits(params, ids, H, quant, eps=1e-6):
    L = sum(1 for k in params if k.endswith(".input_layernorm.weight"))
    x = params["model.embed_tokens.weight"][ids]                                 # (B, T, D)
    for l in range(L):
        p = below(params, f"model.layers.{l}.")
        r = x + attention(rmsnorm(x, p["input_layernorm.weight"], eps), below(p, "self_attn."), H, quant)
        x = r + mlp(rmsnorm(r, p["post_attention_layernorm.weight"], eps), below(p, "mlp."), quant)
    return rmsnorm(x, params["model.norm.weight"], eps) @ params["lm_head.weight"].T   # float head


def oracle_loss_and_grads(params, ids, targets, num_heads, weights="ternary", ternary_qk=False):
    """(loss, logits ndarray, {name: grad ndarray}, tie_margin) for the given variant."""
    quant = TransformerQuantizer(weights, ternary_qk)
    tp = to_torch(params)
    logits = model_logits(tp, torch.as_tensor(np.asarray(ids), dtype=torch.long), num_heads, quant)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1))
    loss.backward()
    return float(loss.detach()), logits.detach().numpy(), {k: v.grad.numpy() for k, v in tp.items()}, \
        quant.tie_margin

