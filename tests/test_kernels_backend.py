"""NumbaBackend and its fused kernels against the NumPy reference they replace: the same numbers to
float rounding (bit for bit where the operation order is the same), for every layer and for a whole
model's loss and gradients, with both BitLinear products and both cache variants."""
import numpy as np
import pytest

import mmf
from kernels_numba import fused, scan
from kernels_numba.backend import NumbaBackend
from kernels_numba.bench import bench_activation_memory
from mmf.layers import recurrence
from mmf.layers.loss import cross_entropy_backward, cross_entropy_forward
from mmf.layers.quant import activation_quant, activation_quant_int
from mmf.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward

CFG = dict(vocab_size=40, hidden_size=24, num_layers=2, intermediate_size=64)


def max_rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_norm_quant_equals_reference(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 70)).astype(dtype)
    x[3] = 0.0                                                       # all-zero token hits the 1e-5 floor
    x[4] *= 1e4
    g = (1 + 0.2 * rng.standard_normal(70)).astype(dtype)
    q, s, rstd, xq = fused.norm_quant(x, g, 1e-6)
    xn, (_, _, rstd_ref) = rmsnorm_forward(x, g, 1e-6)
    q_ref, s_ref = activation_quant_int(xn)
    assert q.dtype == np.int8 and np.array_equal(q, q_ref)
    tol = 1e-6 if dtype == np.float32 else 1e-15                     # a few ulps (the row mean is summed differently)
    assert max_rel_err(s, s_ref[:, 0]) < tol and max_rel_err(rstd, rstd_ref[:, 0]) < tol
    assert max_rel_err(xq, activation_quant(xn)) < tol
    # the backward's recompute rebuilds exactly the forward's x~ from x, rstd, s
    xq2 = np.empty_like(x)
    fused.requant_kernel(x, g, rstd, s, xq2)
    assert np.array_equal(xq2, xq)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsnorm_and_scan_and_loss_kernels(dtype):
    rng = np.random.default_rng(1)
    be = NumbaBackend()
    x = rng.standard_normal((3, 5, 33)).astype(dtype)
    g = rng.standard_normal(33).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, c = be.rmsnorm_forward(x, g, 1e-6)
    y_ref, c_ref = rmsnorm_forward(x, g, 1e-6)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert max_rel_err(y, y_ref) < tol
    for a, b in zip(be.rmsnorm_backward(dy, c), rmsnorm_backward(dy, c_ref)):
        assert max_rel_err(a, b) < 10 * tol
    f = rng.random((3, 9, 7)).astype(dtype)
    i = rng.standard_normal((3, 9, 7)).astype(dtype)
    h0 = rng.standard_normal((3, 7)).astype(dtype)
    h = scan.scan_forward(f, i, h0)
    assert np.array_equal(h, recurrence.scan_forward(f, i, h0))      # same order of operations
    for a, b in zip(scan.scan_backward(i, f, h, h0),
                    recurrence.scan_backward(i, f, h, h0)):
        assert np.array_equal(a, b)
    logits = (3 * rng.standard_normal((4, 6, 40))).astype(dtype)
    t = rng.integers(0, 40, (4, 6))
    loss, c = be.cross_entropy_forward(logits, t)
    loss_ref, c_ref = cross_entropy_forward(logits, t)
    assert abs(loss - loss_ref) < 10 * tol * abs(loss_ref)
    assert max_rel_err(be.cross_entropy_backward(c), cross_entropy_backward(c_ref)) < 10 * tol


def loss_and_grads(backend, dtype, seed=0):
    rng = np.random.default_rng(seed)
    ids, tg = rng.integers(0, CFG["vocab_size"], (2, 2, 11))
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, weights=backend.weights), seed=seed, dtype=dtype, backend=backend)
    return model.loss_and_grads(ids, tg)


def compare(got, want, tol):
    (l1, g1), (l0, g0) = got, want
    assert abs(l1 - l0) <= tol * abs(l0)
    worst = max(max_rel_err(g1[k], g0[k]) for k in g0)
    assert worst <= tol, f"gradients differ by {worst:.2e} (relative to each tensor's largest entry)"


@pytest.mark.parametrize("matmul", ["blas", "ternary"])
@pytest.mark.parametrize("fused_", [True, False])
def test_model_loss_and_grads_equal_reference(matmul, fused_):
    # float64: equal to ~1e-14; float32: equal to float32 rounding
    compare(loss_and_grads(NumbaBackend(True, fused_, matmul), np.float64),
            loss_and_grads(mmf.backend.NumpyBackend(True, fused_), np.float64), 1e-12)
    compare(loss_and_grads(NumbaBackend(True, fused_, matmul), np.float32),
            loss_and_grads(mmf.backend.NumpyBackend(True, fused_), np.float32), 2e-5)


def test_fused_recompute_gives_identical_gradients():
    # the reference's fused mode recomputes with the same operations: bit for bit
    l1, g1 = loss_and_grads(mmf.backend.NumpyBackend(True, True), np.float32)
    l0, g0 = loss_and_grads(mmf.backend.NumpyBackend(True, False), np.float32)
    assert l1 == l0 and all(np.array_equal(g1[k], g0[k]) for k in g0)
    # Numba's fused mode runs the whole block on its own kernels (kernels_numba/block.py): some sums
    # are taken in another order, so it equals the caching mode to float32 rounding
    compare(loss_and_grads(NumbaBackend(True, True), np.float32),
            loss_and_grads(NumbaBackend(True, False), np.float32), 2e-5)


def test_comparison_catches_a_wrong_kernel():
    class WrongScan(NumbaBackend):                                    # negative control: drops df
        def scan_backward(self, dh, f, h, h0):
            df, di, dh0 = super().scan_backward(dh, f, h, h0)
            return np.zeros_like(df), di, dh0

    with pytest.raises(AssertionError):
        compare(loss_and_grads(WrongScan(), np.float64),
                loss_and_grads(mmf.backend.NumpyBackend(), np.float64), 1e-12)


def test_quantize_off_falls_back_to_reference():
    compare(loss_and_grads(NumbaBackend(False, True), np.float64),
            loss_and_grads(mmf.backend.NumpyBackend(False, True), np.float64), 1e-12)


def test_selected_by_the_model_switch():
    m = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG), backend="numba")
    assert isinstance(m.backend, NumbaBackend)


def test_fused_recompute_cuts_bitlinear_activation_memory():
    r = bench_activation_memory(dict(vocab_size=64, hidden_size=32, num_layers=2), B=2, T=16)
    assert r["fused"]["cache_bytes"] < r["caching"]["cache_bytes"]
    assert r["bitlinear_saving"] >= 0.4


def test_bad_input():
    be = NumbaBackend()
    W = np.zeros((4, 6), np.float32)
    g = np.ones(6, np.float32)
    with pytest.raises(ValueError):
        NumbaBackend(matmul="gpu")
    with pytest.raises(TypeError):
        be.bitlinear_forward(np.zeros((2, 6), np.int32), W, g)        # no silent casting of ints
    with pytest.raises(TypeError):
        be.bitlinear_forward(np.zeros((2, 6), np.float64), W, g)      # dtype mismatch with W
    with pytest.raises(ValueError):
        be.bitlinear_forward(np.zeros((2, 5), np.float32), W, g[:5])  # wrong width
    with pytest.raises(ValueError):
        be.bitlinear_forward(np.zeros((2, 6), np.float32), W, np.ones(5, np.float32))


def test_mlgru_step_kernel_equals_reference_math():
    # the decoding step (E6) against mmf's own pieces composed as in mmf.layers.mlgru
    from mmf.layers.activations import sigmoid, silu
    rng = np.random.default_rng(3)
    D = 37
    a_i, a_f, a_g, g_norm = (rng.standard_normal(D).astype(np.float32) for _ in range(4))
    h = rng.standard_normal(D).astype(np.float32)
    for lb in (np.zeros(D, np.float32), rng.random(D).astype(np.float32)):
        f = lb + (1 - lb) * sigmoid(a_f)
        h_ref = f * h + silu(a_i) * (1 - f)
        o_ref = rmsnorm_forward(a_g[None], g_norm, 1e-6)[0][0] * silu(h_ref)
        h_k, o_k = h.copy(), np.empty(D, np.float32)
        scan.mlgru_step_kernel(a_i, a_f, a_g, lb, h_k, g_norm, np.float32(1e-6), o_k)
        assert max_rel_err(h_k, h_ref) < 1e-6 and max_rel_err(o_k, o_ref) < 1e-6
        h_bad = h.copy()                                             # negative control: wrong gate
        scan.mlgru_step_kernel(a_f, a_f, a_g, lb, h_bad, g_norm, np.float32(1e-6), o_k)
        assert max_rel_err(h_bad, h_ref) > 1e-3


def test_gate_nonlinearities_equal_reference_to_float32_rounding():
    # E6/E8 gates on expf.py's exp: within a few float32 ulps of mmf.layers.activations, float64 untouched
    from mmf.layers import activations
    be = NumbaBackend()
    z = np.concatenate([np.linspace(-30, 30, 6000), [-100.0, 100.0, 0.0, 1e-3]]).astype(np.float32).reshape(-1, 4)
    for name in ("sigmoid", "silu", "silu_grad"):
        ref = getattr(activations, name)(z)
        got = getattr(be, name)(z)
        assert got.shape == z.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 4 * np.spacing(np.abs(ref).max())
        z64 = z.astype(np.float64)
        np.testing.assert_array_equal(getattr(be, name)(z64), getattr(activations, name)(z64))
    wrong = be.silu(z * np.float32(1.001))                           # negative control
    assert np.abs(wrong - activations.silu(z)).max() > 4 * np.spacing(np.float32(30))
