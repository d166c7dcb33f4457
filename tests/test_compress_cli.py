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
    assert main([f"--checkpoint={float_ckpt}", "--methods=rtn-binary,rtn-ternary-native,billm,onebit",
                 f"--out_dir={out}", "--smoke"]) == 0
    return out


def test_cli_runs_the_methods_and_writes_the_table(compressed):
    out = compressed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = [r["method"] for r in rows]
    assert methods[0] == "float" and {"rtn-binary", "billm", "onebit", "onebit-nmf"} <= set(methods)
    for col in ("method", "bits_per_weight", "val_loss", "bits_per_char", "seconds"):
        assert all(r[col] != "" for r in rows), col
    bits = {r["method"]: float(r["bits_per_weight"]) for r in rows}
    assert 1.0 < bits["rtn-binary"] < 1.01 and bits["onebit"] == bits["onebit-nmf"] < 2
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
