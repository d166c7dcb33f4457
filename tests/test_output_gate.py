"""MMfreeConfig.output_gate: the paper's sigmoid(g) * h beside the official rms(g; g_norm) * SiLU(h)."""
import dataclasses

import numpy as np
import pytest

from mmf import MMfreeConfig, MMfreeLM
from mmf.backend import NumpyBackend
from mmf.layers import mlgru
from mmf.layers.bitlinear import bitlinear_forward
from mmf.training.checkpoint import load_checkpoint, save_checkpoint


def layer_params(rng, D):
    p = {k + ".weight": 0.4 * rng.standard_normal((D, D)) for k in mlgru.PROJECTIONS}
    p.update({k + ".norm.weight": 1 + 0.1 * rng.standard_normal(D) for k in mlgru.PROJECTIONS})
    p["g_norm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    return p


@pytest.mark.parametrize("quantize", [False, True])
def test_paper_gate_is_sigmoid_g_times_h(quantize):
    rng = np.random.default_rng(0)
    B, T, D = 2, 5, 8
    xn, p = rng.standard_normal((B, T, D)), layer_params(rng, D)
    ops = NumpyBackend(quantize=quantize)
    out, h, _ = mlgru.mlgru_scan_forward(xn, p, None, np.zeros((B, D)), 1e-6, ops, "paper")
    a_g = bitlinear_forward(xn, p["g_proj.weight"], p["g_proj.norm.weight"], quantize=quantize)[0]
    o = h / (1 + np.exp(-a_g))                                               # sigmoid(g) * h, written out
    expected = bitlinear_forward(o, p["o_proj.weight"], p["o_proj.norm.weight"], quantize=quantize)[0]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    official, h_official, _ = mlgru.mlgru_scan_forward(xn, p, None, np.zeros((B, D)), 1e-6, ops)
    np.testing.assert_array_equal(h, h_official)                            # the recurrence is shared
    assert np.abs(official - out).max() > 1e-2                                # the gate is not


def test_config_validates_output_gate():
    with pytest.raises(ValueError, match="output_gate.*'sigmoid'"):
        MMfreeConfig(vocab_size=8, hidden_size=4, num_layers=1, output_gate="sigmoid")
    with pytest.raises(ValueError, match="gate must be one of"):
        mlgru.mlgru_scan_forward(np.zeros((1, 1, 4)), layer_params(np.random.default_rng(0), 4), None,
                                 np.zeros((1, 4)), gate="Paper")


def test_checkpoint_keeps_the_gate(tmp_path):
    cfg = MMfreeConfig(vocab_size=16, hidden_size=8, num_layers=2, output_gate="paper")
    model = MMfreeLM(cfg, seed=0)
    path = str(tmp_path / "paper.ckpt")
    save_checkpoint(path, params=model.params, model_config=dataclasses.asdict(cfg))
    rebuilt = load_checkpoint(path).build_model()
    assert rebuilt.config.output_gate == "paper"
    ids = np.arange(6)[None] % 16
    np.testing.assert_array_equal(rebuilt.forward(ids), model.forward(ids))


def test_fast_tiers_refuse_the_paper_gate():
    from fpga_model.compiler import compile_model
    from kernels_numba.engine import Engine
    cfg = MMfreeConfig(vocab_size=16, hidden_size=8, num_layers=1, output_gate="paper")
    with pytest.raises(ValueError, match="output_gate='paper'"):
        Engine(MMfreeLM(cfg, seed=0))
    with pytest.raises(ValueError, match="output_gate='paper'"):
        compile_model(cfg)
