"""E9 block: r = x + MLGRU(rms(x; attn_norm)); x' = r + GLU(rms(r; mlp_norm)).

Parameters of one block arrive as a dict keyed like the state dict below `model.layers.{l}.`
('attn_norm.weight', 'attn.i_proj.weight', ..., 'mlp_norm.weight', 'mlp.gate_proj.weight', ...).
"""
from mmf.backend import NumpyBackend
from mmf.layers.glu import glu_backward, glu_forward
from mmf.layers.mlgru import mlgru_scan_backward, mlgru_scan_forward


def sub_dict(p, prefix):
    """{'attn.i_proj.weight': W, ...} with prefix 'attn.' -> {'i_proj.weight': W, ...}"""
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def block_forward(x, p, lb, h0, eps=1e-6, ops=None, gate="official"):
    """x (B, T, D), h0 (B, D) carried MLGRU state -> out (B, T, D), h_last (B, D), cache.
    `gate` is the MLGRU output gate (MMfreeConfig.output_gate)."""
    ops = ops or NumpyBackend()
    xn, c_attn_norm = ops.rmsnorm_forward(x, p["attn_norm.weight"], eps)        # (B, T, D)
    a, h, c_mlgru = mlgru_scan_forward(xn, sub_dict(p, "attn."), lb, h0, eps, ops, gate)
    r = x + a                                                                    # residual 1
    rn, c_mlp_norm = ops.rmsnorm_forward(r, p["mlp_norm.weight"], eps)
    m, c_glu = glu_forward(rn, sub_dict(p, "mlp."), ops)
    out = r + m                                                                  # residual 2
    cache = (c_attn_norm, c_mlgru, c_mlp_norm, c_glu)
    return out, h[:, -1], cache


def block_backward(dout, cache, ops=None):
    """Returns dx (B, T, D), dp (dict like p), dlb (D,) or None."""
    ops = ops or NumpyBackend()
    c_attn_norm, c_mlgru, c_mlp_norm, c_glu = cache
    dp = {}
    drn, dp_mlp = glu_backward(dout, c_glu, ops)
    dr_norm, dp["mlp_norm.weight"] = ops.rmsnorm_backward(drn, c_mlp_norm)
    dr = dout + dr_norm                                                          # both paths into r
    dxn, dp_attn, dlb, _ = mlgru_scan_backward(dr, c_mlgru, ops=ops)
    dx_norm, dp["attn_norm.weight"] = ops.rmsnorm_backward(dxn, c_attn_norm)
    dx = dr + dx_norm
    dp.update({"attn." + k: v for k, v in dp_attn.items()})
    dp.update({"mlp." + k: v for k, v in dp_mlp.items()})
    return dx, dp, dlb
