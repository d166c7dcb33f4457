"""AdamW's update of one parameter in one parallel pass (mmf.training.adamw.adamw_update, which makes
about a dozen NumPy passes with temporaries). The operations are the reference's, in its order and in
the parameter's dtype (the constants rounded to it first, as NumPy rounds a Python float operand), with
no fastmath: the result is the reference's bit for bit. NumbaBackend.adamw_update calls it."""
import numpy as np
from numba import njit, prange

from mmf.training import adamw as reference


@njit(parallel=True, cache=True)
def adamw_kernel(p, g, m, v, c, decays):
    """p, g, m, v flat (n,), updated in place; c = (b1, 1 - b1, b2, 1 - b2, lr * wd, lr, c1, c2, eps)
    in p's dtype. decays: apply the decoupled weight decay first."""
    for k in prange(p.shape[0]):
        mk = m[k] * c[0]
        mk = mk + c[1] * g[k]
        vk = v[k] * c[2]
        vk = vk + c[3] * (g[k] * g[k])
        pk = p[k]
        if decays:
            pk = pk - c[4] * pk
        m[k] = mk
        v[k] = vk
        p[k] = pk - c[5] * (mk / c[6]) / (np.sqrt(vk / c[7]) + c[8])


def adamw_update(p, g, m, v, lr, decay, b1, b2, eps, c1, c2):
    """mmf.training.adamw.adamw_update's signature. Arrays the kernel cannot update in place (not
    C-contiguous, or of different dtypes) take the NumPy path."""
    if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous
            and p.dtype == m.dtype == v.dtype == g.dtype and p.dtype.kind == "f"):
        return reference.adamw_update(p, g, m, v, lr, decay, b1, b2, eps, c1, c2)
    c = np.array([b1, 1.0 - b1, b2, 1.0 - b2, decay, lr, c1, c2, eps], dtype=p.dtype)
    adamw_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                 c, bool(decay))
