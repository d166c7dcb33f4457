"""E10 model: x = Embedding[ids]; L blocks (E9); logits = BitLinear_lm_head(rms(x; norm)).

The embedding is a plain float table (not quantized); the LM head is a ternary BitLinear, untied.
`forward` runs the layers in order and keeps their caches; `_backward` calls the matching backward
functions in exactly the reverse order, accumulating into gradients keyed like the parameters.
"""
import dataclasses

import numpy as np

from mmf.layers.quant import resolve_weights
from mmf.models.base import LanguageModel
from mmf.checks import check_token_ids
from mmf.models.config import MMfreeConfig
from mmf.layers.mlgru import lower_bounds_backward, lower_bounds_forward
from mmf.models.params import ParamDict, init_params, param_shapes


class MMfreeLM(LanguageModel):
    """A MatMul-free LM (HGRNBit semantics) in NumPy.

    config   -- MMfreeConfig; its `weights` field picks the BitLinear format (ternary, binary, float)
    seed     -- initialisation seed
    dtype    -- np.float32 (training default) or np.float64 (gradient checks)
    quantize -- deprecated alias of config.weights: False builds the float model (weights='float'),
                which is what finite-difference checks need
    backend  -- 'numpy' (this package), 'numba' (kernels_numba) or a backend instance
    fused    -- recompute the quantized BitLinear input in backward instead of caching it (E5)
    params   -- {state-dict name: array of `dtype`} to start from instead of the seeded initialisation
                (every parameter of the config, nothing else)

    `MMfreeLM.from_pretrained(dir)` / `model.save_pretrained(dir)` read and write the Hugging Face
    format of the released models (mmf.interop).
    """

    def __init__(self, config, seed=0, dtype=np.float32, quantize=None, backend="numpy", fused=True,
                 params=None):
        if isinstance(config, MMfreeConfig) and quantize is not None and bool(quantize) != (config.weights != "float"):
            config = dataclasses.replace(config, weights=resolve_weights(None, quantize))
        self._setup(config, MMfreeConfig, dtype, backend, fused, getattr(config, "weights", None))
        shapes = param_shapes(config)
        if params is None:
            params = init_params(config, seed, self.dtype)
        elif set(params) != set(shapes):
            missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
            raise KeyError(f"params must hold exactly this config's parameters: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}")
        self.params = ParamDict(shapes, self.dtype, params)

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, backend="numpy"):
        """A model from a Hugging Face directory (config.json with model_type hgrn_bit + model.safetensors
        or shards): the released MMfreeLM-370M/1.3B/2.7B, or one exported by save_pretrained."""
        from mmf.interop.pretrained import load_pretrained
        return load_pretrained(path, dtype=dtype, backend=backend)

    def save_pretrained(self, path, dtype="bfloat16", tokenizer=None, max_shard_bytes=None):
        """Write this model as a Hugging Face directory the official GPU package loads (config.json,
        model.safetensors or shards + index; `tokenizer` an mmf tokenizer -> tokenizer.json).
        Only ternary MatMul-free models have that format."""
        from mmf.interop.pretrained import save_pretrained
        return save_pretrained(self, path, dtype=dtype, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)

    def lower_bounds(self):
        """lb (L, D) from model.lower_bounds (E7), or None when use_lower_bound is off."""
        if not self.config.use_lower_bound:
            return None
        return lower_bounds_forward(self.params["model.lower_bounds"])[0]

    # ------------------------------------------------------------------------
    def _forward(self, ids, state):
        cfg, P, ops = self.config, self.params, self.backend
        check_token_ids("ids", ids, cfg.vocab_size)
        B = ids.shape[0]
        if state is not None:
            if len(state) != cfg.num_layers or any(h.shape != (B, cfg.hidden_size) for h in state):
                raise ValueError(f"state must be a list of {cfg.num_layers} arrays of shape "
                                 f"({B}, {cfg.hidden_size}), one carried MLGRU state per layer")
        lb, S = (lower_bounds_forward(P["model.lower_bounds"]) if cfg.use_lower_bound else (None, None))
        block_ops = self._block_ops()
        x = P["model.embeddings.weight"][ids]                                   # (B, T) -> (B, T, D)
        new_state, block_caches = [], []
        for l in range(cfg.num_layers):
            h0 = state[l] if state is not None else np.zeros((B, cfg.hidden_size), self.dtype)
            lb_l = lb[l] if (lb is not None and l > 0) else None              # layer 0 is unbounded
            x, h_last, c = block_ops.block_forward(x, self.layer_params(l), lb_l, h0, cfg.rms_norm_eps,
                                                   cfg.output_gate)         # mmf.models.block (E9)
            new_state.append(h_last)
            block_caches.append(c)
        xn, c_norm = ops.rmsnorm_forward(x, P["model.norm.weight"], cfg.rms_norm_eps)
        logits, c_head = ops.bitlinear_forward(xn, P["lm_head.weight"], P["lm_head.norm.weight"])  # (B, T, V)
        cache = (ids, S, block_caches, c_norm, c_head)
        return logits, new_state, cache

    @staticmethod
    def hidden_states(cache):
        """The output of every block, [L arrays (B, T, D)], read from a `_forward` cache: block l's output
        is the input of block l+1's first norm, and the last block's is the input of the final norm."""
        _, _, block_caches, c_norm, _ = cache
        return [c[0][0] for c in block_caches[1:]] + [c_norm[0]]

    def _backward(self, dlogits, cache, dhidden=None):
        """Gradients of every parameter from dlogits (B, T, V). dhidden, optional: [L arrays (B, T, D)],
        gradients on the block outputs (`hidden_states`) from a loss that reads them (distillation)."""
        cfg, ops = self.config, self.backend
        ids, S, block_caches, c_norm, c_head = cache
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dxn, dW, dg = ops.bitlinear_backward(dlogits, c_head)
        grads["lm_head.weight"] += dW
        grads["lm_head.norm.weight"] += dg
        dx, dg = ops.rmsnorm_backward(dxn, c_norm)
        grads["model.norm.weight"] += dg
        dlb = np.zeros((cfg.num_layers, cfg.hidden_size), self.dtype) if S is not None else None
        block_ops = self._block_ops()
        for l in reversed(range(cfg.num_layers)):
            if dhidden is not None:
                dx = dx + dhidden[l]                                  # the block output's own gradient
            dx, dp, dlb_l = block_ops.block_backward(dx, block_caches[l])
            for k, v in dp.items():
                grads[f"model.layers.{l}.{k}"] += v
            if dlb_l is not None:
                dlb[l] += dlb_l
        if S is not None:
            grads["model.lower_bounds"] += lower_bounds_backward(dlb, S)
        grads["model.embeddings.weight"] += ops.embedding_backward(ids, dx, cfg.vocab_size)
        return grads
