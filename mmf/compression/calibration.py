"""Calibration: run the model's own forward on training sequences and record what each block
projection sees, summarised as its Hessian (GPTQ, BiLLM):

    H = 2 X^T X / n      X (n, K): the n calibration tokens' inputs to the product, i.e. the
                         BitLinear's normalised input rms(x; g) (E4), the thing W multiplies

H is the curvature of the layer's squared output error ||X W^T - X W_hat^T||^2 in W, the same for
every output row: columns whose inputs are large or correlated matter most.

The hook is a backend: `RecordingBackend` subclasses the NumPy reference and, on every BitLinear (or,
in the float Transformer++, plain linear) call whose weight is one of the watched parameters (matched by identity), adds its input's X^T X to a
float64 sum. The model is run unchanged, so the recorded inputs are exactly those of its forward.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from mmf.backend import NumpyBackend
from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.layers.rmsnorm import rmsnorm_forward


class RecordingBackend(NumpyBackend):
    """The NumPy backend, plus sums of X^T X for the watched weights.

    watch   {name: weight array} of the parameters whose inputs are recorded
    keep    also keep the raw inputs X (float32) of these names (for measuring output errors)
    """

    def __init__(self, watch: dict, weights="float", keep=(), fused=True):
        super().__init__(fused=fused, weights=weights)
        self.name_of = {id(W): name for name, W in watch.items()}
        self.xtx = {name: 0.0 for name in watch}          # float64 (K, K) once a batch arrived
        self.count = {name: 0 for name in watch}
        self.kept = {name: [] for name in keep}

    def _record(self, name, xn):
        X = xn.reshape(-1, xn.shape[-1]).astype(np.float64)                      # (n, K)
        self.xtx[name] = self.xtx[name] + X.T @ X                                # (K, K)
        self.count[name] += X.shape[0]
        if name in self.kept:
            self.kept[name].append(X.astype(np.float32))

    def bitlinear_forward(self, x, W, g):                  # the MatMul-free LM's projections (E4)
        name = self.name_of.get(id(W))
        if name is not None:
            self._record(name, rmsnorm_forward(x, g, BITLINEAR_EPS)[0])            # what W multiplies
        return super().bitlinear_forward(x, W, g)

    def linear_forward(self, x, W):                        # the float Transformer++'s plain projections
        name = self.name_of.get(id(W))
        if name is not None:
            self._record(name, x)
        return super().linear_forward(x, W)

    def hessians(self) -> dict:
        """{name: H = 2 X^T X / n} over everything recorded so far."""
        missing = [n for n, c in self.count.items() if c == 0]
        if missing:
            raise RuntimeError(f"no calibration input reached {missing[:3]}: run the model forward first")
        return {name: 2.0 * self.xtx[name] / self.count[name] for name in self.xtx}

    def inputs(self, name) -> np.ndarray:
        """The kept inputs X (n, K) of one watched weight."""
        return np.concatenate(self.kept[name], axis=0)


def calibration_batches(tokens, vocab_size: int, n_sequences: int, block_size: int, seed: int = 0,
                        batch_size: int = 16):
    """n_sequences random windows of block_size training tokens, in batches (B, T); refuses token ids the
    model does not know (calibration text from another tokenizer)."""
    if n_sequences < 1:
        raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
    rng = np.random.default_rng(seed)
    n = len(tokens) - block_size
    if n < 1:
        raise ValueError(f"{len(tokens)} calibration tokens are too few for sequences of {block_size}")
    starts = rng.integers(0, n, size=n_sequences)
    windows = np.asarray(tokens[starts[:, None] + np.arange(block_size)[None, :]], dtype=np.int64)
    top = int(windows.max())
    if top >= vocab_size:
        raise ValueError(f"calibration data holds token id {top} but the model's vocabulary has "
                         f"{vocab_size} tokens: the data was tokenized for another model; calibrate with "
                         f"the training data of this checkpoint")
    return [windows[s:s + batch_size] for s in range(0, n_sequences, batch_size)]


def record(model, batches, watch_names, keep=(), progress=False) -> RecordingBackend:
    """Run `model` forward over `batches` with a RecordingBackend watching `watch_names`; the model's own
    backend is put back afterwards."""
    rec = RecordingBackend({n: model.params[n] for n in watch_names}, weights=model.config.weights,
                           keep=keep)
    own = model.backend
    model.backend = rec
    try:
        for ids in tqdm(batches, desc="calibration", disable=not progress, leave=False):
            model.forward(ids)
    finally:
        model.backend = own
    return rec
