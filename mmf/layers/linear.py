"""A plain float linear layer y = x @ W.T (no bias), and `projection`: one projection of a model,
which is a BitLinear (E4) when it has its own norm gain and a plain linear when it has none.

    forward:  y = x @ W.T                 x (..., K), W (N, K) [out, in] like the state dict, y (..., N)
    backward: dx = dy @ W,  dW = dy.T @ x (summed over every leading position)

The float Transformer++ (a Llama) projects with plain linears; its BitNet variants (weights 'ternary'
or 'binary') replace every projection by a BitLinear with its own RMSNorm. Which one a projection is
follows from its parameters, so one attention and one MLP serve every variant:

    p = {"q_proj.weight": W}                                  -> plain linear (backend.linear_forward)
    p = {"q_proj.weight": W, "q_proj.norm.weight": g}         -> BitLinear    (backend.bitlinear_forward)

Both go through the backend, so a backend that accelerates either one is used.
"""
from mmf.checks import check_array


def linear_forward(x, W):
    check_array("linear x", x, ndim_min=1)
    check_array("linear W", W, ndim=2, dtype=x.dtype)
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"linear W has shape {W.shape} [out, in] but x has {x.shape[-1]} input features")
    return x @ W.T, (x, W)                                           # (..., K) -> (..., N)


def linear_backward(dy, cache):
    x, W = cache
    K = W.shape[1]
    dW = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, K)           # (N, M) @ (M, K) -> (N, K)
    dx = dy @ W                                                      # (..., N) -> (..., K)
    return dx, dW


def projection_forward(x, p, name, ops):
    """The projection `name` (e.g. 'q_proj') with parameters p[name + '.weight'] and, for a BitLinear,
    p[name + '.norm.weight'].  x (..., K) -> y (..., N), cache."""
    W = p[name + ".weight"]
    g = p.get(name + ".norm.weight")
    if g is None:
        y, c = ops.linear_forward(x, W)
    else:
        y, c = ops.bitlinear_forward(x, W, g)
    return y, (name, g is not None, c)


def projection_backward(dy, cache, ops):
    """-> dx, {name + '.weight': dW[, name + '.norm.weight': dg]}"""
    name, is_bitlinear, c = cache
    if is_bitlinear:
        dx, dW, dg = ops.bitlinear_backward(dy, c)
        return dx, {name + ".weight": dW, name + ".norm.weight": dg}
    dx, dW = ops.linear_backward(dy, c)
    return dx, {name + ".weight": dW}
