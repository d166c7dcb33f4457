"""`mmf.load(path)`: the one way to get a model back from disk, whatever its architecture.

Every tool (sampling, the Numba engine, the accelerator model, compression, ...) calls this, so a
checkpoint of any registered architecture and weight format loads the same way; a tool that cannot
run what it got refuses it with `mmf.models.registry.require`.
"""
from __future__ import annotations

import os


def load(path: str, backend: str = "numpy"):
    """The model stored at `path` (an mmf checkpoint file), with its parameters, ready to run.

    backend -- 'numpy' or 'numba' (as for the model constructors).
    The tokenizer, optimizer state and training config are in `mmf.training.checkpoint.load_checkpoint`.
    """
    from mmf.training.checkpoint import load_checkpoint
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; mmf.load expects a checkpoint file "
                                "(e.g. runs/tiny/ckpt.ckpt)")
    return load_checkpoint(path).build_model(backend=backend)
