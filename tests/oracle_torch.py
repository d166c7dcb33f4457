"""An independent PyTorch float64 autograd reference of E1-E11 (docs/equations.md), the oracle for mmf's STE backward.

It shares no code with mmf: it is written from the equations of docs/equations.md alone, and PyTorch's autograd
differentiates it, so mmf's hand-written backward passes are checked against a machine that never saw
them. The straight-through estimator is the usual trick

    x_ste = x + (q(x) - x).detach()          # forward value q(x), backward identity (E5)

Parameters come as a dict of NumPy arrays keyed by the official state-dict names (docs/equations.md), so the very
same numbers load into mmf.MMfreeLM.params and into this oracle.

Every quantizer call records how close any of its codes came to a rounding tie (a fractional part of
|x*s| or |W/beta| near 0.5). Two implementations that agree to 1e-15 can still round a tie apart, so a
comparison is only meaningful when `tie_margin` stays well above the float noise; the tests check it.

Shapes: B batch, T time, D width, I GLU width, V vocab, L layers. Weights are [out, in].
"""
import math

import numpy as np
import torch

EPS = 1e-6   # every RMSNorm here: block norms, g_norm, final norm and the BitLinear norms (E1, E4)


# ----------------------------------------------------------------------------
# E2/E3 quantizers with the straight-through estimator

class Quantizer:
    """The two fake-quantizers of a BitLinear. Remembers the smallest distance of any code to a tie."""

    def __init__(self):
        self.tie_margin = math.inf

    def _record(self, scaled):
        frac = torch.abs(scaled.detach()) % 1.0
        self.tie_margin = min(self.tie_margin, float(torch.min(torch.abs(frac - 0.5))))

    def activations(self, x):
        """E2, per token: s = 127 / max(max|x|, 1e-5); x~ = clip(round(x s), -128, 127) / s."""
        s = 127.0 / torch.clamp(x.detach().abs().amax(dim=-1, keepdim=True), min=1e-5)   # (..., 1)
        self._record(x * s)
        xq = torch.clamp(torch.round(x.detach() * s), -128, 127) / s
        return x + (xq - x).detach()

    def weights(self, W):
        """E3, per tensor: beta = max(mean|W|, 1e-5); W~ = clip(round(W / beta), -1, 1) * beta."""
        beta = torch.clamp(W.detach().abs().mean(), min=1e-5)
        self._record(W / beta)
        Wq = torch.clamp(torch.round(W.detach() / beta), -1, 1) * beta
        return W + (Wq - W).detach()


class BinaryQuantizer(Quantizer):
    """E2 activations as above, and E3b binary weights (BitNet, arXiv 2310.11453) with the STE:
    alpha = mean(W), beta = max(mean|W|, 1e-5), W~ = beta * Sign(W - alpha) with Sign(0) = -1.

    Written without torch.sign (which maps 0 to 0): the sign is +1 exactly where W - alpha > 0. The
    tie to watch is W - alpha near 0, where a float rounding difference flips the sign; `tie_margin`
    also records the smallest |W - alpha| / beta."""

    def weights(self, W):
        Wd = W.detach()
        alpha = Wd.mean()
        beta = torch.clamp(Wd.abs().mean(), min=1e-5)
        centred = Wd - alpha
        self.tie_margin = min(self.tie_margin, float(torch.min(torch.abs(centred)) / beta))
        signs = torch.where(centred > 0, torch.ones_like(Wd), -torch.ones_like(Wd))
        return W + (signs * beta - W).detach()


class NoQuantizer:
    """Both quantizers off (a float model), to compare the forward with mmf's quantize=False."""
    tie_margin = math.inf

    def activations(self, x):
        return x

    def weights(self, W):
        return W


# ----------------------------------------------------------------------------
# E1, E4: RMSNorm and BitLinear

def rmsnorm(x, g, eps=EPS):
    """E1: x / sqrt(mean(x^2) + eps) * g over the last axis."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * g


def bitlinear(x, W, g, quant):
    """E4: y = actquant(rms(x; g, 1e-6)) @ weightquant(W).T   x (..., K), W (N, K) -> (..., N)."""
    return quant.activations(rmsnorm(x, g)) @ quant.weights(W).T


# ----------------------------------------------------------------------------
# E6-E8: MLGRU token mixer, lower bounds, GLU channel mixer

def lower_bounds(P):
    """E7: S = softmax(P over layers); lb = cumsum(S) - S[0].   (L, D) -> (L, D)"""
    S = torch.softmax(P, dim=0)
    return torch.cumsum(S, dim=0) - S[0]


def mlgru(xn, p, lb, quant):
    """E6 over a whole sequence from h = 0. xn (B, T, D); lb (D,) or None for layer 0."""
    i = bitlinear(xn, p["i_proj.weight"], p["i_proj.norm.weight"], quant)
    f = torch.sigmoid(bitlinear(xn, p["f_proj.weight"], p["f_proj.norm.weight"], quant))
    if lb is not None:
        f = lb + (1 - lb) * f
    i = torch.nn.functional.silu(i) * (1 - f)
    h, hs = torch.zeros_like(xn[:, 0]), []                        # (B, D)
    for t in range(xn.shape[1]):
        h = f[:, t] * h + i[:, t]
        hs.append(h)
    h = torch.stack(hs, dim=1)                                    # (B, T, D)
    g = bitlinear(xn, p["g_proj.weight"], p["g_proj.norm.weight"], quant)
    o = rmsnorm(g, p["g_norm.weight"]) * torch.nn.functional.silu(h)
    return bitlinear(o, p["o_proj.weight"], p["o_proj.norm.weight"], quant)


def glu(xn, p, quant):
    """E8: one gate_proj D -> 2I (one weight scale for both halves), [gate | up], then down_proj."""
    gate, up = bitlinear(xn, p["gate_proj.weight"], p["gate_proj.norm.weight"], quant).chunk(2, dim=-1)
    return bitlinear(torch.nn.functional.silu(gate) * up, p["down_proj.weight"], p["down_proj.norm.weight"], quant)


# ----------------------------------------------------------------------------
# E9-E11: block, model, loss

def below(params, prefix):
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def model_logits(params, ids, quant):
    """E10: embedding (not quantized) -> L blocks (E9) -> final norm -> ternary LM head.  (B, T) -> (B, T, V)"""
    L = sum(1 for k in params if k.endswith(".attn_norm.weight"))
    lb = lower_bounds(params["model.lower_bounds"]) if "model.lower_bounds" in params else None
    x = params["model.embeddings.weight"][ids]                    # (B, T, D)
    for l in range(L):
        p = below(params, f"model.layers.{l}.")
        lb_l = lb[l] if (lb is not None and l > 0) else None       # layer 0 is unbounded
        r = x + mlgru(rmsnorm(x, p["attn_norm.weight"]), below(p, "attn."), lb_l, quant)
        x = r + glu(rmsnorm(r, p["mlp_norm.weight"]), below(p, "mlp."), quant)
    return bitlinear(rmsnorm(x, params["model.norm.weight"]), params["lm_head.weight"],
                     params["lm_head.norm.weight"], quant)


def to_torch(params):
    return {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True) for k, v in params.items()}


def make_quantizer(quantize=True, weights=None):
    """The quantizer for a weight format: 'ternary' (E3), 'binary' (E3b) or 'float' (none).
    `quantize` is the boolean spelling (True = ternary, False = float), used when weights is None."""
    if weights is None:
        weights = "ternary" if quantize else "float"
    return {"ternary": Quantizer, "binary": BinaryQuantizer, "float": NoQuantizer}[weights]()


def oracle_loss_and_grads(params, ids, targets, quantize=True, weights=None):
    """E11 mean cross-entropy and autograd gradients for every parameter.

    params: {state-dict name: array}; ids, targets (B, T) ints. Returns
    (loss float, logits (B, T, V) ndarray, grads {name: ndarray}, tie_margin float)."""
    quant = make_quantizer(quantize, weights)
    tp = to_torch(params)
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    logits = model_logits(tp, ids_t, quant)                       # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in tp.items()}
    return float(loss.detach()), logits.detach().numpy(), grads, quant.tie_margin


def oracle_bitlinear(x, W, g, dy, quantize=True, weights=None):
    """One BitLinear: y and the gradients of sum(y * dy). Returns (y, dx, dW, dg, tie_margin)."""
    quant = make_quantizer(quantize, weights)
    xt, Wt, gt = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (x, W, g))
    y = bitlinear(xt, Wt, gt, quant)
    (y * torch.as_tensor(np.asarray(dy, np.float64))).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(), gt.grad.numpy(), quant.tie_margin


# ----------------------------------------------------------------------------
# Comparison

def rel_error(a, b):
    """Norm-wise relative error ||a - b|| / (||a|| + ||b||): one number per tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def max_elementwise_error(a, b):
    """max_k |a_k - b_k| / max_k |b_k|: the worst single entry, on the scale of the reference tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return 0.0 if scale == 0 else float(np.max(np.abs(a - b)) / scale)


def compare(ours, ref, tol=1e-5):
    """ours, ref: {name: array} with the same names. Returns (ok, {name: (rel_error, max_elementwise)});
    ok is True when every tensor is within tol by both measures."""
    if set(ours) != set(ref):
        raise ValueError(f"tensor names differ: only ours {sorted(set(ours) - set(ref))}, "
                         f"only reference {sorted(set(ref) - set(ours))}")
    report = {}
    for name in ref:
        if np.shape(ours[name]) != np.shape(ref[name]):
            raise ValueError(f"{name}: shape {np.shape(ours[name])} vs reference {np.shape(ref[name])}")
        report[name] = (rel_error(ours[name], ref[name]), max_elementwise_error(ours[name], ref[name]))
    ok = all(r < tol and m < tol for r, m in report.values())
    return ok, report
