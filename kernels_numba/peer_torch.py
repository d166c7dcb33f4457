"""The PyTorch peer of the benchmark: the MMfree LM's training math (E1-E11, docs/equations.md) written
the way a PyTorch user would write it, so that `python -m kernels_numba.bench --peers` can time mmf
beside it.

It is an ordinary `nn.Module` with the official semantics (what the released checkpoints compute):

    BitLinear(x) = F.linear(x~, W~)   x~ = absmax int8 fake-quant of RMSNorm(x) (E1, E2),
                                      W~ = absmean ternary fake-quant of W (E3),
                                      both with the straight-through estimator  v + (q(v) - v).detach()  (E5)
    MLGRU: i, f, g projections, f lifted by the layer's lower bound (E7), h_t = f_t h_{t-1} + i_t as a
           plain loop over T (E6), o = RMSNorm(g) * SiLU(h), o_proj
    GLU:   gate_proj D -> 2I split into [gate | up], down_proj(SiLU(gate) * up) (E8)
    block: pre-norm residuals (E9); model: embedding, L blocks, final norm, ternary LM head (E10);
    mean cross-entropy (E11); torch.optim.AdamW with decay on the 2-D projections only.

Parameter names are the checkpoint names (`model.layers.0.attn.i_proj.weight`, ...), so mmf's
`model.params` load into it unchanged (`from_mmf`). Nothing here is deliberately slow: the
recurrence is the plain per-step loop (the baseline a user writes first), everything else is one
PyTorch call per equation, and `torch.compile` can take the module as it is.

This file imports torch: only the benchmark's peer processes and the tests import it (torch is a
dev-only dependency, requirements-dev.txt); mmf and the rest of kernels_numba never do.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BITLINEAR_EPS = 1e-6      # every BitLinear's own RMSNorm (E4)
ACT_QMAX, ACT_EPS, WEIGHT_EPS = 127.0, 1e-5, 1e-5   # E2 / E3 constants


class BitLinear(nn.Linear):
    """E4: RMSNorm (its own gain, `norm.weight`) -> int8 activations -> ternary weights, STE (E5)."""

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, bias=False)
        self.norm = nn.RMSNorm(in_features, eps=BITLINEAR_EPS)
        self.frozen = False            # True after freeze_(): weight already holds W~ (inference)

    def forward(self, x):
        x = self.norm(x)
        s = ACT_QMAX / x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)   # E2, per token
        x = x + ((x.detach() * s).round().clamp(-128, 127) / s - x).detach()
        w = self.weight
        if not self.frozen:
            beta = w.detach().abs().mean().clamp(min=WEIGHT_EPS)                     # E3, per tensor
            w = w + ((w.detach() * (1.0 / beta)).round().clamp(-1, 1) * beta - w).detach()
        return F.linear(x, w)

    @torch.no_grad()
    def freeze_(self):
        """Replace W by W~ once (inference: what a deployment keeps instead of re-quantizing per call)."""
        beta = self.weight.abs().mean().clamp(min=WEIGHT_EPS)
        self.weight.copy_((self.weight * (1.0 / beta)).round().clamp(-1, 1) * beta)
        self.frozen = True


class MLGRU(nn.Module):
    """E6 token mixer (official output gate rms(g) * SiLU(h)); x is the block's pre-normed input."""

    def __init__(self, D, eps):
        super().__init__()
        self.i_proj, self.f_proj, self.g_proj, self.o_proj = (BitLinear(D, D) for _ in range(4))
        self.g_norm = nn.RMSNorm(D, eps=eps)

    def forward(self, x, lower_bound=None, h=None):
        f = torch.sigmoid(self.f_proj(x))                          # (B, T, D)
        if lower_bound is not None:                                # E7 (layers after the first)
            f = lower_bound + (1 - lower_bound) * f
        i = F.silu(self.i_proj(x)) * (1 - f)
        h = x.new_zeros(x.shape[0], x.shape[2]) if h is None else h   # (B, D)
        hs = []
        for t in range(x.shape[1]):                                # the recurrence, one step per token
            h = f[:, t] * h + i[:, t]
            hs.append(h)
        h = torch.stack(hs, dim=1)                                 # T x (B, D) -> (B, T, D)
        o = self.g_norm(self.g_proj(x)) * F.silu(h)
        return self.o_proj(o), h[:, -1]


class GLU(nn.Module):
    """E8: one gate_proj D -> 2I ([gate | up], one weight scale), then down_proj I -> D."""

    def __init__(self, D, I):
        super().__init__()
        self.gate_proj, self.down_proj = BitLinear(D, 2 * I), BitLinear(I, D)

    def forward(self, x):
        gate, up = self.gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """E9: x + MLGRU(rms(x)), then + GLU(rms(.))."""

    def __init__(self, D, I, eps):
        super().__init__()
        self.attn_norm, self.attn = nn.RMSNorm(D, eps=eps), MLGRU(D, eps)
        self.mlp_norm, self.mlp = nn.RMSNorm(D, eps=eps), GLU(D, I)

    def forward(self, x, lower_bound=None, h=None):
        a, h = self.attn(self.attn_norm(x), lower_bound, h)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), h


class Backbone(nn.Module):
    def __init__(self, V, D, L, I, eps, use_lower_bound):
        super().__init__()
        self.embeddings = nn.Embedding(V, D)
        self.layers = nn.ModuleList(Block(D, I, eps) for _ in range(L))
        self.norm = nn.RMSNorm(D, eps=eps)
        self.lower_bounds = nn.Parameter(torch.zeros(L, D)) if use_lower_bound else None


class MMfreeTorch(nn.Module):
    """The MMfree LM. forward(ids) -> logits (B, T, V); forward(ids, targets) -> mean cross-entropy."""

    def __init__(self, vocab_size, hidden_size, num_layers, intermediate_size, rms_norm_eps=1e-6,
                 use_lower_bound=True):
        super().__init__()
        self.model = Backbone(vocab_size, hidden_size, num_layers, intermediate_size, rms_norm_eps,
                              use_lower_bound)
        self.lm_head = BitLinear(hidden_size, vocab_size)

    @classmethod
    def from_mmf(cls, mmf_model, dtype=torch.float32):
        """The same network with mmf_model's parameters (copied), in `dtype`."""
        cfg = mmf_model.config
        if cfg.output_gate != "official" or cfg.weights != "ternary":
            raise ValueError(f"the PyTorch peer runs ternary weights with the official output gate; this model "
                             f"has weights={cfg.weights!r}, output_gate={cfg.output_gate!r}")
        net = cls(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.intermediate_size, cfg.rms_norm_eps,
                  cfg.use_lower_bound).to(dtype)                    # first: load_state_dict copies into it
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mmf_model.params.items()})
        return net

    def forward(self, ids, targets=None, state=None, last_only=False):
        """ids (B, T) int64 -> (logits (B, T, V), [L final states (B, D)]), or with targets (B, T) the
        mean cross-entropy. state: None or [L tensors (B, D)] carried MLGRU states (inference);
        last_only: logits of the last token only, (B, 1, V) (a prefill needs no others)."""
        m = self.model
        lb = None
        if m.lower_bounds is not None:                             # E7: softmax over layers, cumulative
            S = torch.softmax(m.lower_bounds, dim=0)
            lb = torch.cumsum(S, dim=0) - S[0]                     # (L, D), lb[0] = 0
        x = m.embeddings(ids)                                      # (B, T) -> (B, T, D)
        new_state = []
        for l, block in enumerate(m.layers):
            x, h = block(x, lb[l] if (lb is not None and l > 0) else None, None if state is None else state[l])
            new_state.append(h)
        logits = self.lm_head(m.norm(x[:, -1:] if last_only else x))   # (B, T or 1, V)
        if targets is None:
            return logits, new_state
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def freeze_(self):
        """Inference form: every W~ computed once (BitLinear.freeze_)."""
        for mod in self.modules():
            if isinstance(mod, BitLinear):
                mod.freeze_()
        return self


def adamw(net, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **options):
    """torch.optim.AdamW with mmf's grouping (mmf/training/adamw.py): weight decay on 2-D projection
    weights, none on the embedding, the lower bounds and the norm gains."""
    decay, rest = [], []
    for name, p in net.named_parameters():
        no_decay = p.ndim != 2 or name in ("model.embeddings.weight", "model.lower_bounds")
        (rest if no_decay else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps, **options)
