"""config.json of a released MatMul-free model (the official `HGRNBitConfig`) <-> MMfreeConfig.

Every field of HGRNBitConfig falls in one of three groups.

Honoured (they change the model, so they are read and mapped):
  vocab_size, hidden_size, rms_norm_eps, use_lower_bound   -> the MMfreeConfig fields of the same name
  num_hidden_layers                                        -> num_layers
  intermediate_size, or when it is null hidden_ratio       -> intermediate_size by the E8 rule
                                                              (docs/equations.md, E8) with ratio r
  dtype (transformers >= 5) or torch_dtype (older, e.g. 4.40 which wrote the released checkpoints)
                                                           -> the storage dtype, read in either spelling
                                                              (`storage_dtype`): float32, bfloat16 or
                                                              float16, and both must agree if both are
                                                              given. Each tensor is then read in the dtype
                                                              its own safetensors header states (that is
                                                              what the bytes are) and widened exactly;
                                                              export writes both spellings.

Accepted and ignored, because they do not change the math of a forward pass:
  num_heads                the recurrence (E6) is elementwise over the hidden width, so cutting the width
                           into heads only regroups independent channels; g_norm normalizes the full
                           width either way (the official code builds it over the whole input_dim)
  hidden_act               the official MLP builds an activation from it but its forward always calls
                           swiglu (SiLU(gate) * up, E8), never that activation
  max_position_embeddings  there are no position embeddings: the recurrence carries order
  use_cache                whether the official forward returns its recurrent state; mmf always can
  fuse_cross_entropy       which GPU kernel computes the training loss; the loss is the same (E11)
  initializer_range        initialisation only; a checkpoint's weights replace it
  conv_size, share_conv_kernel   only used when use_short_conv is true, which is refused below
  bos_token_id, eos_token_id, pad_token_id   token ids for generation and padding, not the network
  (the official model makes pad_token_id the embedding's padding_idx, which only zeroes that row's
  gradient and its initial value; the checkpoint's row is used as stored)
  plus transformers' own bookkeeping (architectures, model_type, transformers_version, ...).

Refused (mmf does not implement them; a clear error names the field):
  use_short_conv: true, attn_mode other than "fused_recurrent", expand_ratio != 1,
  tie_word_embeddings: true.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from mmf.models.config import MMfreeConfig, glu_intermediate_size

MODEL_TYPE = "hgrn_bit"
ARCHITECTURE = "HGRNBitForCausalLM"
STORAGE_DTYPES = ("float32", "bfloat16", "float16")

# Every HGRNBitConfig field with the official default (what its __init__ uses when a key is absent).
HF_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 24, "attn_mode": "fused_recurrent",
    "num_heads": 1, "expand_ratio": 1, "use_short_conv": False, "conv_size": 4, "share_conv_kernel": True,
    "use_lower_bound": True, "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish",
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "use_cache": True, "pad_token_id": None,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "initializer_range": 0.02,
    "fuse_cross_entropy": False,
}


class HFConfigError(ValueError):
    """A config.json that mmf cannot map (the message names the file, the field and the reason)."""


def read_hf_config(path: str) -> dict:
    """The parsed config.json at `path` (a file, or a directory holding one)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no config.json (a Hugging Face model directory holds config.json "
                                f"and model.safetensors)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise HFConfigError(f"{path}: config.json must hold a JSON object, got {type(d).__name__}")
    return d


def storage_dtype(d: dict, source: str = "config.json") -> Optional[str]:
    """The dtype the weights were saved in, from `dtype` or `torch_dtype` (None when neither is given)."""
    values = {k: d[k] for k in ("dtype", "torch_dtype") if d.get(k) is not None}
    if len(set(values.values())) > 1:
        raise HFConfigError(f"{source}: 'dtype' ({values['dtype']!r}) and 'torch_dtype' "
                            f"({values['torch_dtype']!r}) disagree; keep one of them")
    if not values:
        return None
    value = next(iter(values.values()))
    if value not in STORAGE_DTYPES:
        raise HFConfigError(f"{source}: {next(iter(values))} is {value!r}; mmf reads checkpoints stored as "
                            f"one of {STORAGE_DTYPES}")
    return value


def _int_field(d, name, source, allow_none=False):
    value = d.get(name, HF_DEFAULTS.get(name))
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HFConfigError(f"{source}: {name} must be a positive integer, got {value!r}")
    return value


def config_from_hf(d: dict, source: str = "config.json") -> MMfreeConfig:
    """An HGRNBitConfig dict (config.json) -> MMfreeConfig, refusing what mmf does not implement."""
    model_type = d.get("model_type")
    if model_type != MODEL_TYPE:
        raise HFConfigError(f"{source}: model_type is {model_type!r}, but mmf reads the MatMul-free models "
                            f"(model_type {MODEL_TYPE!r}, architecture {ARCHITECTURE})")
    get = lambda name: d.get(name, HF_DEFAULTS[name])                 # noqa: E731
    if get("use_short_conv"):
        raise HFConfigError(f"{source}: use_short_conv is true; mmf implements the released models, which "
                            f"have no short convolution (use_short_conv: false)")
    if get("attn_mode") != "fused_recurrent":
        raise HFConfigError(f"{source}: attn_mode is {get('attn_mode')!r}; only 'fused_recurrent' (the one "
                            f"mode of the official HGRNBitAttention) is supported")
    if get("expand_ratio") not in (1, None):
        raise HFConfigError(f"{source}: expand_ratio is {get('expand_ratio')!r}; mmf's MLGRU projections are "
                            f"D x D, i.e. expand_ratio 1 (as in the released models)")
    if get("tie_word_embeddings"):
        raise HFConfigError(f"{source}: tie_word_embeddings is true; the MatMul-free LM head is a ternary "
                            f"BitLinear separate from the float embedding, so it cannot be tied")
    storage_dtype(d, source)
    vocab_size = _int_field(d, "vocab_size", source)
    hidden_size = _int_field(d, "hidden_size", source)
    num_layers = _int_field(d, "num_hidden_layers", source)
    intermediate_size = _int_field(d, "intermediate_size", source, allow_none=True)
    if intermediate_size is None:                                    # the official MLP's rule
        ratio = get("hidden_ratio")
        ratio = 4 if ratio is None else ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
            raise HFConfigError(f"{source}: hidden_ratio must be a positive number, got {ratio!r}")
        intermediate_size = glu_intermediate_size(hidden_size, ratio)
    eps = get("rms_norm_eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise HFConfigError(f"{source}: rms_norm_eps must be a number in (0, 1), got {eps!r}")
    use_lower_bound = get("use_lower_bound")
    if not isinstance(use_lower_bound, bool):
        raise HFConfigError(f"{source}: use_lower_bound must be true or false, got {use_lower_bound!r}")
    return MMfreeConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers,
                        intermediate_size=intermediate_size, rms_norm_eps=float(eps),
                        use_lower_bound=use_lower_bound)


def config_to_hf(config: MMfreeConfig, dtype: str, bos_token_id=None, eos_token_id=None,
                 pad_token_id=None) -> dict:
    """MMfreeConfig -> a config.json dict holding every HGRNBitConfig field, loadable by the official
    package (`import mmfreelm` registers model_type hgrn_bit with transformers' Auto classes).

    Token ids must name tokens of the exported tokenizer, or be None (written as null): the official
    defaults 1 and 2 would be ordinary tokens of a tokenizer trained here."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    for name, value in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id),
                        ("pad_token_id", pad_token_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < config.vocab_size):
            raise ValueError(f"{name} must be None or a token id in [0, {config.vocab_size}), got {value!r}")
    d = dict(HF_DEFAULTS)
    d.update(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
             num_hidden_layers=config.num_layers, intermediate_size=config.intermediate_size,
             rms_norm_eps=config.rms_norm_eps, use_lower_bound=config.use_lower_bound,
             bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    # both spellings: transformers >= 5 reads "dtype", the 4.x versions the official package pins read
    # "torch_dtype"
    return {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, **d, "dtype": dtype,
            "torch_dtype": dtype}
