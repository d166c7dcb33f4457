"""Elementwise nonlinearities and their derivatives (sigmoid for the forget gate, SiLU elsewhere)."""
import numpy as np


def sigmoid(z):
    with np.errstate(over="ignore"):        # exp(-z) overflows to inf for very negative z; 1/(1+inf) = 0 is right
        return 1.0 / (1.0 + np.exp(-z))


def silu(z):
    """SiLU (swish): z * sigmoid(z)."""
    return z * sigmoid(z)


def silu_grad(z):
    """d silu / dz = s + z s (1 - s) with s = sigmoid(z)."""
    s = sigmoid(z)
    return s * (1.0 + z * (1.0 - s))
