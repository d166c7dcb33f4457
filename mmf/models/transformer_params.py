"""Transformer++ parameter names, shapes and initialisation. Names are Hugging Face `LlamaForCausalLM`'s
state-dict keys, so a float model's parameters load into that class 1:1 (tests/test_transformer_hf.py);
weights are stored [out, in]. A quantized model (weights 'ternary' or 'binary') adds one norm gain per
projection, '<proj>.norm.weight', as the MatMul-free model's BitLinears have (E4)."""
import numpy as np

from mmf.layers.attention import PROJECTIONS as ATTENTION_PROJECTIONS
from mmf.layers.swiglu import PROJECTIONS as MLP_PROJECTIONS


def transformer_param_shapes(config):
    """Ordered {state-dict name: shape} for a TransformerConfig."""
    V, D, L, I = config.vocab_size, config.hidden_size, config.num_layers, config.intermediate_size
    bitlinear = config.weights != "float"                   # every projection has its own RMSNorm gain
    mlp_shapes = {"gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I)}
    shapes = {"model.embed_tokens.weight": (V, D)}
    for l in range(L):
        pre = f"model.layers.{l}."
        shapes[pre + "input_layernorm.weight"] = (D,)
        for proj in ATTENTION_PROJECTIONS:
            shapes[pre + f"self_attn.{proj}.weight"] = (D, D)
            if bitlinear:
                shapes[pre + f"self_attn.{proj}.norm.weight"] = (D,)
        shapes[pre + "post_attention_layernorm.weight"] = (D,)
        for proj in MLP_PROJECTIONS:
            shapes[pre + f"mlp.{proj}.weight"] = mlp_shapes[proj]
            if bitlinear:
                shapes[pre + f"mlp.{proj}.norm.weight"] = (mlp_shapes[proj][1],)   # the input width
    shapes["model.norm.weight"] = (D,)
    shapes["lm_head.weight"] = (V, D)
    return shapes


def transformer_init_params(config, seed, dtype):
    """Hugging Face Llama's initialisation: every weight N(0, 0.02) (its initializer_range), every norm
    gain ones."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in transformer_param_shapes(config).items():
        w = np.ones(shape) if name.endswith("norm.weight") else rng.normal(0.0, 0.02, size=shape)
        params[name] = w.astype(dtype)
    return params
