"""The Transformer++ baseline (a Llama) and its 1-bit variants, with MMfreeLM's public surface.

    x = embed_tokens[ids];  L blocks (mmf/models/transformer_block.py);  logits = lm_head(rms(x; norm))

One class, variants by configuration (TransformerConfig):
    weights='float'    Transformer++: plain linear projections (= Hugging Face LlamaForCausalLM)
    weights='ternary'  BitNet b1.58: every attention and MLP projection a ternary BitLinear (E3, E4)
    weights='binary'   BitNet: every projection a binary BitLinear (E3b, E4)
    ternary_qk=True    queries and keys ternarized after RoPE: the paper's "MatMul-free Transformer++"
The embedding and the LM head are float in every variant (both BitNet papers keep them so); the LM
head is untied from the embedding.

Decoding: a Transformer's memory of the past is its keys and values, so the `state` carried by
`forward(ids, state, return_state=True)` is the KV cache, a list of L (K, V) pairs (B, H, S, hd) that
grows by one position per token: per-token work and memory grow with the context S (the MatMul-free
model carries L vectors of size D instead). mmf.models.generate works with either state unchanged.
"""
import numpy as np

from mmf.checks import check_token_ids
from mmf.models.base import LanguageModel
from mmf.models.params import ParamDict
from mmf.models.transformer_block import transformer_block_backward, transformer_block_forward
from mmf.models.transformer_config import TransformerConfig
from mmf.models.transformer_params import transformer_init_params, transformer_param_shapes


class TransformerLM(LanguageModel):
    """A Transformer++ LM (Llama semantics) in NumPy, forward and hand-written backward.

    config   -- TransformerConfig; `weights` picks plain (float) or BitLinear (ternary, binary) projections
    seed     -- initialisation seed
    dtype    -- np.float32 (training default) or np.float64 (gradient checks)
    quantize -- None: quantize as the config says; False: run every quantizer off (BitLinears as RMSNorm +
                float linear, Q and K unquantized) with the same parameters -- the float model behind a
                quantized one, which is what finite-difference checks need
    backend  -- 'numpy' (this package), 'numba' (kernels_numba) or a backend instance
    fused    -- recompute the quantized BitLinear input in backward instead of caching it (E5)
    """

    def __init__(self, config, seed=0, dtype=np.float32, quantize=None, backend="numpy", fused=True):
        if quantize not in (None, True, False):
            raise TypeError(f"quantize must be None, True or False, got {quantize!r}")
        self._quantize = quantize is not False
        run_weights = getattr(config, "weights", None) if self._quantize else "float"
        self._setup(config, TransformerConfig, dtype, backend, fused, run_weights)
        shapes = transformer_param_shapes(config)
        self.params = ParamDict(shapes, self.dtype, transformer_init_params(config, seed, self.dtype))

    @property
    def quantize(self):
        """True while the quantizers run (as the config says); False runs them all off, same parameters."""
        return self._quantize

    @quantize.setter
    def quantize(self, on):
        self._quantize = bool(on)
        self.backend.weights = self.config.weights if self._quantize else "float"

    # ------------------------------------------------------------------------
    def _check_state(self, state, B):
        """The KV cache must be what forward returned: L pairs (K, V), each (B, H, S, hd), one S."""
        cfg = self.config
        shape = f"(B={B}, H={cfg.num_heads}, S, hd={cfg.head_dim})"
        if not isinstance(state, (list, tuple)) or len(state) != cfg.num_layers:
            raise ValueError(f"state must be the KV cache returned by forward(..., return_state=True): a list "
                             f"of {cfg.num_layers} (K, V) pairs of shape {shape}")
        S = None
        for l, kv in enumerate(state):
            if not (isinstance(kv, (list, tuple)) and len(kv) == 2 and all(isinstance(a, np.ndarray) for a in kv)):
                raise ValueError(f"state[{l}] must be a (K, V) pair of arrays of shape {shape}")
            for a in kv:
                S = a.shape[2] if (S is None and a.ndim == 4) else S
                if a.shape != (B, cfg.num_heads, S, cfg.head_dim) or a.dtype != self.dtype:
                    raise ValueError(f"state[{l}] holds an array of shape {a.shape} and dtype {a.dtype}; every "
                                     f"K and V must be {shape} with one S for all layers, dtype {self.dtype}")
        return S

    def _forward(self, ids, state):
        cfg, P, ops = self.config, self.params, self.backend
        check_token_ids("ids", ids, cfg.vocab_size)
        B, T = ids.shape
        pos0 = 0 if state is None else self._check_state(state, B)
        if pos0 + T > cfg.max_position_embeddings:
            raise ValueError(f"context of {pos0 + T} tokens ({pos0} cached + {T} new) exceeds "
                             f"max_position_embeddings={cfg.max_position_embeddings}, the longest context this "
                             f"model's KV cache and rotary positions are configured for; shorten the prompt or "
                             f"the generation, or build the model with a larger max_position_embeddings")
        x = P["model.embed_tokens.weight"][ids]                                # (B, T) -> (B, T, D)
        present, block_caches = [], []
        ternary_qk = cfg.ternary_qk and self._quantize
        block_ops = self._block_ops()
        for l in range(cfg.num_layers):
            past = None if state is None else tuple(state[l])
            x, kv, c = transformer_block_forward(x, self.layer_params(l), cfg.num_heads, past, cfg.rms_norm_eps,
                                                 cfg.rope_theta, ternary_qk, block_ops)
            present.append(kv)
            block_caches.append(c)
        xn, c_norm = ops.rmsnorm_forward(x, P["model.norm.weight"], cfg.rms_norm_eps)
        logits, c_head = ops.linear_forward(xn, P["lm_head.weight"])           # (B, T, D) -> (B, T, V), float
        return logits, present, (ids, block_caches, c_norm, c_head)

    @staticmethod
    def hidden_states(cache):
        """The output of every block, [L arrays (B, T, D)], read from a `_forward` cache: block l's output
        is the input of block l+1's first norm, and the last block's is the input of the final norm."""
        _, block_caches, c_norm, _ = cache
        return [c[0][0] for c in block_caches[1:]] + [c_norm[0]]

    def _backward(self, dlogits, cache, dhidden=None):
        """Gradients of every parameter from dlogits (B, T, V). dhidden, optional: [L arrays (B, T, D)],
        gradients on the block outputs (`hidden_states`) from a loss that reads them (distillation)."""
        cfg, ops = self.config, self.backend
        ids, block_caches, c_norm, c_head = cache
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dxn, dW = ops.linear_backward(dlogits, c_head)
        grads["lm_head.weight"] += dW
        dx, dg = ops.rmsnorm_backward(dxn, c_norm)
        grads["model.norm.weight"] += dg
        block_ops = self._block_ops()
        for l in reversed(range(cfg.num_layers)):
            if dhidden is not None:
                dx = dx + dhidden[l]                                  # the block output's own gradient
            dx, dp, _, _ = transformer_block_backward(dx, block_caches[l], block_ops)   # training has no past
            for k, v in dp.items():
                grads[f"model.layers.{l}.{k}"] += v
        np.add.at(grads["model.embed_tokens.weight"], ids.reshape(-1), dx.reshape(-1, cfg.hidden_size))
        return grads
