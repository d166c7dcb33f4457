"""`mmf.load(path)`: the one way to get a model back from disk, whatever its architecture.

Every tool (sampling, the Numba engine, the accelerator model, compression, ...) calls this, so a
checkpoint of any registered architecture and weight format loads the same way; a tool that cannot
run what it got refuses it with `mmf.models.registry.require`.
"""
from __future__ import annotations

import os


def load(path: str, backend: str = "numpy"):
    """The model stored at `path`, with its parameters, ready to run: an mmf checkpoint file, or a
    Hugging Face model directory (config.json with model_type hgrn_bit + safetensors weights, e.g. the
    released MMfreeLM-370M; read by mmf.interop, float32).

    backend -- 'numpy' or 'numba' (as for the model constructors).
    The tokenizer, optimizer state and training config are in `mmf.training.checkpoint.load_checkpoint`.
    """
    from mmf.training.checkpoint import load_checkpoint
    if os.path.isdir(path):
        from mmf.interop.pretrained import is_hf_directory, load_pretrained
        if is_hf_directory(path):
            return load_pretrained(path, backend=backend)
        raise IsADirectoryError(f"{path!r} is a directory without a config.json of model_type hgrn_bit; "
                                "mmf.load expects a checkpoint file (e.g. runs/tiny/ckpt.ckpt) or a "
                                "Hugging Face model directory")
    return load_checkpoint(path).build_model(backend=backend)
