"""Rotary position embeddings (RoPE, Su et al. 2021) in the Hugging Face Llama convention.

Each head vector x (hd,) is split into two halves [x1 | x2]; pair k is (x1[k], x2[k]) and is rotated
by the angle pos * theta^(-2k/hd), k = 0 .. hd/2 - 1 ("rotate-half"; the original paper pairs
neighbours (x[2k], x[2k+1]) instead -- same idea, another order, so weights are not interchangeable):

    rotate_half([x1 | x2]) = [-x2 | x1]
    y = x * cos + rotate_half(x) * sin          cos, sin = (cos|sin)(pos * inv_freq), repeated twice

A rotation is orthogonal, so the backward is the rotation by -angle: dx = dy * cos - rotate_half(dy) * sin.
RoPE has no parameters. Applied to Q and K only: a score q_i . k_j then depends on the positions
only through i - j.

Shapes: x (B, H, T, hd) with hd even; positions (T,) absolute (a decoding step starts at the length
of the cache); cos, sin (T, hd) broadcast over B and H.
"""
import numpy as np

from mmf.checks import check_array


def rope_inv_freq(head_dim, theta=10000.0):
    """theta^(-2k/hd) for k = 0 .. hd/2 - 1, float64.  -> (hd/2,)"""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}; choose hidden_size / num_heads even")
    return 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def rope_tables(positions, head_dim, theta=10000.0, dtype=np.float64):
    """cos, sin (T, hd) for absolute positions (T,). Computed in float64, then cast to the model's dtype."""
    angles = np.asarray(positions, np.float64)[:, None] * rope_inv_freq(head_dim, theta)[None, :]  # (T, hd/2)
    angles = np.concatenate([angles, angles], axis=-1)                # (T, hd/2) -> (T, hd): both halves
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half(x):
    """[x1 | x2] -> [-x2 | x1] on the last axis (a quarter turn of every pair)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope_forward(x, cos, sin):
    """x (..., T, hd) -> y (..., T, hd), cache."""
    check_array("rope x", x, ndim_min=2)
    check_array("rope cos", cos, shape=x.shape[-2:], dtype=x.dtype)
    y = x * cos + rotate_half(x) * sin
    return y, (cos, sin)


def rope_backward(dy, cache):
    """The transpose of a rotation is the rotation by -angle: sin -> -sin."""
    cos, sin = cache
    return dy * cos - rotate_half(dy) * sin
