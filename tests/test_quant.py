"""E2/E3 quantizers against exact value tables: ties (round half to even), clipping, the 1e-5 floors."""
import numpy as np
import pytest

from mmf.layers.quant import activation_quant, activation_quant_int, weight_quant, weight_quant_int


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_ties_round_half_to_even(dtype):
    # max|x| = 127 gives s = 1 exactly, so the codes are round(x) and every .5 is a tie
    x = np.array([[127.0, 2.5, -2.5, 3.5, 0.5, -0.5, 1.5, -126.4]], dtype)
    q, s = activation_quant_int(x)
    assert q.dtype == np.int8 and s.shape == (1, 1) and s[0, 0] == 1.0
    np.testing.assert_array_equal(q, [[127, 2, -2, 4, 0, 0, 2, -126]])


def test_activation_scale_per_token_and_fake_quant():
    x = np.array([[1.0, -0.5, 0.25, 0.0],      # s = 127: codes 127, -63.5 -> -64 (even), 31.75 -> 32, 0
                  [-2.0, 1.0, 0.0, 0.0]])      # s = 63.5: codes -127, 63.5 -> 64 (even), 0, 0
    q, s = activation_quant_int(x)
    np.testing.assert_array_equal(q, [[127, -64, 32, 0], [-127, 64, 0, 0]])
    np.testing.assert_array_equal(s[:, 0], [127.0, 63.5])
    np.testing.assert_array_equal(activation_quant(x), q / s)
    assert np.abs(q).max() <= 127            # absmax maps to 127, so -128 is never produced


def test_activation_floor_for_zero_and_tiny_tokens():
    x = np.array([[0.0, 0.0, 0.0], [1e-6, -1e-6, 5e-7]])
    q, s = activation_quant_int(x)
    np.testing.assert_allclose(s[:, 0], [127 / 1e-5, 127 / 1e-5])   # max|x| < 1e-5 hits the floor
    np.testing.assert_array_equal(q, [[0, 0, 0], [13, -13, 6]])       # 12.7 -> 13, 6.35 -> 6
    assert np.all(np.isfinite(activation_quant(x)))


def test_weight_ternary_table_with_clipping():
    W = np.array([[1.0, -1.0, 0.0, 2.0], [0.5, -0.5, 3.0, -3.0]])    # beta = mean|W| = 11/8
    Wt, beta = weight_quant_int(W)
    assert beta == 1.375 and Wt.dtype == np.int8
    np.testing.assert_array_equal(Wt, [[1, -1, 0, 1], [0, 0, 1, -1]])  # 2.18 and -2.18 clip to +-1
    np.testing.assert_array_equal(weight_quant(W), Wt * 1.375)


def test_weight_ties_and_floor():
    Wt, beta = weight_quant_int(np.array([[0.5, -0.5, 1.5, -1.5]]))   # beta = 1: ties at +-0.5 -> 0
    assert beta == 1.0
    np.testing.assert_array_equal(Wt, [[0, 0, 1, -1]])
    Wt, beta = weight_quant_int(np.zeros((3, 2)))                      # all zero: beta floors at 1e-5
    assert beta == 1e-5 and not Wt.any()
    Wt, beta = weight_quant_int(np.array([[8e-6, -2e-6]]))            # mean 5e-6 < 1e-5: W/beta = 0.8, -0.2
    assert beta == 1e-5
    np.testing.assert_array_equal(Wt, [[1, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fake_quant_keeps_dtype(dtype):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(dtype)
    assert activation_quant(x).dtype == dtype
    assert weight_quant(x).dtype == dtype
    assert set(np.unique(weight_quant_int(x)[0])) <= {-1, 0, 1}


# ----------------------------------------------------------------------------
# E3b: binary weights (BitNet): W~ = beta * Sign(W - alpha), Sign(0) = -1

def test_binary_weights_value_table():
    from mmf.layers.quant import weight_quant_binary, weight_quant_binary_int
    W = np.array([[0.5, -0.5, 1.0], [-1.0, 0.25, 0.0]])      # alpha = mean = 0.041666..., beta = 0.541666...
    Wb, alpha, beta = weight_quant_binary_int(W)
    assert Wb.dtype == np.int8
    np.testing.assert_array_equal(Wb, [[1, -1, 1], [-1, 1, -1]])     # 0.0 < alpha -> -1
    assert alpha == pytest.approx(0.25 / 6) and beta == pytest.approx(3.25 / 6)
    np.testing.assert_array_equal(weight_quant_binary(W), Wb * beta)


def test_binary_sign_of_zero_is_minus_one():
    # W - alpha is exactly 0 at the middle entry: np.sign would give 0 (a ternary code)
    from mmf.layers.quant import weight_quant_binary_int
    W = np.array([[-1.0, 0.0, 1.0]])
    Wb, alpha, _ = weight_quant_binary_int(W)
    assert alpha == 0.0
    np.testing.assert_array_equal(Wb, [[-1, -1, 1]])
    assert set(np.unique(Wb)) <= {-1, 1}
    assert not np.array_equal(Wb, np.sign(W - alpha))      # negative control: np.sign differs here


def test_binary_scale_floor_and_dtype():
    from mmf.layers.quant import weight_quant_binary
    W = np.zeros((2, 3), np.float32)
    Wq = weight_quant_binary(W)
    assert Wq.dtype == np.float32
    np.testing.assert_array_equal(Wq, np.full((2, 3), -1e-5, np.float32))   # all -beta, beta floored


def test_weight_formats_are_checked():
    from mmf.layers.quant import check_weights, resolve_weights
    with pytest.raises(ValueError, match="'ternary', 'binary', 'float'.*'int4'"):
        check_weights("int4")
    assert resolve_weights(None, False) == "float" and resolve_weights(None, True) == "ternary"
    with pytest.raises(ValueError, match="contradicts"):
        resolve_weights("binary", False)
