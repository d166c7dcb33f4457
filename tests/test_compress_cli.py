"""python -m mmf.compress end to end on a tiny float checkpoint (smoke settings), the compressed
checkpoints through mmf.load / generate / the Numba engine, trainer --init_from, and bad input."""
import csv
import re

import numpy as np
import pytest

import mmf
from mmf.compress import main
from mmf.training.checkpoint import load_checkpoint
from mmf.training.trainer import PRESETS, TrainConfig, train


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    """A float model trained for a few steps on the embedded story corpus (its files ship with mmf)."""
    out = tmp_path_factory.mktemp("float")
    cfg = TrainConfig(**{**PRESETS["smoke"], "weights": "float", "max_steps": 6, "eval_interval": 6,
                         "out_dir": str(out), "sample_prompts": ""})
    train(cfg)
    return str(out / "ckpt.ckpt")


@pytest.fixture(scope="module")
def compressed(float_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("compressed")
    assert main([f"--checkpoint={float_ckpt}", "--methods=rtn-binary,rtn-ternary-native,billm,onebit,onebit-ln",
                 f"--out_dir={out}", "--smoke"]) == 0
    return out


def test_cli_runs_the_methods_and_writes_the_table(compressed):
    out = compressed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = [r["method"] for r in rows]
    assert methods[0] == "float" and {"rtn-binary", "billm", "onebit", "onebit-nmf", "onebit-ln",
                                      "onebit-nmf-ln"} <= set(methods)
    assert {r["model"] for r in rows} == {"mmfree"} and {r["float_seed"] for r in rows} == {"0"}
    for col in ("method", "bits_per_weight", "val_loss", "bits_per_char", "seconds"):
        assert all(r[col] != "" for r in rows), col
    bits = {r["method"]: float(r["bits_per_weight"]) for r in rows}
    assert 1.0 < bits["rtn-binary"] < 1.01 and bits["onebit"] == bits["onebit-nmf"] < 2
    assert bits["onebit-ln"] == bits["onebit"]                 # the output LayerNorm stores nothing
    assert [r["bits_per_char_int8_act"] != "" for r in rows] == [m != "rtn-ternary-native" for m in methods]
    assert (out / "results.md").read_text().count("\n") == len(rows) + 2
    assert (out / "quality_vs_bits.png").stat().st_size > 1000
    # a compressed checkpoint is an ordinary one: mmf.load, forward, generate; extra says what was done
    ck = load_checkpoint(str(out / "billm-s0.ckpt"))
    assert ck.extra["compression"]["method"] == "billm" and ck.extra["compression"]["bits_per_weight"] > 1
    model = mmf.load(str(out / "billm-s0.ckpt"))
    assert model.config.weights == "float"
    text = ck.build_tokenizer().decode(model.generate(np.array([[5, 6, 7]]), 8, temperature=0)[0])
    assert isinstance(text, str) and len(text) > 0


def test_onebit_ln_checkpoint_restores_the_output_norm(compressed):
    """The saved OneBit model carries its output LayerNorm: mmf.load rebuilds it (config field), it
    generates through the normal API, its loss is the table's, and the norm changes the logits."""
    import dataclasses
    from mmf.compress import SMOKE, load_data
    from mmf.compression.evaluation import validation_loss
    path = str(compressed / "onebit-ln-s0.ckpt")
    ck = load_checkpoint(path)
    assert ck.extra["compression"]["method"] == "onebit-ln"
    assert ck.extra["compression"]["output_norm"].startswith("layernorm, no parameters")
    model = mmf.load(path)
    assert model.config.projection_output_norm is True and model.config.weights == "float"
    assert set(model.params) == set(mmf.load(str(compressed / "onebit-s0.ckpt")).params)   # no new parameters
    with open(compressed / "results.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == "onebit-ln")
    data = load_data(ck)
    loss = validation_loss(model, data.val, SMOKE.block_size, SMOKE.eval_windows, SMOKE.batch_size)
    assert loss == pytest.approx(float(row["val_loss"]), abs=1e-4)
    ids = np.array([[5, 6, 7]])
    out = model.generate(ids, 6, temperature=0)
    assert out.shape == (1, 9)
    plain = mmf.MMfreeLM(dataclasses.replace(model.config, projection_output_norm=False))
    for k, v in model.params.items():
        plain.params[k] = v
    assert np.max(np.abs(plain.forward(ids) - model.forward(ids))) > 1e-3   # the norm is really applied


def test_every_method_compresses_a_float_transformer(tmp_path):
    """Transformer++ float: every method on its Llama projections (q, k, v, o, gate, up, down), the
    results through mmf.load and generate; rtn-ternary-native (the MatMul-free format) is refused."""
    cfg = TrainConfig(**{**PRESETS["smoke"], "arch": "transformer", "weights": "float", "num_heads": 2,
                         "max_steps": 4, "eval_interval": 4, "out_dir": str(tmp_path / "tf"), "sample_prompts": ""})
    train(cfg)
    ckpt = str(tmp_path / "tf" / "ckpt.ckpt")
    methods = ["rtn-ternary", "rtn-ternary-channel", "rtn-binary", "rtn-binary-channel", "billm", "billm-no-obc",
               "onebit-svd", "onebit-nmf", "onebit", "onebit-ln"]
    out = tmp_path / "c"
    assert main([f"--checkpoint={ckpt}", f"--methods={','.join(methods)}", f"--out_dir={out}", "--smoke"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"transformer"}
    assert set(methods) | {"float", "onebit-nmf-ln"} == {r["method"] for r in rows}
    float_params = load_checkpoint(ckpt).params
    for name in ("rtn-binary", "billm-s0", "onebit-s0", "onebit-ln-s0"):
        ck = load_checkpoint(str(out / f"{name}.ckpt"))
        llama = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert {k.split(".")[-2] for k in ck.extra["compression"]["tensors"]} == llama, name
        changed = {k for k, v in ck.params.items() if not np.array_equal(v, float_params[k])}
        if not name.startswith("onebit"):             # distillation also trains the float parts; PTQ does not
            assert {k.split(".")[-2] for k in changed} == llama, name
        model = mmf.load(str(out / f"{name}.ckpt"))
        assert model.config.projection_output_norm == (name == "onebit-ln-s0")
        assert model.generate(np.array([[5, 6, 7]]), 4, temperature=0).shape == (1, 7)
    assert main([f"--checkpoint={ckpt}", "--methods=rtn-ternary-native", f"--out_dir={tmp_path / 'n'}",
                 "--smoke"]) == 2


def test_rtn_ternary_native_runs_in_the_engine(compressed, float_ckpt):
    from kernels_numba import Engine
    model = mmf.load(str(compressed / "rtn-ternary-native.ckpt"))
    assert model.config.weights == "ternary"
    prompt = np.array([[5, 6, 7], [9, 3, 1]])
    np.testing.assert_array_equal(Engine(model).generate(prompt, 12, temperature=0.0),
                                  model.generate(prompt, 12, temperature=0))
    with pytest.raises(ValueError, match="Engine cannot run.*'float'"):   # BiLLM/OneBit: float matrices
        Engine(mmf.load(str(compressed / "billm-s0.ckpt")))


def test_bad_input_exits_2(float_ckpt, tmp_path, capsys):
    out = str(tmp_path / "c")
    assert main([f"--checkpoint={float_ckpt}", "--methods=rtn-ternary,gptq", f"--out_dir={out}"]) == 2
    assert "unknown method" in capsys.readouterr().err
    quantized = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=512, hidden_size=16, num_layers=1), seed=0)
    from mmf.models.registry import config_to_dict
    from mmf.training.checkpoint import save_checkpoint
    qpath = str(tmp_path / "q.ckpt")
    ck = load_checkpoint(float_ckpt)
    save_checkpoint(qpath, params=quantized.params, model_config=config_to_dict(quantized.config),
                    train_config=ck.train_config, tokenizer=ck.tokenizer)
    assert main([f"--checkpoint={qpath}", "--methods=billm", f"--out_dir={out}"]) == 2
    assert "already quantized" in capsys.readouterr().err
    wrong = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=300, hidden_size=16, num_layers=1, weights="float"))
    wpath = str(tmp_path / "w.ckpt")
    save_checkpoint(wpath, params=wrong.params, model_config=config_to_dict(wrong.config),
                    train_config=ck.train_config)
    assert main([f"--checkpoint={wpath}", "--methods=billm", f"--out_dir={out}"]) == 2
    assert re.search(r"vocabulary of \d+ tokens but the model", capsys.readouterr().err)


def test_init_from_starts_a_quantized_run_from_float_parameters(float_ckpt, tmp_path):
    cfg = TrainConfig(**{**PRESETS["smoke"], "weights": "ternary", "max_steps": 1, "eval_interval": 1,
                         "out_dir": str(tmp_path / "q"), "sample_prompts": "", "init_from": float_ckpt,
                         "lr": 1e-9, "warmup_steps": 1})
    s = train(cfg)
    start = load_checkpoint(float_ckpt).params
    for k, v in s["model"].params.items():                 # one step at lr 1e-9: still the float weights
        np.testing.assert_allclose(v, start[k], atol=1e-6)
    assert s["model"].config.weights == "ternary"
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(resume=float_ckpt, init_from=float_ckpt)
    other = TrainConfig(**{**PRESETS["smoke"], "hidden_size": 24, "out_dir": str(tmp_path / "r"),
                           "sample_prompts": "", "init_from": float_ckpt})
    with pytest.raises(ValueError, match="only 'weights' may differ"):
        train(other)
