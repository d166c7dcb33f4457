"""AdamW (Loshchilov & Hutter) with decoupled weight decay, over a dict of named parameters.

    p <- p - lr * wd * p                        (decay, not part of the gradient)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)   with bias-corrected m_hat, v_hat

Weight decay applies to the 2-D projection matrices only; the embedding, the lower bounds and every
norm gain are not decayed (the usual LM practice, and BitNet's).

`adamw_update` is the update of one parameter; AdamW runs it over the dict. A backend may run the
same update with its own kernel (`ops`, e.g. the model's backend: kernels_numba makes it one
parallel pass per parameter instead of ~12 NumPy passes), with the same float32 operations.
"""
import numpy as np


def decays(name, p):
    return p.ndim == 2 and name not in ("model.embeddings.weight", "model.lower_bounds")


def adamw_update(p, g, m, v, lr, decay, b1, b2, eps, c1, c2):
    """One AdamW update of parameter p with gradient g, in place on p, m, v. decay is lr * wd (0 for
    parameters that do not decay); c1, c2 the bias corrections 1 - b1^t, 1 - b2^t."""
    m *= b1
    m += (1.0 - b1) * g
    v *= b2
    v += (1.0 - b2) * (g * g)
    if decay:
        p -= decay * p
    p -= lr * (m / c1) / (np.sqrt(v / c2) + eps)


class AdamW:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, ops=None):
        """ops: an object with an `adamw_update` method of adamw_update's signature (a model's backend);
        None runs the NumPy function above."""
        if ops is not None and not callable(getattr(ops, "adamw_update", None)):
            raise TypeError(f"ops must have an adamw_update method (a model's backend, e.g. model.backend), "
                            f"got {type(ops).__name__}")
        self.params = params                 # the model's dict: updated in place
        self.update = adamw_update if ops is None else ops.adamw_update
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads, lr=None, weight_decay=None):
        """One update. lr / weight_decay override the defaults for this step (schedules pass them)."""
        lr = self.lr if lr is None else lr
        wd = self.weight_decay if weight_decay is None else weight_decay
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t      # bias corrections
        for name, p in self.params.items():
            decay = lr * wd if (wd and decays(name, p)) else 0.0
            self.update(p, grads[name], self.m[name], self.v[name], lr, decay, b1, b2, self.eps, c1, c2)

    def state_dict(self):
        return {"t": self.t, "m": {k: a.copy() for k, a in self.m.items()},
                "v": {k: a.copy() for k, a in self.v.items()}}

    def load_state_dict(self, state):
        if set(state["m"]) != set(self.params) or set(state["v"]) != set(self.params):
            raise ValueError("optimizer state does not match the model's parameter names")
        for k in self.params:
            if state["m"][k].shape != self.params[k].shape or state["v"][k].shape != self.params[k].shape:
                raise ValueError(f"optimizer state for {k!r} has shape {state['m'][k].shape}, "
                                 f"parameter has {self.params[k].shape}")
        self.t = int(state["t"])
        self.m = {k: np.array(a, dtype=self.params[k].dtype) for k, a in state["m"].items()}
        self.v = {k: np.array(a, dtype=self.params[k].dtype) for k, a in state["v"].items()}
