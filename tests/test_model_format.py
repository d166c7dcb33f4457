"""One model format for every architecture: the `weights` field, the `arch` name, checkpoint format 2,
format-1 checkpoints still loading, `mmf.load`, and tools refusing what they cannot run."""
import json
import zipfile

import numpy as np
import pytest

import mmf
from mmf.layers.bitlinear import bitlinear_forward
from mmf.models.registry import config_from_dict, config_to_dict
from mmf.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CFG = dict(vocab_size=23, hidden_size=16, num_layers=2, intermediate_size=32)


def _save(path, model, **header_extra):
    save_checkpoint(path, params=model.params, model_config=config_to_dict(model.config), step=0)


@pytest.mark.parametrize("weights", ["ternary", "binary", "float"])
def test_weights_field_selects_the_bitlinear(weights):
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, weights=weights), seed=0)
    W = model.params["lm_head.weight"]
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    y_model_head, _ = model.backend.bitlinear_forward(x, W, model.params["lm_head.norm.weight"])
    y_layer, _ = bitlinear_forward(x, W, model.params["lm_head.norm.weight"], weights=weights)
    np.testing.assert_array_equal(y_model_head, y_layer)
    others = [w for w in ("ternary", "binary", "float") if w != weights]
    for other in others:                                   # each format really computes something else
        y_other, _ = bitlinear_forward(x, W, model.params["lm_head.norm.weight"], weights=other)
        assert not np.allclose(y_layer, y_other)


def test_quantize_flag_is_an_alias_of_weights():
    cfg = mmf.MMfreeConfig(**CFG)
    m = mmf.MMfreeLM(cfg, seed=0, quantize=False)
    assert m.config.weights == "float" and m.quantize is False
    assert mmf.MMfreeLM(cfg, seed=0, quantize=True).config.weights == "ternary"
    m.quantize = True
    assert m.config.weights == "ternary" and m.backend.weights == "ternary"
    with pytest.raises(ValueError, match="MMfreeConfig.weights.*'int2'"):
        mmf.MMfreeConfig(**CFG, weights="int2")


@pytest.mark.parametrize("weights", ["ternary", "binary", "float"])
def test_checkpoint_v2_round_trip_through_mmf_load(tmp_path, weights):
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, weights=weights), seed=3)
    path = str(tmp_path / "m.ckpt")
    _save(path, model)
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
    assert header["format_version"] == 2
    assert header["model_config"]["arch"] == "mmfree" and header["model_config"]["weights"] == weights
    back = mmf.load(path)
    assert type(back) is mmf.MMfreeLM and back.config == model.config
    ids = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(back.forward(ids), model.forward(ids))


def test_format_1_checkpoint_loads_as_ternary_mmfree(tmp_path, monkeypatch):
    import mmf.training.checkpoint as ckmod
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG), seed=5)
    v1_config = {k: v for k, v in config_to_dict(model.config).items() if k not in ("arch", "weights")}
    monkeypatch.setattr(ckmod, "FORMAT_VERSION", 1)        # write exactly what the format-1 code wrote
    path = str(tmp_path / "v1.ckpt")
    save_checkpoint(path, params=model.params, model_config=v1_config, step=7)
    monkeypatch.undo()
    with zipfile.ZipFile(path) as zf:
        h = json.loads(zf.read("header.json"))
    assert h["format_version"] == 1 and "arch" not in h["model_config"] and "weights" not in h["model_config"]
    ck = load_checkpoint(path)
    assert ck.arch == "mmfree" and ck.config.weights == "ternary"
    back = mmf.load(path)
    ids = np.arange(8).reshape(1, 8)
    np.testing.assert_array_equal(back.forward(ids), model.forward(ids))


def test_stored_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'lstm'.*known: mmfree"):
        config_from_dict({"arch": "lstm", **CFG})
    with pytest.raises(ValueError, match=r"no field\(s\) \['num_heads'\]"):
        config_from_dict({"arch": "mmfree", "num_heads": 4, **CFG})
    with pytest.raises(ValueError, match="cannot build MMfreeConfig"):
        config_from_dict({"arch": "mmfree", "vocab_size": 3})
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG), seed=0)
    path = str(tmp_path / "alien.ckpt")
    save_checkpoint(path, params=model.params, model_config={"arch": "lstm", **CFG})
    with pytest.raises(CheckpointError, match="alien.ckpt.*unknown architecture 'lstm'"):
        mmf.load(path)
    with pytest.raises(IsADirectoryError, match="directory"):
        mmf.load(str(tmp_path))


@pytest.mark.parametrize("weights", ["binary", "float"])
def test_engine_and_accelerator_refuse_what_they_cannot_run(weights):
    from fpga_model.accelerator import Accelerator
    from kernels_numba import Engine
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, weights=weights), seed=0)
    with pytest.raises(ValueError, match=f"Engine cannot run arch='mmfree' weights='{weights}'"):
        Engine(model)
    with pytest.raises(ValueError, match=f"Accelerator cannot run arch='mmfree' weights='{weights}'"):
        Accelerator.from_model(model)
    ternary = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG), seed=0)     # negative control: accepted
    Engine(ternary)
    Accelerator.from_model(ternary)


def test_numba_backend_runs_binary_weights_like_the_reference():
    from kernels_numba.backend import NumbaBackend
    cfg = mmf.MMfreeConfig(**CFG, weights="binary")
    rng = np.random.default_rng(1)
    ids, tg = rng.integers(0, CFG["vocab_size"], (2, 2, 9))
    l0, g0 = mmf.MMfreeLM(cfg, seed=2, dtype=np.float64).loss_and_grads(ids, tg)
    for matmul in ("blas", "ternary"):
        be = NumbaBackend(weights="binary", matmul=matmul)
        l1, g1 = mmf.MMfreeLM(cfg, seed=2, dtype=np.float64, backend=be).loss_and_grads(ids, tg)
        assert abs(l1 - l0) <= 1e-12 * abs(l0)
        for k in g0:
            np.testing.assert_allclose(g1[k], g0[k], rtol=1e-9, atol=1e-12)
