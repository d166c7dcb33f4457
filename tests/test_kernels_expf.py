"""expf.py's vectorizable float32 exp and sigmoid: within 1.5 units in the last place of the exact
(float64) value over the whole clamped range, and correct at the clamps; a checker that can fail."""
import numpy as np

from kernels_numba.expf import X_MAX, X_MIN, exp_array


def ulp_error(got32, exact64):
    """|got - exact| in units of the float32 spacing at the exact value."""
    return np.abs(got32.astype(np.float64) - exact64) / np.spacing(exact64.astype(np.float32)).astype(np.float64)


def test_exp_within_1_5_ulp_over_the_range():
    x = np.concatenate([np.linspace(X_MIN, X_MAX, 400_001),
                        np.random.default_rng(0).uniform(-5, 5, 100_000)]).astype(np.float32)
    out = np.empty_like(x)
    exp_array(x, out)
    assert ulp_error(out, np.exp(x.astype(np.float64))).max() < 1.5


def test_exp_clamps_instead_of_overflowing():
    x = np.array([-1e4, -200.0, 200.0, 1e4], np.float32)
    out = np.empty_like(x)
    exp_array(x, out)
    assert np.all(np.isfinite(out)) and out[0] == out[1] and out[2] == out[3]
    assert 0 < out[0] < 1e-37 and out[3] > 1e38                     # exp(-87) and exp(88)


def test_ulp_check_can_fail():
    # negative control: an exp off by a relative 1e-6 (~8 ulp) is caught
    x = np.linspace(-10, 10, 1001).astype(np.float32)
    wrong = (np.exp(x.astype(np.float64)) * (1 + 1e-6)).astype(np.float32)
    assert ulp_error(wrong, np.exp(x.astype(np.float64))).max() > 1.5
