"""Whole-model sanity: initial loss ~ ln V, overfitting one batch, prefill + carried state = full forward."""
import numpy as np
import pytest

import mmf
from mmf.training.adamw import AdamW
from mmf.models.params import param_shapes


def test_params_use_official_names_and_shapes():
    cfg = mmf.MMfreeConfig(vocab_size=100, hidden_size=64, num_layers=3)
    m = mmf.MMfreeLM(cfg)
    assert cfg.intermediate_size == 256                       # E8: 256 * ceil(int(64*8/3)/256)
    assert mmf.MMfreeConfig(vocab_size=1, hidden_size=1024, num_layers=1).intermediate_size == 2816
    assert m.params["model.layers.2.mlp.gate_proj.weight"].shape == (512, 64)      # [out, in], 2I rows
    assert m.params["model.layers.0.mlp.down_proj.weight"].shape == (64, 256)
    assert m.params["model.layers.1.attn.o_proj.norm.weight"].shape == (64,)
    assert m.params["lm_head.weight"].shape == (100, 64)
    assert m.params["model.lower_bounds"].shape == (3, 64)
    assert len(m.params) == 2 + 3 * 15 + 3
    assert all(p.dtype == np.float32 for p in m.params.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fresh_model_loss_is_about_ln_V(dtype):
    cfg = mmf.MMfreeConfig(vocab_size=256, hidden_size=32, num_layers=2)
    m = mmf.MMfreeLM(cfg, seed=3, dtype=dtype)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (4, 32))
    loss, grads = m.loss_and_grads(ids, rng.integers(0, 256, (4, 32)))
    assert abs(loss - np.log(256)) < 0.05 * np.log(256)
    assert all(g.dtype == dtype for g in grads.values())


def test_overfits_one_batch(tiny_config):
    m = mmf.MMfreeLM(tiny_config, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tiny_config.vocab_size, (4, 17))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = AdamW(m.params, lr=1e-2, weight_decay=0.0)
    first = loss = m.loss_and_grads(x, y)[0]
    for step in range(500):
        loss, grads = m.loss_and_grads(x, y)
        if loss <= 0.2 * first:
            break
        opt.step(grads)
    assert loss <= 0.2 * first, f"loss went {first:.3f} -> {loss:.3f} in 500 steps (needs a >= 80% drop)"


def test_prefill_then_carried_state_equals_full_forward(tiny_config):
    m = mmf.MMfreeLM(tiny_config, seed=1, dtype=np.float64)
    ids = np.random.default_rng(0).integers(0, tiny_config.vocab_size, (3, 9))
    full = m.forward(ids)
    logits, state = m.forward(ids[:, :4], return_state=True)
    chunks = [logits]
    for t in range(4, 9):                                     # one token at a time
        logits, state = m.forward(ids[:, t:t + 1], state=state, return_state=True)
        chunks.append(logits)
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), full, rtol=1e-12, atol=1e-12)


def test_loading_weights_by_assignment_changes_the_output(tiny_config):
    a, b = mmf.MMfreeLM(tiny_config, seed=1), mmf.MMfreeLM(tiny_config, seed=2)
    ids = np.arange(8).reshape(1, 8)
    assert not np.allclose(a.forward(ids), b.forward(ids))
    for k, v in a.params.items():
        b.params[k] = v.copy()
    np.testing.assert_array_equal(a.forward(ids), b.forward(ids))


def test_quantize_switch_changes_the_model(tiny_config):
    m = mmf.MMfreeLM(tiny_config, seed=1)
    ids = np.arange(8).reshape(1, 8)
    on = m.forward(ids)
    m.quantize = False
    off = m.forward(ids)
    assert not np.allclose(on, off)


def test_adamw_decays_only_matrices(tiny_config):
    m = mmf.MMfreeLM(tiny_config, seed=0)
    before = {k: v.copy() for k, v in m.params.items()}
    opt = AdamW(m.params, lr=0.1, weight_decay=0.5)
    opt.step({k: np.zeros_like(v) for k, v in m.params.items()})   # zero gradient: only decay can move p
    for k, v in m.params.items():
        if v.ndim == 2 and k not in ("model.embeddings.weight", "model.lower_bounds"):
            np.testing.assert_allclose(v, before[k] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_recompute_and_caching_models_agree_exactly(tiny_config, dtype):
    """fused=True keeps less for backward (no x~, no gate values) and recomputes them: same bits."""
    ids = np.random.default_rng(0).integers(0, tiny_config.vocab_size, (2, 9))
    (l1, g1), (l2, g2) = [mmf.MMfreeLM(tiny_config, seed=1, dtype=dtype, fused=f).loss_and_grads(ids[:, :-1], ids[:, 1:])
                          for f in (False, True)]
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
