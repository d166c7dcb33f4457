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
from mmf.layers import activations, bitlinear, linear, loss, recurrence, rmsnorm
from mmf.layers.quant import resolve_weights



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
