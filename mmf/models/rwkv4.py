"""The paper's third contender: a MatMul-free RWKV-4 (Zhu et al. 2024, Table 1), i.e. RWKV-4 (Peng et
al. 2023) with every dense layer a BitLinear (E4; ternary weights by default, E3). docs/equations.md, R5.

    x = emb[ids];  x = LayerNorm_ln0(x)                                     (block 0 only)
    per block l:   x = x + TimeMixing(LayerNorm_ln1(x))                      (token mixer, WKV)
                   x = x + ChannelMixing(LayerNorm_ln2(x))                   (squared-ReLU MLP)
    logits = BitLinear_head(LayerNorm_ln_out(x))

The mixers are in mmf/layers/rwkv4_mixing.py, the WKV recurrence in mmf/layers/wkv.py.

Choices, and why:
  * LayerNorm, as RWKV-4 has it (ln0, ln1, ln2, ln_out with gain and bias), not the RMSNorm of the
    MatMul-free LM: the paper's MatMul-free RWKV-4 changes RWKV-4's dense layers only. Every BitLinear
    still carries its own RMSNorm (E4), exactly as in the MLGRU model.
  * The embedding is a float table and the head a BitLinear with the config's weights, as in the
    MatMul-free LM (E10), so the two models differ only in their blocks.
  * weights='float' switches the quantizers off but keeps each BitLinear's RMSNorm: the same network
    unquantized (what finite differences need), not the original RWKV-4, whose projections are plain.
  * Parameter names are RWKV-4's state-dict names (emb.weight, blocks.{l}.att.time_decay, ...,
    head.weight); a BitLinear adds its norm gain as NAME.norm.weight, and the time_* vectors are (D,)
    where RWKV-4 stores (1, 1, D).
  * Initialisation: RWKV-4's for the time_* parameters (decays spread over channels from slow to fast,
    more of them slow in deeper layers; mixes leaning to the current token in deeper layers), RWKV-4's
    tiny uniform embedding (ln0 rescales it); N(0, 0.02) for the projections, the two that write into
    the residual stream (att.output, ffn.value) scaled by 1/sqrt(2L) as MMfree's down_proj is.

Decoding state per layer (`RWKV4State`): the last normalized input of each mixer (for the token shift)
and the WKV numerator, denominator and max exponent per channel: five (B, D) arrays, O(1) in the
length of the text, so mmf/models/generate.py runs this model unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import numpy as np

from mmf.backend import get_backend
from mmf.checks import check_token_ids
from mmf.layers.quant import check_weights, resolve_weights
from mmf.layers.rwkv4_mixing import (CHANNEL_MIX_PROJECTIONS, TIME_MIX_PROJECTIONS, channel_mixing_backward,
                                     channel_mixing_forward, time_mixing_backward, time_mixing_forward)
from mmf.layers.wkv import wkv_initial_state
from mmf.models.block import sub_dict
from mmf.models.params import ParamDict


# ----------------------------------------------------------------------------------------------
# configuration

@dataclass
class RWKV4Config:
    arch: ClassVar[str] = "rwkv4"             # the architecture's name in checkpoints and on the command line
    vocab_size: int                           # V: number of token ids the embedding and head know
    hidden_size: int                          # D: model width (time-mixing projections are D x D)
    num_layers: int                           # L: number of blocks (time mixing + channel mixing)
    intermediate_size: Optional[int] = None   # F: channel-mixing width; None -> 4 D, RWKV-4's choice
    layer_norm_eps: float = 1e-5              # eps of the LayerNorms (BitLinear norms always use 1e-6, E4)
    weights: str = "ternary"                  # every BitLinear's weight format: 'ternary' (E3), 'binary' (E3b), 'float'

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"RWKV4Config.{name} must be an int, got {type(value).__name__} ({value!r})")
            if value <= 0:
                raise ValueError(f"RWKV4Config.{name} must be positive, got {value}")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        elif isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int):
            raise TypeError(f"RWKV4Config.intermediate_size must be an int or None (= 4 * hidden_size), "
                            f"got {type(self.intermediate_size).__name__}")
        elif self.intermediate_size <= 0:
            raise ValueError(f"RWKV4Config.intermediate_size must be positive, got {self.intermediate_size}")
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool) \
                or not (0 < float(self.layer_norm_eps) < 1):
            raise ValueError(f"RWKV4Config.layer_norm_eps must be a float in (0, 1), got {self.layer_norm_eps!r}")
        self.layer_norm_eps = float(self.layer_norm_eps)
        check_weights(self.weights, "RWKV4Config.weights")


# ----------------------------------------------------------------------------------------------
# parameters

def param_shapes(config):
    """Ordered {state-dict name: shape} for a config."""
    V, D, L, F = config.vocab_size, config.hidden_size, config.num_layers, config.intermediate_size
    shapes = {"emb.weight": (V, D), "blocks.0.ln0.weight": (D,), "blocks.0.ln0.bias": (D,)}
    for l in range(L):
        pre = f"blocks.{l}."
        for ln in ("ln1", "ln2"):
            shapes[pre + ln + ".weight"] = (D,)
            shapes[pre + ln + ".bias"] = (D,)
        for name in ("time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r"):
            shapes[pre + "att." + name] = (D,)
        for proj in TIME_MIX_PROJECTIONS:
            shapes[pre + f"att.{proj}.weight"] = (D, D)
            shapes[pre + f"att.{proj}.norm.weight"] = (D,)
        shapes[pre + "ffn.time_mix_k"] = (D,)
        shapes[pre + "ffn.time_mix_r"] = (D,)
        ffn_shapes = {"key": (F, D), "receptance": (D, D), "value": (D, F)}
        for proj in CHANNEL_MIX_PROJECTIONS:
            shapes[pre + f"ffn.{proj}.weight"] = ffn_shapes[proj]
            shapes[pre + f"ffn.{proj}.norm.weight"] = (ffn_shapes[proj][1],)
    shapes["ln_out.weight"] = (D,)
    shapes["ln_out.bias"] = (D,)
    shapes["head.weight"] = (V, D)
    shapes["head.norm.weight"] = (D,)
    return shapes


def _time_init(config, l):
    """RWKV-4's initialisation of one layer's time_* vectors, {name below blocks.{l}.: (D,)}."""
    D, L = config.hidden_size, config.num_layers
    depth = l / (L - 1) if L > 1 else 0.0                   # 0 at the first layer, 1 at the last
    shallow = 1.0 - l / L                                    # 1 at the first layer, 1/L at the last
    channel = np.arange(D) / D                               # (D,) in [0, 1)
    decay_pos = np.arange(D) / max(D - 1, 1)
    zigzag = 0.5 * ((np.arange(D) + 1) % 3 - 1)              # -0.5, 0, 0.5, ... so neighbours differ
    return {
        "att.time_decay": -5.0 + 8.0 * decay_pos ** (0.7 + 1.3 * depth),   # w = -exp(.): e^-0.007 ... e^-20
        "att.time_first": math.log(0.3) + zigzag,
        "att.time_mix_k": channel ** shallow,
        "att.time_mix_v": channel ** shallow + 0.3 * depth,
        "att.time_mix_r": channel ** (0.5 * shallow),
        "ffn.time_mix_k": channel ** shallow,
        "ffn.time_mix_r": channel ** shallow,
    }


def init_params(config, seed, dtype):
    rng = np.random.default_rng(seed)
    params = {}
    time = {l: _time_init(config, l) for l in range(config.num_layers)}
    for name, shape in param_shapes(config).items():
        if name == "emb.weight":
            w = rng.uniform(-1e-4, 1e-4, size=shape)        # RWKV-4's small embedding, rescaled by ln0
        elif name.endswith(".weight") and name.split(".")[-2] in ("norm", "ln0", "ln1", "ln2", "ln_out"):
            w = np.ones(shape)                              # every norm gain (BitLinear RMSNorms, LayerNorms)
        elif name.endswith(".bias"):
            w = np.zeros(shape)
        elif ".time_" in name:
            l = int(name.split(".")[1])
            w = time[l][name.split(".", 2)[2]]
        else:                                               # the BitLinear weights
            w = rng.normal(0.0, 0.02, size=shape)
            if name.endswith("att.output.weight") or name.endswith("ffn.value.weight"):
                w /= np.sqrt(2 * config.num_layers)
        params[name] = np.asarray(w, dtype=np.float64).astype(dtype)
    return params


# ----------------------------------------------------------------------------------------------
# one block

class RWKV4State(NamedTuple):
    """One layer's decoding state, every field (B, D)."""
    att_shift: np.ndarray    # the time mixer's last normalized input (its token shift's x_{t-1})
    num: np.ndarray          # WKV numerator a (scaled by e^-max_exp)
    den: np.ndarray          # WKV denominator b (scaled by e^-max_exp)
    max_exp: np.ndarray      # WKV running maximum exponent p
    ffn_shift: np.ndarray    # the channel mixer's last normalized input


def initial_state(batch, width, dtype):
    """The state before any token: zero shifts, the empty WKV past."""
    a, b, p = wkv_initial_state(batch, width, dtype)
    return RWKV4State(np.zeros((batch, width), dtype), a, b, p, np.zeros((batch, width), dtype))


def block_forward(x, p, state, eps, ops, first=False):
    """x (B, T, D), one layer's params below `blocks.{l}.` and RWKV4State -> out (B, T, D), new state, cache."""
    c_ln0 = None
    if first:
        x, c_ln0 = ops.layernorm_forward(x, p["ln0.weight"], p["ln0.bias"], eps)
    xn, c_ln1 = ops.layernorm_forward(x, p["ln1.weight"], p["ln1.bias"], eps)          # (B, T, D)
    a, (att_shift, wkv), c_att = time_mixing_forward(xn, sub_dict(p, "att."), state.att_shift,
                                                     (state.num, state.den, state.max_exp), ops)
    r = x + a                                                                          # residual 1
    rn, c_ln2 = ops.layernorm_forward(r, p["ln2.weight"], p["ln2.bias"], eps)
    m, ffn_shift, c_ffn = channel_mixing_forward(rn, sub_dict(p, "ffn."), state.ffn_shift, ops)
    out = r + m                                                                        # residual 2
    cache = (c_ln0, c_ln1, c_att, c_ln2, c_ffn)
    return out, RWKV4State(att_shift, *wkv, ffn_shift), cache


def block_backward(dout, cache, ops):
    """Returns dx (B, T, D) and dp (dict keyed below `blocks.{l}.`)."""
    c_ln0, c_ln1, c_att, c_ln2, c_ffn = cache
    dp = {}
    drn, dp_ffn, _ = channel_mixing_backward(dout, c_ffn, ops=ops)
    dr_norm, dp["ln2.weight"], dp["ln2.bias"] = ops.layernorm_backward(drn, c_ln2)
    dr = dout + dr_norm                                                                # both paths into r
    dxn, dp_att, _ = time_mixing_backward(dr, c_att, ops=ops)
    dx_norm, dp["ln1.weight"], dp["ln1.bias"] = ops.layernorm_backward(dxn, c_ln1)
    dx = dr + dx_norm
    if c_ln0 is not None:
        dx, dp["ln0.weight"], dp["ln0.bias"] = ops.layernorm_backward(dx, c_ln0)
    dp.update({"att." + k: v for k, v in dp_att.items()})
    dp.update({"ffn." + k: v for k, v in dp_ffn.items()})
    return dx, dp


# ----------------------------------------------------------------------------------------------
# the model

class RWKV4LM:
    """A MatMul-free RWKV-4 language model in NumPy, with MMfreeLM's public surface.

    config   -- RWKV4Config; its `weights` field picks the BitLinear format (ternary, binary, float)
    seed     -- initialisation seed
    dtype    -- np.float32 (training default) or np.float64 (gradient checks)
    backend  -- 'numpy' (this package), 'numba' (kernels_numba: the BitLinears, norms inside them,
                sigmoid and loss) or a backend instance
    fused    -- recompute the quantized BitLinear input in backward instead of caching it (E5)
    """

    def __init__(self, config, seed=0, dtype=np.float32, backend="numpy", fused=True):
        if not isinstance(config, RWKV4Config):
            raise TypeError(f"config must be an mmf.RWKV4Config, got {type(config).__name__}")
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype}")
        self.config = config
        self.dtype = np.dtype(dtype)
        self.backend = get_backend(backend, config.weights, fused)
        if self.backend.weights != config.weights:
            raise ValueError(f"the backend instance runs weights={self.backend.weights!r} but the config says "
                             f"{config.weights!r}; build the backend with weights={config.weights!r}")
        self.params = ParamDict(param_shapes(config), self.dtype, init_params(config, seed, self.dtype))

    @property
    def weights(self):
        """The BitLinear weight format: 'ternary', 'binary' or 'float' (config.weights)."""
        return self.config.weights

    @property
    def quantize(self):
        """True unless the model is float (the older boolean spelling of weights)."""
        return self.config.weights != "float"

    @quantize.setter
    def quantize(self, on):
        self.set_weights("ternary" if on else "float")

    def set_weights(self, weights):
        """Run the same parameters in another weight format (e.g. the float model behind a ternary one)."""
        self.config = dataclasses.replace(self.config, weights=resolve_weights(weights))
        self.backend.weights = self.config.weights

    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def layer_params(self, l):
        """The dict of block l's parameters, keyed below `blocks.{l}.`."""
        return sub_dict(self.params, f"blocks.{l}.")

    def initial_state(self, batch):
        """The decoding state before any token: a list of L RWKV4State."""
        return [initial_state(batch, self.config.hidden_size, self.dtype) for _ in range(self.config.num_layers)]

    def _check_state(self, state, batch):
        L, D = self.config.num_layers, self.config.hidden_size
        what = (f"state must be a list of {L} RWKV4State (att_shift, num, den, max_exp, ffn_shift), one per "
                f"layer, each field a {self.dtype} array of shape ({batch}, {D}) -- pass back what "
                f"forward(..., return_state=True) returned")
        if not isinstance(state, (list, tuple)) or len(state) != L:
            raise ValueError(f"{what}; got {type(state).__name__}"
                             + (f" of length {len(state)}" if isinstance(state, (list, tuple)) else ""))
        checked = []
        for l, s in enumerate(state):
            if not isinstance(s, tuple) or len(s) != len(RWKV4State._fields):
                raise ValueError(f"{what}; layer {l} holds {type(s).__name__}")
            for field, a in zip(RWKV4State._fields, s):
                if not isinstance(a, np.ndarray) or a.shape != (batch, D) or a.dtype != self.dtype:
                    got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                    raise ValueError(f"{what}; layer {l} field {field} is {got}")
            checked.append(RWKV4State(*s))
        return checked

    # ------------------------------------------------------------------------
    def _forward(self, ids, state):
        cfg, P, ops = self.config, self.params, self.backend
        check_token_ids("ids", ids, cfg.vocab_size)
        B = ids.shape[0]
        state = self.initial_state(B) if state is None else self._check_state(state, B)
        x = P["emb.weight"][ids]                                                # (B, T) -> (B, T, D)
        new_state, block_caches = [], []
        for l in range(cfg.num_layers):
            x, s, c = block_forward(x, self.layer_params(l), state[l], cfg.layer_norm_eps, ops, first=(l == 0))
            new_state.append(s)
            block_caches.append(c)
        xn, c_out = ops.layernorm_forward(x, P["ln_out.weight"], P["ln_out.bias"], cfg.layer_norm_eps)
        logits, c_head = ops.bitlinear_forward(xn, P["head.weight"], P["head.norm.weight"])     # (B, T, V)
        return logits, new_state, (ids, block_caches, c_out, c_head)

    def forward(self, ids, state=None, return_state=False):
        """ids (B, T) int -> logits (B, T, V). With return_state=True also returns the state after the
        last token (a list of L RWKV4State); passing it back as `state` continues the sequence, so a
        prompt is prefilled once and then decoded one token at a time with O(1) work per token."""
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

    def _backward(self, dlogits, cache):
        cfg, ops = self.config, self.backend
        ids, block_caches, c_out, c_head = cache
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dxn, grads["head.weight"], grads["head.norm.weight"] = ops.bitlinear_backward(dlogits, c_head)
        dx, grads["ln_out.weight"], grads["ln_out.bias"] = ops.layernorm_backward(dxn, c_out)
        for l in reversed(range(cfg.num_layers)):
            dx, dp = block_backward(dx, block_caches[l], ops)
            for k, v in dp.items():
                grads[f"blocks.{l}.{k}"] += v
        np.add.at(grads["emb.weight"], ids.reshape(-1), dx.reshape(-1, cfg.hidden_size))
        return grads

    # ------------------------------------------------------------------------
    def generate(self, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
        """Prefill `ids` (B, T) once, then sample one token at a time carrying the state.
        temperature 0 is greedy. Returns (B, T + max_new_tokens)."""
        from mmf.models.generate import generate
        return generate(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
