"""OneBit's knowledge distillation: train the SVID-initialised model to imitate the float one.

The student keeps, for every compressed weight, a latent float matrix V (N, K) and the two scale
vectors a (N,), b (K,); what its forward runs is the materialised weight
    W_hat = Sign(V) * (a b^T)                                                    (OneBit's layer)
so the model itself is an ordinary float model whose block weights are rewritten before each step.
Every other parameter (embedding, norms, LM head, lower bounds) is trained as it is. When the model's
config says projection_output_norm (OneBit's whole layer, `onebit-ln`), its forward and backward run
the parameter-free LayerNorm after every W_hat, so dW_hat below already includes its backward.

Loss on a batch of training text (teacher: the float model, frozen; M positions, L blocks):
    KL   = mean over positions of KL(softmax(z_T) || softmax(z_S))
    MSE  = mean over blocks and positions of || h_S/|h_S| - h_T/|h_T| ||^2   (block outputs, L2-normalised)
    loss = kl_weight * KL + hidden_weight * MSE
(OneBit: cross-entropy to the teacher's distribution, which differs from KL by the teacher's entropy,
a constant, plus the same normalised hidden-state term; no next-token loss.)

Backward, written out like every layer of mmf: the model's `_backward` gives dW_hat and takes the
hidden-state gradients in at the block outputs; then through W_hat = Sign(V) * a b^T:
    da = (dW_hat * Sign(V)) b,   db = (dW_hat * Sign(V))^T a,
    dV = dW_hat * (a b^T) * (1.001 - tanh(V)^2)       (straight-through estimator: Sign's derivative,
                                                       0 almost everywhere, is replaced by OneBit's
                                                       smooth surrogate 1.001 - tanh^2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from mmf.compression.common import sign
from mmf.text.corpus import get_batch
from mmf.training.adamw import AdamW

STE_FLOOR = 1.001          # OneBit's sign backward: grad * (1.001 - tanh(v)^2)
NORM_EPS = 1e-12           # inside the hidden states' L2 norms


@dataclass
class DistillConfig:
    steps: int = 100                 # optimizer steps (each one batch of batch_size x block_size tokens)
    batch_size: int = 16
    block_size: int = 128
    lr: float = 1e-3                 # peak; linear warmup then cosine to lr * 0.1
    warmup_steps: int = 10
    kl_weight: float = 1.0           # weight of KL(teacher || student) on the logits
    hidden_weight: float = 1.0       # weight of the normalised hidden-state MSE
    latent_init: float = 0.01        # V starts as latent_init * Sign(W) (as the OneBit code does)
    grad_clip: float = 1.0           # global gradient norm clip (0 = off)
    seed: int = 0                    # batch order

    def __post_init__(self):
        for name in ("steps", "batch_size", "block_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"DistillConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"DistillConfig.lr must be in (0, 1), got {self.lr!r}")
        if self.kl_weight < 0 or self.hidden_weight < 0 or self.kl_weight + self.hidden_weight == 0:
            raise ValueError(f"DistillConfig needs kl_weight, hidden_weight >= 0, not both 0; got "
                             f"{self.kl_weight}, {self.hidden_weight}")


# ----------------------------------------------------------------------------------------------
# the loss and its gradient

def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kd_loss(logits_s, logits_t, hidden_s, hidden_t, kl_weight=1.0, hidden_weight=1.0):
    """Returns (loss, {"kl", "mse"}, dlogits_s (B, T, V), [dhidden_s (B, T, D)] * L)."""
    M = logits_s.shape[0] * logits_s.shape[1]                             # positions
    log_ps, log_pt = _log_softmax(logits_s), _log_softmax(logits_t)       # (B, T, V)
    p_t = np.exp(log_pt)
    kl = float(np.sum(p_t * (log_pt - log_ps)) / M)
    dlogits = (kl_weight / M) * (np.exp(log_ps) - p_t)                     # d KL / d z_S
    L = len(hidden_s)
    mse, dhidden = 0.0, []
    for h_s, h_t in zip(hidden_s, hidden_t):
        r_s = np.sqrt(np.sum(h_s * h_s, axis=-1, keepdims=True) + NORM_EPS)   # (B, T, 1)
        r_t = np.sqrt(np.sum(h_t * h_t, axis=-1, keepdims=True) + NORM_EPS)
        n_s, diff = h_s / r_s, h_s / r_s - h_t / r_t                      # (B, T, D)
        mse += float(np.sum(diff * diff)) / (M * L)
        dn = (2.0 * hidden_weight / (M * L)) * diff
        # n = h / r, r = sqrt(|h|^2 + eps): dh = dn / r - n (n . dn) / r
        dhidden.append(dn / r_s - n_s * np.sum(n_s * dn, axis=-1, keepdims=True) / r_s)
    loss = kl_weight * kl + hidden_weight * mse
    return loss, {"kl": kl, "mse": mse}, dlogits, dhidden


# ----------------------------------------------------------------------------------------------
# the student: latent signs and scales behind a float model

class OneBitStudent:
    """A float model whose compressed weights are W_hat = Sign(V) * a b^T, with V, a, b trainable.

    model       a weights='float' model (its block weights are overwritten by `materialize`)
    svid        {name: (a (N,), b (K,), signs (N, K))} from onebit.svid, one per compressed weight
    """

    def __init__(self, model, svid: dict, latent_init=0.01):
        self.model, self.names = model, list(svid)
        dt = model.dtype
        self.params = {k: p for k, p in model.params.items() if k not in svid}   # shared, trained in place
        for name, (a, b, S) in svid.items():
            self.params[name + ".latent"] = (latent_init * S).astype(dt)
            self.params[name + ".row_scale"] = np.asarray(a, dt).copy()
            self.params[name + ".col_scale"] = np.asarray(b, dt).copy()
        self.materialize()

    def materialize(self):
        P = self.params
        for name in self.names:
            self.model.params[name] = (sign(P[name + ".latent"])
                                       * np.outer(P[name + ".row_scale"], P[name + ".col_scale"]))

    def chain(self, model_grads: dict) -> dict:
        """Gradients of the trainable parameters from the model's (dW_hat for the compressed names)."""
        P = self.params
        grads = {k: model_grads[k] for k in P if k in model_grads}
        for name in self.names:
            V, a, b = P[name + ".latent"], P[name + ".row_scale"], P[name + ".col_scale"]
            dWs = model_grads[name] * sign(V)                                  # (N, K)
            grads[name + ".row_scale"] = dWs @ b                               # (N,)
            grads[name + ".col_scale"] = dWs.T @ a                             # (K,)
            grads[name + ".latent"] = model_grads[name] * np.outer(a, b) * (STE_FLOOR - np.tanh(V) ** 2)
        return grads

    def loss_and_grads(self, teacher, ids, kl_weight=1.0, hidden_weight=1.0):
        """One distillation step's loss, its parts and the gradients of every trainable parameter."""
        self.materialize()
        logits_t, _, cache_t = teacher._forward(ids, None)
        logits_s, _, cache_s = self.model._forward(ids, None)
        loss, parts, dlogits, dhidden = kd_loss(logits_s, logits_t, self.model.hidden_states(cache_s),
                                                teacher.hidden_states(cache_t), kl_weight, hidden_weight)
        return loss, parts, self.chain(self.model._backward(dlogits, cache_s, dhidden))


def _lr_at(step, cfg):
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def distill(teacher, student: OneBitStudent, tokens, cfg: DistillConfig, progress=False) -> dict:
    """Run cfg.steps of distillation on random windows of `tokens`; returns the loss history."""
    from mmf.training.trainer import clip_grads
    if teacher.config.vocab_size != student.model.config.vocab_size:
        raise ValueError("teacher and student have different vocabularies")
    opt = AdamW(student.params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    history = {"loss": [], "kl": [], "mse": []}
    bar = tqdm(range(cfg.steps), desc="distill", disable=not progress, dynamic_ncols=True)
    for step in bar:
        x, _ = get_batch(tokens, cfg.batch_size, cfg.block_size, rng)             # (B, T)
        loss, parts, grads = student.loss_and_grads(teacher, x, cfg.kl_weight, cfg.hidden_weight)
        if not np.isfinite(loss):
            raise FloatingPointError(f"distillation loss became {loss} at step {step}; lower lr ({cfg.lr})")
        clip_grads(grads, cfg.grad_clip)
        opt.step(grads, lr=_lr_at(step, cfg))
        history["loss"].append(loss)
        history["kl"].append(parts["kl"])
        history["mse"].append(parts["mse"])
        bar.set_postfix(loss=f"{loss:.4f}")
    student.materialize()
    return history

