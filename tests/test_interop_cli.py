"""`python -m mmf.export` writes a checkpoint as a Hugging Face directory; `python -m mmf.sample --hf=DIR`
samples from one (with --engine too) and reports tokens/s; usage errors exit with code 2."""
import os
import subprocess
import sys

import numpy as np
import pytest

import mmf
from mmf import export as export_cli
from mmf import sample as sample_cli
from mmf.text.storygrammar import generate_story_corpus
from mmf.text.tokenizer import train_bpe
from mmf.training.checkpoint import save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tok = train_bpe(generate_story_corpus(5000, seed=1).text, 300, progress=False)
    cfg = mmf.MMfreeConfig(vocab_size=300, hidden_size=32, num_layers=2, intermediate_size=64)
    model = mmf.MMfreeLM(cfg, seed=2)
    path = str(tmp_path_factory.mktemp("ck") / "m.ckpt")
    save_checkpoint(path, params=model.params, model_config={**cfg.__dict__}, tokenizer=tok.to_dict())
    return path, model, tok


def test_export_then_sample_from_the_directory(checkpoint, tmp_path, capsys):
    path, model, tok = checkpoint
    out = str(tmp_path / "hf")
    assert export_cli.main([f"--checkpoint={path}", f"--out_dir={out}", "--dtype=float32"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    assert "wrote" in capsys.readouterr().out
    back = mmf.MMfreeLM.from_pretrained(out)
    ids = np.array([tok.encode("Once upon a time")])
    assert np.array_equal(back.forward(ids), model.forward(ids))
    args = ["--prompt=Once upon a time", "--max_new_tokens=6", "--temperature=0"]
    assert sample_cli.main([f"--checkpoint={path}", *args]) == 0
    from_checkpoint = capsys.readouterr().out
    assert sample_cli.main([f"--hf={out}", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == from_checkpoint and from_checkpoint.startswith("Once upon a time")
    assert "tokens/s" in captured.err
    assert sample_cli.main([f"--hf={out}", "--engine", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Once upon a time") and "tokens/s, kernels_numba Engine" in captured.err


def test_export_writes_bfloat16_by_default(checkpoint, tmp_path, capsys):
    path, model, _ = checkpoint
    assert export_cli.main([f"--checkpoint={path}", f"--out_dir={tmp_path}", "--max_shard_bytes=30000"]) == 0
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    from mmf.interop.safetensors_io import CheckpointDir
    assert CheckpointDir(str(tmp_path)).storage_dtypes() == {"BF16"}


def test_usage_errors_exit_2(checkpoint, tmp_path, capsys):
    path, _, _ = checkpoint
    assert export_cli.main([f"--checkpoint={tmp_path / 'nope.ckpt'}", f"--out_dir={tmp_path}"]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        export_cli.main([f"--checkpoint={path}", f"--out_dir={tmp_path}", "--dtype=float16"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        export_cli.main([f"--checkpoint={path}"])
    assert e.value.code == 2 and "--out_dir" in capsys.readouterr().err
    assert export_cli.main([f"--checkpoint={path}", f"--out_dir={tmp_path}", "--max_shard_bytes=0"]) == 2
    assert "max_shard_bytes must be a positive int" in capsys.readouterr().err
    assert sample_cli.main([f"--checkpoint={path}", f"--hf={tmp_path}"]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    assert sample_cli.main([]) == 2
    assert sample_cli.main([f"--hf={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err


def test_export_refuses_a_binary_checkpoint(tmp_path, capsys):
    from mmf.models.registry import config_to_dict
    cfg = mmf.MMfreeConfig(vocab_size=20, hidden_size=16, num_layers=1, weights="binary")
    path = str(tmp_path / "binary.ckpt")
    save_checkpoint(path, params=mmf.MMfreeLM(cfg).params, model_config=config_to_dict(cfg))
    assert export_cli.main([f"--checkpoint={path}", f"--out_dir={tmp_path / 'hf'}"]) == 2
    assert "'binary' weights" in capsys.readouterr().err and not os.path.exists(tmp_path / "hf")


def test_export_module_runs_in_a_subprocess(checkpoint, tmp_path):
    path, _, _ = checkpoint
    r = subprocess.run([sys.executable, "-m", "mmf.export", f"--checkpoint={path}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--out_dir" in r.stderr
