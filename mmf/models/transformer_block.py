"""One Transformer++ (Llama) block: the same pre-norm residual shape as E9, with attention as the
token mixer and SwiGLU as the channel mixer.

    r  = x + Attention(rms(x; input_layernorm))
    x' = r + SwiGLU(rms(r; post_attention_layernorm))

Parameters of one block arrive as a dict keyed like the state dict below `model.layers.{l}.`
('input_layernorm.weight', 'self_attn.q_proj.weight', ..., 'post_attention_layernorm.weight',
'mlp.gate_proj.weight', ...).
"""
from mmf.backend import NumpyBackend
from mmf.layers.attention import attention_backward, attention_forward
from mmf.layers.swiglu import swiglu_backward, swiglu_forward
from mmf.models.block import sub_dict


def transformer_block_forward(x, p, num_heads, past=None, eps=1e-6, rope_theta=10000.0, ternary_qk=False,
                              ops=None):
    """x (B, T, D), past (K, V) of the earlier tokens or None -> out (B, T, D), present (K, V), cache."""
    ops = ops or NumpyBackend()
    xn, c_attn_norm = ops.rmsnorm_forward(x, p["input_layernorm.weight"], eps)     # (B, T, D)
    a, present, c_attn = attention_forward(xn, sub_dict(p, "self_attn."), num_heads, past, rope_theta,
                                           ternary_qk, ops)
    r = x + a                                                                       # residual 1
    rn, c_mlp_norm = ops.rmsnorm_forward(r, p["post_attention_layernorm.weight"], eps)
    m, c_mlp = swiglu_forward(rn, sub_dict(p, "mlp."), ops)
    out = r + m                                                                     # residual 2
    return out, present, (c_attn_norm, c_attn, c_mlp_norm, c_mlp)


def transformer_block_backward(dout, cache, ops=None):
    """Returns dx (B, T, D), dp (dict like p), d(past K), d(past V) (None without a past)."""
    ops = ops or NumpyBackend()
    c_attn_norm, c_attn, c_mlp_norm, c_mlp = cache
    dp = {}
    drn, dp_mlp = swiglu_backward(dout, c_mlp, ops)
    dr_norm, dp["post_attention_layernorm.weight"] = ops.rmsnorm_backward(drn, c_mlp_norm)
    dr = dout + dr_norm                                                             # both paths into r
    dxn, dp_attn, dpast_k, dpast_v = attention_backward(dr, c_attn, ops)
    dx_norm, dp["input_layernorm.weight"] = ops.rmsnorm_backward(dxn, c_attn_norm)
    dx = dr + dx_norm
    dp.update({"self_attn." + k: v for k, v in dp_attn.items()})
    dp.update({"mlp." + k: v for k, v in dp_mlp.items()})
    return dx, dp, dpast_k, dpast_v
