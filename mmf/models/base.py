"""LanguageModel: the public surface every mmf architecture shares (MMfreeLM, TransformerLM, RWKV4LM).

An architecture supplies two methods, the forward pass with its cache and the backward pass that
walks that cache in reverse:

    _forward(ids, state) -> (logits (B, T, V), new_state, cache)
    _backward(dlogits, cache) -> {parameter name: gradient}

and this class turns them into `forward`, `loss_and_grads` (E11) and `generate`. The decoding `state`
is whatever the architecture carries between tokens: the MLGRU's hidden vectors, a Transformer's KV
cache, RWKV-4's shifted tokens and WKV sums. `mmf.models.generate` only passes it back.
"""
import dataclasses

import numpy as np

from mmf.backend import get_backend
from mmf.layers.quant import resolve_weights
from mmf.checks import check_token_ids
from mmf.models.block import sub_dict


class LanguageModel:
    layer_prefix = "model.layers."          # parameter names of block l start with f"{layer_prefix}{l}."

    def _setup(self, config, config_cls, dtype, backend, fused, run_weights):
        """Check the config and dtype, and build the backend that runs `run_weights`."""
        if not isinstance(config, config_cls):
            raise TypeError(f"config must be an mmf.{config_cls.__name__}, got {type(config).__name__}")
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype}")
        self.config = config
        self.dtype = np.dtype(dtype)
        self.backend = get_backend(backend, run_weights, fused)
        if self.backend.weights != run_weights:
            raise ValueError(f"the backend instance runs weights={self.backend.weights!r} but this model runs "
                             f"{run_weights!r}; build the backend with weights={run_weights!r}")

    @property
    def weights(self):
        """The weight format of the model's projections: 'ternary', 'binary' or 'float' (config.weights)."""
        return self.config.weights

    @property
    def quantize(self):
        """Deprecated alias: True unless the model is float."""
        return self.config.weights != "float"

    @quantize.setter
    def quantize(self, on):
        """Switch between the float model (False) and the ternary one (True), keeping the parameters."""
        self.set_weights("ternary" if on else "float")

    def set_weights(self, weights):
        """Run the same parameters in another weight format (e.g. the float model behind a ternary one)."""
        self.config = dataclasses.replace(self.config, weights=resolve_weights(weights))
        self.backend.weights = self.config.weights

    def _block_ops(self):
        """The backend the blocks run on: the model's own, or -- when the config says
        projection_output_norm (a OneBit-compressed model) -- a view of it that ends every block
        projection with a parameter-free LayerNorm (mmf/layers/output_norm.py). The LM head keeps
        the model's own backend."""
        if not getattr(self.config, "projection_output_norm", False):
            return self.backend
        from mmf.layers.output_norm import OutputNormOps
        return OutputNormOps(self.backend)

    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def layer_params(self, l):
        """The dict of block l's parameters, with the block's prefix removed from the names."""
        return sub_dict(self.params, f"{self.layer_prefix}{l}.")

    def forward(self, ids, state=None, return_state=False):
        """ids (B, T) int -> logits (B, T, V). With return_state=True also returns the decoding state after
        the last token; passing it back as `state` continues the sequence, so a prompt is prefilled once
        and then decoded one token at a time."""
        logits, new_state, _ = self._forward(ids, state)
        return (logits, new_state) if return_state else logits

    def loss_and_grads(self, ids, targets):
        """Mean cross-entropy (E11) over all (B, T) positions and its gradient for every parameter."""
        check_token_ids("targets", targets, self.config.vocab_size)
        if targets.shape != ids.shape:
            raise ValueError(f"targets has shape {targets.shape} but ids has {ids.shape}; they must match")
        logits, _, cache = self._forward(ids, None)
        loss, c_loss = self.backend.cross_entropy_forward(logits, targets)
        grads = self._backward(self.backend.cross_entropy_backward(c_loss), cache)
        return loss, grads

    def generate(self, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
        """Prefill `ids` (B, T) once, then sample one token at a time carrying the state.
        temperature 0 is greedy. Returns (B, T + max_new_tokens)."""
        from mmf.models.generate import generate
        return generate(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
