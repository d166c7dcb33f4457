"""The Llama MLP (SwiGLU, Shazeer 2020): three separate projections, no biases.

    out = proj_down( SiLU(proj_gate(xn)) * proj_up(xn) )        xn (..., D) -> (..., I) -> (..., D)

It computes what E8's GLU computes, with the gate and up halves as two matrices (gate_proj, up_proj
(I, D) each) instead of one fused (2I, D): the Hugging Face Llama layout, and in BitNet b1.58 two
BitLinears, each with its own norm and its own weight scale. Each projection is a plain linear or a
BitLinear according to its parameters (mmf.layers.linear.projection). Parameters arrive keyed like
the state dict below `model.layers.{l}.mlp.`: 'gate_proj.weight', 'up_proj.weight', 'down_proj.weight'
(+ '...norm.weight' for BitLinears).
"""
from mmf.backend import NumpyBackend
from mmf.layers.linear import projection_backward, projection_forward

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def swiglu_forward(xn, p, ops=None):
    """xn (..., D) -> out (..., D), cache."""
    ops = ops or NumpyBackend()
    gate, c_gate = projection_forward(xn, p, "gate_proj", ops)       # (..., I)
    up, c_up = projection_forward(xn, p, "up_proj", ops)             # (..., I)
    s_gate = ops.silu(gate)
    out, c_down = projection_forward(s_gate * up, p, "down_proj", ops)   # (..., I) -> (..., D)
    # fused mode recomputes SiLU(gate) in backward instead of keeping a third (..., I) array
    cache = (c_gate, c_up, gate, up, None if ops.fused else s_gate, c_down)
    return out, cache


def swiglu_backward(dout, cache, ops=None):
    """-> dxn (..., D), dp (dict like p)."""
    ops = ops or NumpyBackend()
    c_gate, c_up, gate, up, s_gate, c_down = cache
    if s_gate is None:
        s_gate = ops.silu(gate)
    dp = {}
    dprod, g = projection_backward(dout, c_down, ops)                # (..., I)
    dp.update(g)
    dup = dprod * s_gate
    dgate = dprod * up * ops.silu_grad(gate)
    dxn, g = projection_backward(dup, c_up, ops)
    dp.update(g)
    dxn_gate, g = projection_backward(dgate, c_gate, ops)
    dp.update(g)
    return dxn + dxn_gate, dp
