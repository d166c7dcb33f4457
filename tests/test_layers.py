"""Layer-level equivalences: fused vs caching BitLinear, the integer form, MLGRU step vs scan."""
import numpy as np
import pytest

from mmf.layers import bitlinear, mlgru, recurrence
from mmf.backend import NumpyBackend
from mmf.layers.quant import weight_quant_int


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_caching_bitlinear_agree_exactly(rng, dtype):
    x = rng.standard_normal((3, 4, 24)).astype(dtype)
    W = (0.1 * rng.standard_normal((10, 24))).astype(dtype)
    g = (1 + 0.1 * rng.standard_normal(24)).astype(dtype)
    dy = rng.standard_normal((3, 4, 10)).astype(dtype)
    y_c, c_c = bitlinear.bitlinear_forward(x, W, g, fused=False)
    y_f, c_f = bitlinear.bitlinear_forward(x, W, g, fused=True)
    assert c_f[1] is None and c_c[1] is not None          # the fused cache really holds no x~
    np.testing.assert_array_equal(y_c, y_f)
    for a, b in zip(bitlinear.bitlinear_backward(dy, c_c), bitlinear.bitlinear_backward(dy, c_f)):
        np.testing.assert_array_equal(a, b)


def test_integer_form_equals_fake_quant_form(rng):
    x = rng.standard_normal((6, 40))
    W = 0.05 * rng.standard_normal((9, 40))
    g = 1 + 0.1 * rng.standard_normal(40)
    y_float, _ = bitlinear.bitlinear_forward(x, W, g)
    Wt, beta = weight_quant_int(W)
    y_int = bitlinear.bitlinear_int_forward(x, Wt, beta, g)
    np.testing.assert_allclose(y_int, y_float, rtol=1e-12, atol=1e-12)


def test_addsub_matmul_is_the_integer_product(rng):
    q = rng.integers(-128, 128, (5, 33)).astype(np.int8)
    Wt = rng.integers(-1, 2, (7, 33)).astype(np.int8)
    Wt[2] = 0                                                    # an all-zero row
    expected = q.astype(np.int64) @ Wt.astype(np.int64).T
    np.testing.assert_array_equal(bitlinear.ternary_matmul_addsub(q, Wt), expected)


def _mlgru_params(rng, D, dtype):
    p = {}
    for proj in mlgru.PROJECTIONS:
        p[proj + ".weight"] = (0.3 * rng.standard_normal((D, D))).astype(dtype)
        p[proj + ".norm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(dtype)
    p["g_norm.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(dtype)
    return p


@pytest.mark.parametrize("quantize", [True, False])
def test_mlgru_step_T_times_equals_scan(rng, quantize):
    B, T, D = 2, 6, 12
    p = _mlgru_params(rng, D, np.float64)
    lb = rng.uniform(0.2, 0.5, D)
    xn = rng.standard_normal((B, T, D))
    h0 = rng.standard_normal((B, D))
    ops = NumpyBackend(quantize=quantize)
    out, h, cache = mlgru.mlgru_scan_forward(xn, p, lb, h0, ops=ops)

    h_t, outs, caches = h0, [], []
    for t in range(T):
        o_t, h_t, c_t = mlgru.mlgru_step_forward(xn[:, t], h_t, p, lb, ops=ops)
        outs.append(o_t)
        caches.append(c_t)
        np.testing.assert_allclose(h_t, h[:, t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.stack(outs, 1), out, rtol=1e-12, atol=1e-12)

    # backward: chaining step backwards (carrying dh) equals the scan backward
    dout = rng.standard_normal((B, T, D))
    dxn, dp, dlb, dh0 = mlgru.mlgru_scan_backward(dout, cache, ops=ops)
    dh, dxs, dp_sum, dlb_sum = np.zeros((B, D)), [], {k: 0 for k in p}, 0
    for t in reversed(range(T)):
        dx_t, dp_t, dlb_t, dh = mlgru.mlgru_step_backward(dout[:, t], dh, caches[t], ops=ops)
        dxs.insert(0, dx_t)
        dlb_sum = dlb_sum + dlb_t
        for k in p:
            dp_sum[k] = dp_sum[k] + dp_t[k]
    np.testing.assert_allclose(np.stack(dxs, 1), dxn, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh, dh0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dlb_sum, dlb, rtol=1e-10, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(dp_sum[k], dp[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_recurrence_scan_is_the_step_loop(rng):
    f, i, h0 = rng.uniform(0, 1, (2, 5, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 3))
    h = recurrence.scan_forward(f, i, h0)
    expected = h0
    for t in range(5):
        expected = f[:, t] * expected + i[:, t]
        np.testing.assert_allclose(h[:, t], expected)


def test_lower_bounds_at_init_are_l_over_L():
    lb, S = mlgru.lower_bounds_forward(np.zeros((4, 3)))
    np.testing.assert_allclose(lb[:, 0], [0, 0.25, 0.5, 0.75])
    lb, _ = mlgru.lower_bounds_forward(np.random.default_rng(0).standard_normal((5, 7)))
    assert np.all(lb[0] == 0) and np.all(np.diff(lb, axis=0) >= 0) and np.all(lb < 1)


def test_integer_form_keeps_float32(rng):
    x = rng.standard_normal((2, 8)).astype(np.float32)
    Wt = rng.integers(-1, 2, (3, 8)).astype(np.int8)
    assert bitlinear.bitlinear_int_forward(x, Wt, 0.05, np.ones(8, np.float32)).dtype == np.float32
