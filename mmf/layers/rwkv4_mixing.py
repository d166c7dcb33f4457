"""RWKV-4's two mixers (Peng et al. 2023) with BitLinear projections (docs/equations.md, R1, R3, R4):
time mixing (the token mixer, built around the WKV recurrence of mmf/layers/wkv.py) and channel mixing
(its MLP). The paper's MatMul-free RWKV-4 makes every dense layer a BitLinear (E4, ternary by default);
the rest is RWKV-4.

Token shift. Each mixer blends every channel of its input with the previous token's, with a learned
coefficient mu per channel:  mix(x; mu)_t = mu * x_t + (1 - mu) * x_{t-1}.  The "previous token" of the
first position is the carried shift state (zeros at the start of a text). The shift state and the WKV
state (a, b, p) are all a layer remembers: O(1) decoding, like the MLGRU's h.

Time mixing, parameters below `blocks.{l}.att.`:
    k = BitLinear_key(mix(x; time_mix_k));  v = BitLinear_value(mix(x; time_mix_v))
    r = BitLinear_receptance(mix(x; time_mix_r))
    wkv = WKV(k, v; w = -exp(time_decay), u = time_first)              (mmf/layers/wkv.py)
    out = BitLinear_output(sigmoid(r) * wkv)                            (receptance gate)
Channel mixing, parameters below `blocks.{l}.ffn.`:
    r = sigmoid(BitLinear_receptance(mix(x; time_mix_r)))
    out = r * BitLinear_value(relu(BitLinear_key(mix(x; time_mix_k)))^2)      (squared ReLU)

Each BitLinear's weight is 'NAME.weight' [out, in] with its norm gain 'NAME.norm.weight'. The time_*
parameters are (D,) vectors (RWKV-4's checkpoints store the mixes as (1, 1, D): the same numbers).
Every projection goes through the backend (`ops`), so the Numba kernels run them when selected.

Shapes: x (B, T, D); shift states (B, D); the channel mixer's hidden width F: key (F, D), value (D, F).
"""
import numpy as np

from mmf.backend import NumpyBackend


# ----------------------------------------------------------------------------
# token shift and the per-channel mix

def token_shift_forward(x, prev):
    """x (B, T, D), prev (B, D) the token before x[:, 0] -> x shifted one step later, (B, T, D)."""
    return np.concatenate([prev[:, None, :], x[:, :-1]], axis=1)


def token_shift_backward(dshifted):
    """-> (dx (B, T, D), dprev (B, D))."""
    dx = np.zeros_like(dshifted)
    dx[:, :-1] = dshifted[:, 1:]
    return dx, dshifted[:, 0]


def mix_forward(x, shifted, mu):
    """mu * x + (1 - mu) * shifted, written with one product.  (B, T, D), (D,) -> (B, T, D)"""
    return shifted + mu * (x - shifted)


def mix_backward(dm, x, shifted, mu):
    """-> (dx, dshifted, dmu)."""
    dmu = np.sum((dm * (x - shifted)).reshape(-1, mu.shape[0]), axis=0)       # (D,)
    return dm * mu, dm * (1.0 - mu), dmu


def _project(ops, x, p, name):
    return ops.bitlinear_forward(x, p[name + ".weight"], p[name + ".norm.weight"])


def _project_backward(ops, dy, cache, dp, name):
    dx, dp[name + ".weight"], dp[name + ".norm.weight"] = ops.bitlinear_backward(dy, cache)
    return dx


# ----------------------------------------------------------------------------
# time mixing (the token mixer)

TIME_MIX_PROJECTIONS = ("key", "value", "receptance", "output")


def time_mixing_forward(xn, p, shift0, wkv0, ops=None):
    """xn (B, T, D) the normalized input, shift0 (B, D), wkv0 (a, b, p) each (B, D) ->
    out (B, T, D), (shift, wkv state) after the last token, cache."""
    ops = ops or NumpyBackend()
    xx = token_shift_forward(xn, shift0)                             # (B, T, D) the previous tokens
    xk = mix_forward(xn, xx, p["time_mix_k"])
    xv = mix_forward(xn, xx, p["time_mix_v"])
    xr = mix_forward(xn, xx, p["time_mix_r"])
    k, c_k = _project(ops, xk, p, "key")                             # (B, T, D)
    v, c_v = _project(ops, xv, p, "value")                           # (B, T, D)
    r, c_r = _project(ops, xr, p, "receptance")                      # (B, T, D)
    w = -np.exp(p["time_decay"])                                     # (D,) log-decay per channel, < 0
    y, wkv_last, c_wkv = ops.wkv_scan_forward(k, v, w, p["time_first"], wkv0)   # (B, T, D)
    sr = ops.sigmoid(r)
    out, c_o = _project(ops, sr * y, p, "output")                    # (B, T, D)
    cache = (xn, xx, p, c_k, c_v, c_r, w, c_wkv, y, sr, c_o)
    return out, (xn[:, -1].copy(), wkv_last), cache            # a copy: the state must not pin all of xn


def time_mixing_backward(dout, cache, dstate_last=None, ops=None):
    """Reverse of time_mixing_forward. dstate_last (dshift (B, D), (da, db, dp)) is a gradient on the
    final state from outside (None in training). Returns dxn (B, T, D), dp (dict like p),
    (dshift0, dwkv0) the gradient on the initial state."""
    ops = ops or NumpyBackend()
    xn, xx, p, c_k, c_v, c_r, w, c_wkv, y, sr, c_o = cache
    dshift_last, dwkv_last = dstate_last if dstate_last is not None else (None, None)
    dp = {}
    dgated = _project_backward(ops, dout, c_o, dp, "output")        # (B, T, D)
    dy = dgated * sr
    dr = dgated * y * sr * (1.0 - sr)                                # sigmoid'
    dk, dv, dw, dp["time_first"], dwkv0 = ops.wkv_scan_backward(dy, c_wkv, dwkv_last)
    dp["time_decay"] = dw * w                                        # w = -exp(time_decay): dw/dtd = w
    dxr = _project_backward(ops, dr, c_r, dp, "receptance")
    dxv = _project_backward(ops, dv, c_v, dp, "value")
    dxk = _project_backward(ops, dk, c_k, dp, "key")
    dxn, dshift0 = _mixes_backward(((dxr, "time_mix_r"), (dxv, "time_mix_v"), (dxk, "time_mix_k")),
                                   xn, xx, p, dp, dshift_last)
    return dxn, dp, (dshift0, dwkv0)


def _mixes_backward(dmixed_by_name, xn, xx, p, dp, dshift_last):
    """Back through each token-shift mix (dp[name] filled in) and through the shift itself, for both mixers:
    returns dxn (B, T, D) and dshift0 (B, D). dshift_last is the carried shift's gradient (it is xn[:, -1])."""
    dxn, dxx = np.zeros_like(xn), np.zeros_like(xn)
    for dmixed, name in dmixed_by_name:
        dx_m, dxx_m, dp[name] = mix_backward(dmixed, xn, xx, p[name])
        dxn += dx_m
        dxx += dxx_m
    dxn_shift, dshift0 = token_shift_backward(dxx)
    dxn += dxn_shift
    if dshift_last is not None:
        dxn[:, -1] += dshift_last
    return dxn, dshift0


# ----------------------------------------------------------------------------
# channel mixing (the MLP)

CHANNEL_MIX_PROJECTIONS = ("key", "value", "receptance")


def channel_mixing_forward(xn, p, shift0, ops=None):
    """xn (B, T, D), shift0 (B, D) -> out (B, T, D), the shift after the last token (B, D), cache."""
    ops = ops or NumpyBackend()
    xx = token_shift_forward(xn, shift0)                             # (B, T, D)
    xk = mix_forward(xn, xx, p["time_mix_k"])
    xr = mix_forward(xn, xx, p["time_mix_r"])
    k, c_k = _project(ops, xk, p, "key")                             # (B, T, D) -> (B, T, F)
    relu_k = np.maximum(k, 0.0)
    kv, c_v = _project(ops, relu_k * relu_k, p, "value")             # (B, T, F) -> (B, T, D)
    r, c_r = _project(ops, xr, p, "receptance")                      # (B, T, D)
    sr = ops.sigmoid(r)
    out = sr * kv
    cache = (xn, xx, p, c_k, relu_k, c_v, kv, c_r, sr)
    return out, xn[:, -1].copy(), cache


def channel_mixing_backward(dout, cache, dshift_last=None, ops=None):
    """Returns dxn (B, T, D), dp (dict like p), dshift0 (B, D)."""
    ops = ops or NumpyBackend()
    xn, xx, p, c_k, relu_k, c_v, kv, c_r, sr = cache
    dp = {}
    dkv = dout * sr
    dr = dout * kv * sr * (1.0 - sr)
    dxr = _project_backward(ops, dr, c_r, dp, "receptance")
    dsquared = _project_backward(ops, dkv, c_v, dp, "value")        # (B, T, F)
    dk = dsquared * 2.0 * relu_k                                     # d relu(k)^2 / dk = 2 relu(k)
    dxk = _project_backward(ops, dk, c_k, dp, "key")
    dxn, dshift0 = _mixes_backward(((dxr, "time_mix_r"), (dxk, "time_mix_k")), xn, xx, p, dp, dshift_last)
    return dxn, dp, dshift0
