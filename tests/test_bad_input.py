"""Bad input fails loudly with a message that names the problem."""
import numpy as np
import pytest

import mmf
from mmf.layers import bitlinear, rmsnorm


@pytest.fixture
def model(tiny_config):
    return mmf.MMfreeLM(tiny_config)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(vocab_size=0, hidden_size=8, num_layers=1), ValueError, "vocab_size must be positive"),
    (dict(vocab_size=10, hidden_size=-8, num_layers=1), ValueError, "hidden_size must be positive"),
    (dict(vocab_size=10, hidden_size=8, num_layers=0), ValueError, "num_layers must be positive"),
    (dict(vocab_size=10, hidden_size=8.0, num_layers=1), TypeError, "hidden_size must be an int"),
    (dict(vocab_size=10, hidden_size=8, num_layers=1, intermediate_size=0), ValueError, "intermediate_size"),
    (dict(vocab_size=10, hidden_size=8, num_layers=1, rms_norm_eps=-1.0), ValueError, "rms_norm_eps"),
    (dict(vocab_size=10, hidden_size=8, num_layers=1, use_lower_bound="yes"), TypeError, "use_lower_bound"),
])
def test_invalid_configs(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        mmf.MMfreeConfig(**kwargs)


def test_token_ids_out_of_range(model):
    with pytest.raises(ValueError, match=r"token ids in \[0, 32\].*\[0, 32\)"):
        model.forward(np.array([[0, 5, 32]]))
    with pytest.raises(ValueError, match=r"\[-1, 5\]"):
        model.forward(np.array([[-1, 5]]))


def test_token_ids_wrong_type_or_shape(model):
    with pytest.raises(TypeError, match="integer token ids"):
        model.forward(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model.forward(np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="numpy integer array"):
        model.forward([[0, 1]])
    with pytest.raises(ValueError, match="targets has shape"):
        model.loss_and_grads(np.zeros((2, 3), int), np.zeros((2, 4), int))


def test_wrong_parameter_assignment(model):
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \(16, 32\) but the config needs \(32, 16\)"):
        model.params["lm_head.weight"] = np.zeros((16, 32), np.float32)
    with pytest.raises(TypeError, match="float64 but the model is float32"):
        model.params["lm_head.weight"] = np.zeros((32, 16), np.float64)
    with pytest.raises(KeyError, match="unknown parameter"):
        model.params["lm_head.bias"] = np.zeros(32, np.float32)


def test_wrong_state(model):
    with pytest.raises(ValueError, match="one carried MLGRU state per layer"):
        model.forward(np.zeros((1, 2), int), state=[np.zeros((1, 16), np.float32)])


def test_layer_shape_and_dtype_checks():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="input features"):
        bitlinear.bitlinear_forward(x, np.zeros((4, 7), np.float32), np.ones(8, np.float32))
    with pytest.raises(TypeError, match="dtype float64 but float32"):
        bitlinear.bitlinear_forward(x, np.zeros((4, 8)), np.ones(8, np.float32))
    with pytest.raises(ValueError, match=r"rmsnorm g has shape \(7,\)"):
        rmsnorm.rmsnorm_forward(x, np.ones(7, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        rmsnorm.rmsnorm_forward(x.astype(np.int32), np.ones(8, np.float32))


def test_bad_model_arguments(tiny_config):
    with pytest.raises(TypeError, match="MMfreeConfig"):
        mmf.MMfreeLM({"vocab_size": 3})
    with pytest.raises(TypeError, match="dtype"):
        mmf.MMfreeLM(tiny_config, dtype=np.float16)
    with pytest.raises(ValueError, match="backend must be"):
        mmf.MMfreeLM(tiny_config, backend="cuda")
