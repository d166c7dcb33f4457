"""E8 GLU channel mixer: one fused BitLinear gate_proj D -> 2I (one ternary scale for both halves),
split [gate | up], p = SiLU(gate) * up, out = BitLinear_down(p) (I -> D).

Parameters arrive as a dict keyed like the state dict below `model.layers.{l}.mlp.`:
'gate_proj.weight' (2I, D), 'gate_proj.norm.weight' (D,), 'down_proj.weight' (D, I), 'down_proj.norm.weight' (I,).
"""
import numpy as np

from mmf.backend import NumpyBackend


def glu_forward(xn, p, ops=None):
    """xn (..., D) -> out (..., D)."""
    ops = ops or NumpyBackend()
    gu, c_gu = ops.bitlinear_forward(xn, p["gate_proj.weight"], p["gate_proj.norm.weight"])   # (..., 2I)
    gate, up = np.split(gu, 2, axis=-1)                              # (..., I) each; gate rows come first
    s_gate = ops.silu(gate)
    prod = s_gate * up                                               # (..., I)
    out, c_down = ops.bitlinear_forward(prod, p["down_proj.weight"], p["down_proj.norm.weight"])  # (..., D)
    # fused mode recomputes SiLU(gate) in backward instead of keeping a third (..., I) array
    cache = (c_gu, gate, up, None if ops.fused else s_gate, c_down)
    return out, cache


def glu_backward(dout, cache, ops=None):
    ops = ops or NumpyBackend()
    c_gu, gate, up, s_gate, c_down = cache
    if s_gate is None:
        s_gate = ops.silu(gate)
    dp = {}
    dprod, dp["down_proj.weight"], dp["down_proj.norm.weight"] = ops.bitlinear_backward(dout, c_down)
    dgate = dprod * up * ops.silu_grad(gate)
    dup = dprod * s_gate
    dgu = np.concatenate([dgate, dup], axis=-1)                      # (..., 2I)
    dxn, dp["gate_proj.weight"], dp["gate_proj.norm.weight"] = ops.bitlinear_backward(dgu, c_gu)
    return dxn, dp
