"""The Transformer++ baseline and its 1-bit variants: RoPE tables and properties, causality, KV-cache
decoding == full forward, greedy generation == full-forward argmax, ternary Q and K, the Numba backend,
checkpoints, training, and clear errors on bad input. (Finite differences: tests/test_gradcheck.py;
the STE against PyTorch: tests/test_oracle_torch_transformer.py; equality with Hugging Face's Llama:
tests/test_transformer_hf.py.)"""
import numpy as np
import pytest

import mmf
from mmf.layers import attention, rope
from mmf.models.generate import generate
from mmf.models.registry import config_from_dict, config_to_dict
from mmf.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CFG = dict(vocab_size=37, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24)
VARIANTS = [("float", False), ("ternary", False), ("binary", False), ("float", True), ("ternary", True)]


def model_of(weights="float", ternary_qk=False, dtype=np.float64, seed=0, **kw):
    cfg = mmf.TransformerConfig(**{**CFG, **kw}, weights=weights, ternary_qk=ternary_qk)
    return mmf.TransformerLM(cfg, seed=seed, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# RoPE


def test_rope_tables_and_rotate_half_by_hand():
    # hd = 4, theta = 10000: inv_freq = [1, 10000^(-1/2)] = [1, 0.01]; position 2 -> angles [2, 0.02]
    np.testing.assert_allclose(rope.rope_inv_freq(4), [1.0, 0.01], rtol=1e-15)
    cos, sin = rope.rope_tables(np.array([0, 2]), 4)
    np.testing.assert_allclose(cos[1], np.cos([2, 0.02, 2, 0.02]), rtol=1e-15)
    np.testing.assert_allclose(sin[0], 0.0)
    np.testing.assert_array_equal(rope.rotate_half(np.array([1.0, 2.0, 3.0, 4.0])), [-3.0, -4.0, 1.0, 2.0])
    # pair 0 is (x[0], x[2]) (rotate-half, not neighbours): e_0 at position 2 turns by 2 rad in that plane
    x = np.zeros((1, 2, 4))
    x[0, 1, 0] = 1.0
    y, _ = rope.rope_forward(x, cos, sin)
    np.testing.assert_allclose(y[0, 1], [np.cos(2), 0.0, np.sin(2), 0.0], atol=1e-15)
    np.testing.assert_array_equal(y[0, 0], x[0, 0])                     # position 0: no rotation


def test_rope_is_a_rotation_and_scores_depend_on_relative_position(rng):
    q, k = rng.standard_normal((2, 8))
    def rotated(x, pos):
        cos, sin = rope.rope_tables(np.array([pos]), 8)
        return rope.rope_forward(x[None, :], cos, sin)[0][0]
    assert np.isclose(np.linalg.norm(rotated(q, 7)), np.linalg.norm(q), rtol=1e-14)
    s1 = rotated(q, 5) @ rotated(k, 2)
    s2 = rotated(q, 105) @ rotated(k, 102)
    s3 = rotated(q, 6) @ rotated(k, 2)
    assert np.isclose(s1, s2, rtol=1e-10) and not np.isclose(s1, s3, rtol=1e-3)
    cos, sin = rope.rope_tables(np.arange(3), 8)
    x = rng.standard_normal((2, 3, 8))
    y, c = rope.rope_forward(x, cos, sin)
    np.testing.assert_allclose(rope.rope_backward(y, c), x, rtol=1e-12, atol=1e-14)   # R^T R = I


# ----------------------------------------------------------------------------------------------
# causality, KV cache, generation


@pytest.mark.parametrize("weights, ternary_qk", VARIANTS)
def test_kv_cache_decoding_equals_full_forward(weights, ternary_qk):
    model = model_of(weights, ternary_qk)
    ids = np.random.default_rng(0).integers(0, CFG["vocab_size"], (2, 11))
    full = model.forward(ids)                                           # (2, 11, V)
    logits, state = model.forward(ids[:, :4], return_state=True)        # prefill 4
    steps = [logits]
    logits, state = model.forward(ids[:, 4:6], state=state, return_state=True)   # a chunk of 2
    steps.append(logits)
    for t in range(6, 11):                                              # then one at a time
        logits, state = model.forward(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(logits)
    assert len(state) == 2 and state[0][0].shape == (2, 2, 11, 8)       # L pairs (B, H, S, hd)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-12, atol=1e-12)


def test_kv_cache_decoding_float32():
    model = model_of("ternary", dtype=np.float32)
    ids = np.random.default_rng(1).integers(0, CFG["vocab_size"], (1, 9))
    logits, state = model.forward(ids[:, :8], return_state=True)
    last, _ = model.forward(ids[:, 8:], state=state, return_state=True)
    assert last.dtype == np.float32 and state[0][0].dtype == np.float32
    np.testing.assert_allclose(last[:, 0], model.forward(ids)[:, 8], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weights, ternary_qk", [("float", False), ("ternary", True)])
def test_attention_is_causal(weights, ternary_qk):
    model = model_of(weights, ternary_qk)
    ids = np.random.default_rng(2).integers(0, CFG["vocab_size"], (1, 8))
    changed = ids.copy()
    changed[0, 5] = (ids[0, 5] + 1) % CFG["vocab_size"]
    a, b = model.forward(ids), model.forward(changed)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])                   # the past never sees the future
    assert not np.allclose(a[:, 5:], b[:, 5:])                          # negative control: it is used after


def argmax_by_full_forward(model, ids, n):
    seq = ids.copy()
    for _ in range(n):
        seq = np.concatenate([seq, model.forward(seq)[:, -1].argmax(axis=-1)[:, None]], axis=1)
    return seq


def test_greedy_generation_equals_full_forward_argmax():
    model = model_of("float", dtype=np.float64, seed=3)
    for p in model.params.values():                       # a peakier model than the 0.02 init
        p *= 10.0 if p.ndim == 2 else 1.0
    prompt = np.array([[1, 5, 9, 2], [7, 7, 3, 30]])
    fast = model.generate(prompt, 20, temperature=0)
    assert fast.shape == (2, 24) and np.array_equal(fast[:, :4], prompt)
    assert np.array_equal(fast, argmax_by_full_forward(model, prompt, 20))
    assert len(set(fast[0, 4:].tolist())) > 1                          # not a degenerate constant


def test_greedy_generation_quantized_picks_full_forward_maximisers():
    # ternary weights and 8-bit activations make exact ties possible, so: every greedy token is a
    # maximiser of the teacher-forced full-sequence logits at its position (as tests/test_generate.py)
    model = model_of("ternary", ternary_qk=True, seed=4)
    prompt = np.array([[1, 5, 9, 2]])
    fast = generate(model, prompt, 15, temperature=0)
    full = model.forward(fast[:, :-1])                                  # (1, 18, V)
    chosen = np.take_along_axis(full[:, 3:], fast[:, 4:, None], axis=-1)[..., 0]
    assert np.all(full[:, 3:].max(axis=-1) - chosen <= 1e-9)
    assert full[0, 5].max() - full[0, 5].min() > 1e-6                   # negative control: not all tied


# ----------------------------------------------------------------------------------------------
# ternary Q and K


def test_qk_ternary_values_codes_and_additions_only_scores(rng):
    q = rng.standard_normal((2, 3, 5, 8))                               # (B, H, T, hd)
    k = rng.standard_normal((2, 3, 6, 8))
    qt, kt = attention.qk_ternary(q), attention.qk_ternary(k)
    cq, sq = attention.qk_ternary_int(q)
    assert cq.dtype == np.int8 and set(np.unique(cq)) <= {-1, 0, 1}
    np.testing.assert_allclose(sq[..., 0], np.abs(q).mean(axis=-1), rtol=1e-15)   # absmean per token, head
    np.testing.assert_array_equal(qt, cq * sq)                          # values {-s, 0, +s} per row
    # hand-computed row: mean|x| = 0.5 -> x / s = [1.6, -0.2, 0.6, -1.8] -> codes [1, 0, 1, -1]
    c, s = attention.qk_ternary_int(np.array([[0.8, -0.1, 0.3, -0.9]]))
    assert s[0, 0] == pytest.approx(0.525) and c.tolist() == [[1, 0, 1, -1]]
    # q~ . k~ = s_q s_k * (sum of +1/-1/0 terms): counted with additions, no multiplication of values
    ck, sk = attention.qk_ternary_int(k)
    agree = (cq[..., :, None, :] == ck[..., None, :, :]) & (cq[..., :, None, :] != 0)
    oppose = (cq[..., :, None, :] == -ck[..., None, :, :]) & (cq[..., :, None, :] != 0)
    counts = agree.sum(-1) - oppose.sum(-1)                             # (B, H, T, S) integers
    np.testing.assert_allclose(counts * sq * sk[..., None, :, 0], qt @ kt.transpose(0, 1, 3, 2), rtol=1e-12,
                               atol=1e-12)


def test_ternary_qk_changes_the_model_and_quantize_false_turns_it_off():
    ids = np.random.default_rng(5).integers(0, CFG["vocab_size"], (2, 6))
    plain, tqk = model_of("float"), model_of("float", ternary_qk=True)
    assert not np.allclose(plain.forward(ids), tqk.forward(ids))
    off = mmf.TransformerLM(tqk.config, seed=0, dtype=np.float64, quantize=False)
    np.testing.assert_array_equal(off.forward(ids), plain.forward(ids))   # same params, Q/K quantizer off
    b158 = model_of("ternary", ternary_qk=True)
    on = b158.forward(ids)
    b158.quantize = False                                               # every quantizer off, same params
    assert b158.backend.weights == "float" and not np.allclose(b158.forward(ids), on)
    b158.quantize = True
    np.testing.assert_array_equal(b158.forward(ids), on)


def test_parameter_names_are_llama_names_plus_bitlinear_norms():
    f, t = model_of("float"), model_of("ternary")
    names = set(f.params)
    assert {"model.embed_tokens.weight", "model.layers.1.input_layernorm.weight",
            "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.1.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.norm.weight", "lm_head.weight"} <= names
    assert not any(".norm.weight" in n and "_proj" in n for n in names)   # float: no BitLinear norms
    extra = set(t.params) - names
    assert len(extra) == 2 * 7 and "model.layers.1.self_attn.k_proj.norm.weight" in extra
    assert t.params["model.layers.0.mlp.down_proj.norm.weight"].shape == (24,)   # the down input width I
    assert "lm_head.norm.weight" not in t.params                       # embedding and head stay float
    assert mmf.TransformerConfig(vocab_size=8, hidden_size=1024, num_layers=1, num_heads=16).intermediate_size \
        == 2816                                                         # the E8 rule


# ----------------------------------------------------------------------------------------------
# Numba backend, checkpoints, registry, training


@pytest.mark.parametrize("weights", ["float", "ternary"])
def test_numba_backend_gives_the_reference_loss_and_grads(weights):
    from kernels_numba.backend import NumbaBackend
    cfg = mmf.TransformerConfig(**CFG, weights=weights, ternary_qk=weights == "ternary")
    ids, tg = np.random.default_rng(6).integers(0, CFG["vocab_size"], (2, 2, 7))
    l0, g0 = mmf.TransformerLM(cfg, seed=2, dtype=np.float64).loss_and_grads(ids, tg)
    be = NumbaBackend(weights=weights)
    l1, g1 = mmf.TransformerLM(cfg, seed=2, dtype=np.float64, backend=be).loss_and_grads(ids, tg)
    assert abs(l1 - l0) <= 1e-12 * abs(l0)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("weights, ternary_qk", [("float", False), ("binary", True)])
def test_checkpoint_round_trip_through_mmf_load(tmp_path, weights, ternary_qk):
    model = model_of(weights, ternary_qk, dtype=np.float32, seed=7)
    path = str(tmp_path / "t.ckpt")
    save_checkpoint(path, params=model.params, model_config=config_to_dict(model.config))
    ck = load_checkpoint(path)
    assert ck.arch == "transformer" and ck.model_config["ternary_qk"] is ternary_qk
    back = mmf.load(path)
    assert type(back) is mmf.TransformerLM and back.config == model.config
    ids = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(back.forward(ids), model.forward(ids))


def test_a_checkpoint_of_one_architecture_is_refused_by_another(tmp_path):
    model = model_of("ternary", dtype=np.float32)
    mmfree_cfg = config_to_dict(mmf.MMfreeConfig(vocab_size=37, hidden_size=16, num_layers=2))
    path = str(tmp_path / "mixed.ckpt")
    save_checkpoint(path, params=model.params, model_config=mmfree_cfg)   # transformer params, mmfree config
    with pytest.raises(CheckpointError, match="mixed.ckpt: parameter names do not match"):
        mmf.load(path)
    with pytest.raises(KeyError, match="unknown parameter 'model.embed_tokens.weight'"):
        mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=37, hidden_size=16, num_layers=2)).params.update(model.params)
    with pytest.raises(ValueError, match=r"MMfreeConfig has no field\(s\) \['max_position_embeddings', "
                                         r"'num_heads', 'rope_theta', 'ternary_qk'\]"):
        config_from_dict({**config_to_dict(model.config), "arch": "mmfree"})
    assert config_from_dict(config_to_dict(model.config)) == model.config


def test_engine_and_accelerator_refuse_the_transformer():
    from fpga_model.accelerator import Accelerator
    from kernels_numba import Engine
    model = model_of("ternary", dtype=np.float32)
    with pytest.raises(ValueError, match="Engine cannot run arch='transformer' weights='ternary'"):
        Engine(model)
    with pytest.raises(ValueError, match="Accelerator cannot run arch='transformer' weights='ternary'"):
        Accelerator.from_model(model)


def test_train_and_sample_a_transformer(tmp_path, capsys):
    from mmf import sample as sample_cli
    from mmf.training.trainer import PRESETS, TrainConfig, main as train_main, train
    cfg = TrainConfig(**{**PRESETS["smoke"], "data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"),
                         "sample_prompts": "", "arch": "transformer", "weights": "float", "num_heads": 2,
                         "max_steps": 30, "lr": 1e-2})
    s = train(cfg)
    assert type(s["model"]) is mmf.TransformerLM and s["model"].config.num_heads == 2
    h = s["history"]
    assert np.mean(h["train_loss"][-5:]) < np.mean(h["train_loss"][:5]) - 0.5   # it learns
    ckpt = s["checkpoint"]
    capsys.readouterr()
    assert sample_cli.main(["--checkpoint", ckpt, "--prompt", "Once", "--max_new_tokens", "5",
                            "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Once")
    # resuming it as the other architecture is a usage error naming both
    argv = ["--preset=smoke", f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'other'}",
            f"--resume={ckpt}", "--progress=False"]
    assert train_main(argv) == 2
    assert "holds an arch='transformer' model but this run trains arch='mmfree'" in capsys.readouterr().err


def test_model_config_of_builds_each_architecture():
    from mmf.training.trainer import TrainConfig, model_config_of
    t = model_config_of(TrainConfig(arch="transformer", weights="binary", hidden_size=256, ternary_qk=True), 50)
    assert type(t) is mmf.TransformerConfig and t.num_heads == 4 and t.weights == "binary" and t.ternary_qk
    assert t.max_position_embeddings == 2048 and t.vocab_size == 50
    m = model_config_of(TrainConfig(), 50)
    assert type(m) is mmf.MMfreeConfig and m.weights == "ternary"


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(num_heads=3), ValueError, "hidden_size=16 is not divisible by num_heads=3"),
    (dict(num_heads=16), ValueError, "head width .* is odd"),
    (dict(num_heads=0), ValueError, "num_heads must be positive"),
    (dict(num_heads=2.0), TypeError, "num_heads must be an int"),
    (dict(weights="int4"), ValueError, "TransformerConfig.weights must be one of"),
    (dict(ternary_qk=1), TypeError, "ternary_qk must be a bool"),
    (dict(rope_theta=0.5), ValueError, "rope_theta must be a float"),
    (dict(max_position_embeddings=0), ValueError, "max_position_embeddings must be positive"),
    (dict(intermediate_size=-1), ValueError, "intermediate_size must be positive"),
])
def test_invalid_configs(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        mmf.TransformerConfig(**{**CFG, **kwargs})


def test_context_longer_than_max_position_embeddings_is_refused():
    model = model_of("float", max_position_embeddings=8)
    ids = np.zeros((1, 9), dtype=np.int64)
    with pytest.raises(ValueError, match=r"context of 9 tokens \(0 cached \+ 9 new\) exceeds "
                                         r"max_position_embeddings=8.*larger max_position_embeddings"):
        model.forward(ids)
    model.forward(ids[:, :8])                                           # exactly the limit is fine
    with pytest.raises(ValueError, match=r"context of 9 tokens \(8 cached \+ 1 new\)"):
        model.generate(ids[0, :6], 4, temperature=0)                    # the 4th new token needs position 8
    assert model.generate(ids[0, :6], 3, temperature=0).shape == (9,)   # (the last token is never fed back)


def test_wrong_state_is_refused():
    model = model_of("float")
    ids = np.zeros((2, 3), dtype=np.int64)
    _, state = model.forward(ids, return_state=True)
    with pytest.raises(ValueError, match="list of 2 \\(K, V\\) pairs"):
        model.forward(ids, state=state[:1])
    with pytest.raises(ValueError, match="state\\[0\\] must be a \\(K, V\\) pair"):
        model.forward(ids, state=[state[0][0], state[1]])
    with pytest.raises(ValueError, match="shape \\(1, 2, 3, 8\\).*\\(B=2, H=2, S, hd=8\\)"):
        model.forward(ids, state=[(k[:1], v[:1]) for k, v in state])   # cache of another batch size
    mmfree_state = [np.zeros((2, 16))] * 2
    with pytest.raises(ValueError, match=r"state\[0\] must be a \(K, V\) pair"):
        model.forward(ids, state=mmfree_state)
    with pytest.raises(TypeError, match="mmf.TransformerConfig"):
        mmf.TransformerLM(mmf.MMfreeConfig(vocab_size=8, hidden_size=4, num_layers=1))
    with pytest.raises(ValueError, match="backend instance runs weights='ternary'"):
        from mmf.backend import NumpyBackend
        mmf.TransformerLM(model.config, backend=NumpyBackend(weights="ternary"))


@pytest.mark.parametrize("argv, words", [
    (["--ternary_qk=True"], "--ternary_qk applies to --arch=transformer only"),
    (["--num_heads=2"], "--num_heads applies to --arch=transformer only"),
    (["--arch=transformer", "--block_size=4096"], "block_size=4096 exceeds .*max_position_embeddings=2048"),
    (["--arch=transformer", "--num_heads=3"], "not divisible by num_heads=3"),
    (["--arch=gpt"], "unknown architecture 'gpt'; known: mmfree, transformer"),
])
def test_train_cli_refuses_bad_model_options(argv, words, capsys):
    from mmf.training.trainer import main as train_main
    assert train_main(["--preset=smoke", *argv]) == 2
    assert len(__import__("re").findall(words, capsys.readouterr().err)) == 1
