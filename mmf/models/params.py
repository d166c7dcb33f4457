"""Parameter names, shapes and initialisation (docs/equations.md, "Initialisation" and "State-dict
names"). Names are the official state-dict keys, so a released checkpoint maps 1:1; weights are stored
[out, in]."""
import numpy as np

from mmf.checks import FLOAT_DTYPES


def param_shapes(config):
    """Ordered {state-dict name: shape} for a config."""
    V, D, L, I = config.vocab_size, config.hidden_size, config.num_layers, config.intermediate_size
    shapes = {"model.embeddings.weight": (V, D)}
    if config.use_lower_bound:
        shapes["model.lower_bounds"] = (L, D)
    for l in range(L):
        pre = f"model.layers.{l}."
        shapes[pre + "attn_norm.weight"] = (D,)
        for proj in ("i_proj", "f_proj", "g_proj", "o_proj"):
            shapes[pre + f"attn.{proj}.weight"] = (D, D)
            shapes[pre + f"attn.{proj}.norm.weight"] = (D,)
        shapes[pre + "attn.g_norm.weight"] = (D,)
        shapes[pre + "mlp_norm.weight"] = (D,)
        shapes[pre + "mlp.gate_proj.weight"] = (2 * I, D)
        shapes[pre + "mlp.gate_proj.norm.weight"] = (D,)
        shapes[pre + "mlp.down_proj.weight"] = (D, I)
        shapes[pre + "mlp.down_proj.norm.weight"] = (I,)
    shapes["model.norm.weight"] = (D,)
    shapes["lm_head.weight"] = (V, D)
    shapes["lm_head.norm.weight"] = (D,)
    return shapes


def init_params(config, seed, dtype):
    """Official initialisation, roughly: N(0, 0.02) for embeddings, GLU and LM head; Xavier-uniform with
    gain 2^-2.5 for the four MLGRU projections; down_proj further scaled by 1/sqrt(2L) (GPT-2 style);
    every norm gain ones; lower bounds zeros (so lb_l = l/L at init)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("norm.weight"):
            w = np.ones(shape)
        elif name == "model.lower_bounds":
            w = np.zeros(shape)
        elif ".attn." in name:                                  # i/f/g/o_proj: xavier uniform, small gain
            bound = 2 ** -2.5 * np.sqrt(6.0 / (shape[0] + shape[1]))
            w = rng.uniform(-bound, bound, size=shape)
        else:                                                   # embeddings, GLU, LM head
            w = rng.normal(0.0, 0.02, size=shape)
            if name.endswith("down_proj.weight"):
                w /= np.sqrt(2 * config.num_layers)
        params[name] = w.astype(dtype)
    return params


class ParamDict(dict):
    """The model's parameters: a dict keyed by state-dict names that refuses a wrong name, shape or dtype
    on assignment (this is how weights are loaded, so a mistake must fail here, not ten layers later)."""

    def __init__(self, shapes, dtype, values):
        super().__init__()
        self._shapes, self._dtype = shapes, np.dtype(dtype)
        for k, v in values.items():
            self[k] = v

    def __setitem__(self, name, value):
        if name not in self._shapes:
            raise KeyError(f"unknown parameter {name!r}; this model's parameters are the official state-dict "
                           f"names, e.g. {next(iter(self._shapes))!r} (see mmf.models.params.param_shapes)")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a numpy array, got {type(value).__name__}")
        if value.dtype.type not in FLOAT_DTYPES or value.dtype != self._dtype:
            raise TypeError(f"parameter {name!r} has dtype {value.dtype} but the model is {self._dtype}; "
                            f"convert with .astype(np.{self._dtype.name})")
        if value.shape != self._shapes[name]:
            raise ValueError(f"parameter {name!r} has shape {value.shape} but the config needs "
                             f"{self._shapes[name]} ([out, in] for weights)")
        super().__setitem__(name, value)

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v
