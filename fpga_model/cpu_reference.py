"""The CPU integer path the accelerator must match: mmf's model with every BitLinear computed by
`mmf.layers.bitlinear.bitlinear_int_forward` (docs/equations.md, E4 integer form y = (q @ Wt.T) * beta / s) instead of
the float fake-quant product. Forward only.

Why a second reference next to MMfreeLM.forward: with ternary weights and int8 codes, two logits of
a small model are often *exactly* equal integers times the same scale. The integer path keeps such
ties exact (as the accelerator does) while the float fake-quant path breaks them by rounding noise,
so greedy argmax can legitimately differ there. Logits agree with both to ~1e-7.
"""
import numpy as np

from mmf import MMfreeLM
from mmf.backend import NumpyBackend
from mmf.layers.bitlinear import bitlinear_int_forward
from mmf.layers.quant import weight_quant_int


class IntegerBackend(NumpyBackend):
    name = "integer"

    def __init__(self):
        super().__init__(weights="ternary", fused=True)
        self._ternary = {}                                   # id(W) -> (W, Wt, beta): quantize once

    def bitlinear_forward(self, x, W, g):
        hit = self._ternary.get(id(W))
        if hit is None or hit[0] is not W:
            hit = self._ternary[id(W)] = (W, *weight_quant_int(W))
        _, Wt, beta = hit
        y = bitlinear_int_forward(x.reshape(-1, x.shape[-1]), Wt, beta, g)     # (M, K) -> (M, N)
        return y.astype(x.dtype).reshape(*x.shape[:-1], Wt.shape[0]), None

    def bitlinear_backward(self, dy, cache):
        raise NotImplementedError("the integer path is forward-only (inference)")


def integer_model(model):
    """A view of `model` (same config, same params arrays) that runs the integer path."""
    twin = MMfreeLM(model.config, dtype=model.dtype, backend=IntegerBackend())
    for k, v in model.params.items():
        twin.params[k] = v
    return twin


def greedy_cpu(model, prompt_ids, max_new_tokens):
    """Greedy decoding on the CPU integer path: mmf's own generate (prefill, then the carried state)."""
    ids = np.asarray(prompt_ids).reshape(1, -1)
    return [int(t) for t in integer_model(model).generate(ids, max_new_tokens, temperature=0)[0]]
