"""Input checks shared by every layer: a wrong shape or dtype fails loudly with a message that says
which argument was wrong and what was expected, instead of broadcasting into a silent bug."""
import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(name, a, shape=None, dtype=None, ndim=None, ndim_min=None, floating=True):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if floating and a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}; convert with .astype(np.float32)")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {a.dtype} but {np.dtype(dtype)} was expected "
                        "(all arrays of one model share its dtype)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if ndim_min is not None and a.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimension(s), got shape {a.shape}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape} but {tuple(shape)} was expected")


def check_token_ids(name, ids, vocab_size):
    """ids must be an integer array (B, T) with every value in [0, vocab_size)."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy integer array of shape (B, T), got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, T) with B, T >= 1, got {ids.shape}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} has token ids in [{lo}, {hi}] but the model's vocabulary is [0, {vocab_size}); "
                         "check the tokenizer matches config.vocab_size")
