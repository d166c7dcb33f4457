"""A Hugging Face model directory <-> an MMfreeLM.

    model = mmf.MMfreeLM.from_pretrained("MMfreeLM-370M")            # config.json + model.safetensors
    model.save_pretrained("out", dtype="bfloat16", tokenizer=tok)    # for the official GPU package

The state-dict names of mmf are the official ones (mmf.models.params), so loading is: map config.json
(hf_config), check that the files hold exactly the tensors that config needs with the right shapes,
then read them one at a time through the memory map, widened to the model's dtype.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mmf.interop.hf_config import config_from_hf, config_to_hf, read_hf_config
from mmf.interop.safetensors_io import DEFAULT_MAX_SHARD_BYTES, CheckpointDir, write_dir
from mmf.models.params import param_shapes


def is_hf_directory(path) -> bool:
    """True for a directory whose config.json says model_type hgrn_bit."""
    try:
        return os.path.isdir(path) and read_hf_config(path).get("model_type") == "hgrn_bit"
    except (OSError, ValueError):
        return False


def open_pretrained(path):
    """(MMfreeConfig, CheckpointDir) of a model directory, every tensor's name and shape checked."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a directory (a Hugging Face model is a directory with "
                                f"config.json and model.safetensors)")
    config = config_from_hf(read_hf_config(path), source=os.path.join(path, "config.json"))
    weights = CheckpointDir(path)
    weights.check_tensors(param_shapes(config))
    return config, weights


def load_pretrained(path, dtype=np.float32, backend="numpy"):
    """MMfreeLM from a directory; tensors stored as F32, BF16 or F16 are widened exactly to `dtype`."""
    from mmf.models.mmfree import MMfreeLM
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype}")
    config, weights = open_pretrained(path)
    params = {name: weights.read(name, dtype) for name in param_shapes(config)}   # one copy each
    return MMfreeLM(config, dtype=dtype, backend=backend, params=params)


def _check_exportable(model):
    """Only the ternary MatMul-free LM has an hgrn_bit counterpart."""
    arch = getattr(type(model.config), "arch", "mmfree")
    if arch != "mmfree":
        raise ValueError(f"this model's arch is {arch!r}; only the MatMul-free LM ('mmfree') maps to the "
                         f"official hgrn_bit format")
    weights = getattr(model.config, "weights", "ternary")
    if weights != "ternary":
        raise ValueError(f"this model has {weights!r} weights; the official package (hgrn_bit) runs ternary "
                         f"BitLinear weights only, so a {weights} model cannot be exported to its format")
    gate = getattr(model.config, "output_gate", "official")
    if gate != "official":
        raise ValueError(f"this model has output_gate={gate!r}; the official package computes the released "
                         f"models' output gate rms(g)*SiLU(h) ('official'), so it would compute other logits")


def save_pretrained(model, path, dtype="bfloat16", tokenizer=None, max_shard_bytes=None):
    """Write config.json (every HGRNBitConfig field), the weights (model.safetensors, or shards +
    model.safetensors.index.json above max_shard_bytes) and, given an mmf tokenizer, tokenizer.json +
    tokenizer_config.json. Returns the names of the files written."""
    _check_exportable(model)
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}")
    os.makedirs(path, exist_ok=True)
    written = write_dir(path, dict(model.params), dtype,
                        DEFAULT_MAX_SHARD_BYTES if max_shard_bytes is None else max_shard_bytes)
    if tokenizer is not None:
        from mmf.interop.hf_tokenizer import save_hf_tokenizer
        written += save_hf_tokenizer(tokenizer, path)
    config = config_to_hf(model.config, dtype)                      # mmf's tokenizers have no BOS/EOS/PAD
    config_path = os.path.join(path, "config.json")
    with open(config_path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(config_path + ".tmp", config_path)
    return written + ["config.json"]
