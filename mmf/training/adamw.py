"""AdamW (Loshchilov & Hutter) with decoupled weight decay, over a dict of named parameters.

    p <- p - lr * wd * p                        (decay, not part of the gradient)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)   with bias-corrected m_hat, v_hat

Weight decay applies to the 2-D projection matrices only; the embedding, the lower bounds and every
norm gain are not decayed (the usual LM practice, and BitNet's).
"""
import numpy as np


def decays(name, p):
    return p.ndim == 2 and name not in ("model.embeddings.weight", "model.lower_bounds")


class AdamW:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        self.params = params                 # the model's dict: updated in place
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
            g = grads[name]
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if wd and decays(name, p):
                p -= (lr * wd) * p
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

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
