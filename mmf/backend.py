"""The one switch between the NumPy reference and the Numba kernels.

The model and the mixers never call a BitLinear, norm, scan or gate nonlinearity directly: they
call them through a backend object. `NumpyBackend` is the reference (this package, NumPy only).
The fast tier, `kernels_numba.backend.NumbaBackend`, subclasses it and overrides what it
accelerates with the same signatures, each override proven equal to the method it replaces.

How mmf reaches the fast tier: a lazy import by name. `get_backend("numba")` imports
`kernels_numba.backend` inside the function, the first time a user asks for it. We chose this over a
registry (where kernels_numba would register itself with mmf on import) because the dependency goes one
way: kernels_numba imports mmf (it subclasses NumpyBackend and is tested against it), mmf never imports
kernels_numba at module level, so `import mmf` works with NumPy alone, has no import cycle, and needs no
import-order side effect for `backend="numba"` to work. tests/test_imports.py checks both halves.

The backend also carries two model-wide modes:
  weights  -- 'ternary' (E3), 'binary' (E3b) or 'float' (E2/E3 off: plain float layers, for the float
              baselines and so finite differences are meaningful); `quantize` is the older boolean
              spelling, kept as an alias (True = 'ternary', False = 'float');
  fused    -- True recomputes x~ in the BitLinear backward instead of caching it (E5 memory saving),
              and the mixers recompute their cheap elementwise intermediates the same way.
"""
import numpy as np

from mmf.layers import activations, bitlinear, layernorm, linear, loss, recurrence, rmsnorm, wkv
from mmf.layers.quant import resolve_weights
from mmf.training import adamw



class NumpyBackend:
    name = "numpy"

    def __init__(self, quantize=None, fused=True, weights=None):
        self.weights = resolve_weights(weights, quantize)
        self.fused = fused

    @property
    def quantize(self):
        """Deprecated alias: True when the BitLinears quantize (ternary or binary weights)."""
        return self.weights != "float"

    # E1
    def rmsnorm_forward(self, x, g, eps):
        return rmsnorm.rmsnorm_forward(x, g, eps)

    def rmsnorm_backward(self, dy, cache):
        return rmsnorm.rmsnorm_backward(dy, cache)

    def rmsnorm_normalized(self, cache):
        """Recompute the norm's output from its cache (fused mode keeps the input, not the output)."""
        return rmsnorm.rmsnorm_normalized(cache)

    # E4/E5
    def bitlinear_forward(self, x, W, g):
        return bitlinear.bitlinear_forward(x, W, g, weights=self.weights, fused=self.fused)

    def bitlinear_backward(self, dy, cache):
        return bitlinear.bitlinear_backward(dy, cache)

    # plain float linear (the float Transformer++'s projections, and the Transformer's float LM head)
    def linear_forward(self, x, W):
        return linear.linear_forward(x, W)

    def linear_backward(self, dy, cache):
        return linear.linear_backward(dy, cache)

    # E6/E8 gate nonlinearities (elementwise)
    def sigmoid(self, z):
        return activations.sigmoid(z)

    def silu(self, z):
        return activations.silu(z)

    def silu_grad(self, z):
        return activations.silu_grad(z)

    # E6 recurrence
    def scan_forward(self, f, i, h0):
        return recurrence.scan_forward(f, i, h0)

    def scan_backward(self, dh, f, h, h0):
        return recurrence.scan_backward(dh, f, h, h0)

    # RWKV-4 (mmf/models/rwkv4.py): LayerNorm and the WKV recurrence
    def layernorm_forward(self, x, g, b, eps):
        return layernorm.layernorm_forward(x, g, b, eps)

    def layernorm_backward(self, dy, cache):
        return layernorm.layernorm_backward(dy, cache)

    def wkv_scan_forward(self, k, v, w, u, state0):
        return wkv.wkv_scan_forward(k, v, w, u, state0)

    def wkv_scan_backward(self, dy, cache, dstate_last=None):
        return wkv.wkv_scan_backward(dy, cache, dstate_last)

    # E10 embedding: the gradient of a row gather is a scatter-add (a token seen twice gets both rows)
    def embedding_backward(self, ids, dx, vocab_size):
        """ids (B, T), dx (B, T, D) -> dE (V, D)."""
        dE = np.zeros((vocab_size, dx.shape[-1]), dx.dtype)
        np.add.at(dE, ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
        return dE

    # E9 a whole block, composed from the methods above (mmf.models.block). A backend may run it with
    # its own fused kernels instead (kernels_numba: fewer passes over the activations, less memory).
    def block_forward(self, x, p, lb, h0, eps, gate):
        from mmf.models.block import block_forward                  # lazy: mmf.models imports this module
        return block_forward(x, p, lb, h0, eps, self, gate)

    def block_backward(self, dout, cache):
        from mmf.models.block import block_backward
        return block_backward(dout, cache, self)

    # the optimizer's update of one parameter (mmf.training.adamw)
    def adamw_update(self, p, g, m, v, lr, decay, b1, b2, eps, c1, c2):
        adamw.adamw_update(p, g, m, v, lr, decay, b1, b2, eps, c1, c2)

    # E11
    def cross_entropy_forward(self, logits, targets):
        return loss.cross_entropy_forward(logits, targets)

    def cross_entropy_backward(self, cache):
        return loss.cross_entropy_backward(cache)


def get_backend(name_or_backend, weights="ternary", fused=True):
    """'numpy' -> NumpyBackend; 'numba' -> kernels_numba's NumbaBackend (imported only when asked for,
    so mmf itself runs on NumPy alone); a backend instance is used as it is."""
    if isinstance(name_or_backend, NumpyBackend):
        return name_or_backend
    if name_or_backend == "numpy":
        return NumpyBackend(fused=fused, weights=weights)
    if name_or_backend == "numba":
        try:
            from kernels_numba.backend import NumbaBackend
        except ImportError as e:
            raise ImportError(f"backend='numba' needs the kernels_numba package and numba installed ({e}); "
                              "use backend='numpy' for the pure NumPy reference") from e
        return NumbaBackend(fused=fused, weights=weights)
    raise ValueError(f"backend must be 'numpy', 'numba' or a NumpyBackend instance, got {name_or_backend!r}")
