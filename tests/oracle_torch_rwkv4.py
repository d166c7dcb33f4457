"""An independent PyTorch float64 autograd reference of the MatMul-free RWKV-4 (dev-only oracle).

It shares no code with mmf. The WKV recurrence in particular is computed a different way from mmf's
stable scan: as what it is, a softmax-weighted average of the values over the past. For channel c the
weight of token i seen from position t is the softmax over i <= t of the exponents

    (t - 1 - i) w_c + k_{i,c}   for i < t,          u_c + k_{t,c}   for i = t,

so torch.softmax (stable by construction: it subtracts the row maximum) does what the running maximum
does in mmf, and autograd differentiates it. This costs O(T^2) memory, fine for a test.

The BitLinear, its quantizers (with the straight-through estimator) and the tie-margin bookkeeping
come from tests/oracle_torch.py, the MMfree oracle, itself written without mmf. Parameters arrive as a
dict of NumPy arrays keyed by the state-dict names of mmf.models.rwkv4, so the same numbers load into
mmf.RWKV4LM.params and into this oracle.

Shapes: B batch, T time, D width, F channel-mixing width, V vocab. Weights are [out, in].
"""
import numpy as np
import torch

from oracle_torch import NoQuantizer, Quantizer, bitlinear, below, to_torch

F = torch.nn.functional


def wkv_softmax(k, v, w, u):
    """k, v (B, T, C); w (C,) the log-decay (< 0), u (C,) the bonus -> (B, T, C), from an empty past."""
    T = k.shape[1]
    t = torch.arange(T, dtype=k.dtype)
    steps_back = (t[:, None] - 1 - t[None, :])                            # (T, T): t - 1 - i
    exponents = steps_back[None, :, :, None] * w + k[:, None, :, :]       # (B, T[t], T[i], C) past tokens
    now = (u + k)                                                         # (B, T, C) the current token
    eye = torch.eye(T, dtype=torch.bool)[None, :, :, None]
    exponents = torch.where(eye, now[:, :, None, :], exponents)
    future = (t[None, :] > t[:, None])[None, :, :, None]                   # i > t: not seen yet
    exponents = exponents.masked_fill(future, float("-inf"))
    weights = torch.softmax(exponents, dim=2)                             # over i
    return (weights * v[:, None, :, :]).sum(dim=2)                        # (B, T, C)


def shifted(x):
    """x_{t-1} for every t, zeros before the first token.  (B, T, D) -> (B, T, D)"""
    return F.pad(x, (0, 0, 1, 0))[:, :-1]


def layer_norm(x, params, name, eps):
    return F.layer_norm(x, (x.shape[-1],), params[name + ".weight"], params[name + ".bias"], eps)


def model_logits(params, ids, quant, eps=1e-5):
    """(B, T) -> (B, T, V)."""
    L = sum(1 for k in params if k.endswith(".ln1.weight"))
    lin = lambda x, p, name: bitlinear(x, p[name + ".weight"], p[name + ".norm.weight"], quant)
    x = layer_norm(params["emb.weight"][ids], params, "blocks.0.ln0", eps)
    for l in range(L):
        p = below(params, f"blocks.{l}.")
        att, ffn = below(p, "att."), below(p, "ffn.")
        xn = layer_norm(x, p, "ln1", eps)
        prev = shifted(xn)
        k = lin(xn * att["time_mix_k"] + prev * (1 - att["time_mix_k"]), att, "key")
        v = lin(xn * att["time_mix_v"] + prev * (1 - att["time_mix_v"]), att, "value")
        r = lin(xn * att["time_mix_r"] + prev * (1 - att["time_mix_r"]), att, "receptance")
        wkv = wkv_softmax(k, v, -torch.exp(att["time_decay"]), att["time_first"])
        x = x + lin(torch.sigmoid(r) * wkv, att, "output")
        xn = layer_norm(x, p, "ln2", eps)
        prev = shifted(xn)
        k = lin(xn * ffn["time_mix_k"] + prev * (1 - ffn["time_mix_k"]), ffn, "key")
        r = lin(xn * ffn["time_mix_r"] + prev * (1 - ffn["time_mix_r"]), ffn, "receptance")
        x = x + torch.sigmoid(r) * lin(torch.relu(k) ** 2, ffn, "value")
    xn = layer_norm(x, params, "ln_out", eps)
    return bitlinear(xn, params["head.weight"], params["head.norm.weight"], quant)


def oracle_loss_and_grads(params, ids, targets, quantize=True):
    """Mean cross-entropy and autograd gradients for every parameter.
    Returns (loss float, logits (B, T, V) ndarray, grads {name: ndarray}, tie_margin float)."""
    quant = Quantizer() if quantize else NoQuantizer()
    tp = to_torch(params)
    logits = model_logits(tp, torch.as_tensor(np.asarray(ids), dtype=torch.long), quant)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in tp.items()}
    return float(loss.detach()), logits.detach().numpy(), grads, quant.tie_margin
