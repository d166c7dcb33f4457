"""E11 cross-entropy, mean over every (B, T) position, computed stably with a max shift."""
import numpy as np


def cross_entropy_forward(logits, targets):
    """logits (B, T, V) float, targets (B, T) int -> (loss scalar, cache)."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)                                        # (N, V), N = B*T
    t = targets.reshape(-1)                                          # (N,)
    z = z - z.max(axis=1, keepdims=True)                             # exp never overflows
    logsumexp = np.log(np.exp(z).sum(axis=1))                        # (N,)
    nll = logsumexp - z[np.arange(t.size), t]                        # (N,)
    loss = float(nll.mean())
    cache = (z, logsumexp, t, logits.shape)
    return loss, cache


def cross_entropy_backward(cache):
    """d loss / d logits = (softmax - onehot) / N."""
    z, logsumexp, t, shape = cache
    probs = np.exp(z - logsumexp[:, None])                           # (N, V)
    probs[np.arange(t.size), t] -= 1.0
    return (probs / t.size).reshape(shape)                          # (B, T, V)
