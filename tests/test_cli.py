"""Command lines: `python -m mmf.train` overrides are type-checked (unknown or ill-typed keys are
rejected with a clear message); `python -m mmf.sample` and data/prepare.py work end to end."""
import os
import subprocess
import sys

import pytest

from mmf import sample as sample_cli
from mmf.training.trainer import PRESETS, TrainConfig, config_from_args, main as train_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overrides_apply_with_their_types():
    cfg = config_from_args(["--preset=shakespeare", "--max_steps=7", "--lr=2e-3", "--progress=False",
                            "--out_dir=somewhere", "--sample_prompts='A|B'"])
    assert cfg.max_steps == 7 and cfg.lr == 2e-3 and cfg.progress is False
    assert cfg.out_dir == "somewhere" and cfg.sample_prompts == "A|B"
    assert cfg.corpus == "tinyshakespeare"                       # from the preset
    assert config_from_args(["--weight_decay=0"]).weight_decay == 0.0   # an int is fine for a float
    assert config_from_args([]) == TrainConfig(**PRESETS["tiny"])


@pytest.mark.parametrize("argv, error, match", [
    (["--max_step=5"], ValueError, "unknown option --max_step.*max_steps"),
    (["--learning_rate=0.1"], ValueError, "unknown option --learning_rate"),
    (["--max_steps=abc"], TypeError, "max_steps must be int, got str"),
    (["--max_steps=1.5"], TypeError, "max_steps must be int, got float"),
    (["--lr=fast"], TypeError, "lr must be float, got str"),
    (["--progress=1"], TypeError, "progress must be bool, got int"),
    (["--hidden_size=True"], TypeError, "hidden_size must be int, got bool"),
    (["--corpus=3"], TypeError, "corpus must be str, got int"),
    (["--corpus=wiki"], ValueError, "corpus must be"),
    (["--output_gate=sigmoid"], ValueError, "output_gate must be 'official' or 'paper', got 'sigmoid'"),
    (["--preset=huge"], ValueError, "unknown preset 'huge'"),
    (["max_steps=5"], ValueError, "use --key=value"),
    (["--max_steps"], ValueError, "use --key=value"),
])
def test_bad_overrides_are_rejected(argv, error, match):
    with pytest.raises(error, match=match):
        config_from_args(argv)


def test_main_reports_bad_override_and_exits_2(capsys):
    assert train_main(["--bogus=1"]) == 2
    assert "unknown option --bogus" in capsys.readouterr().err


def test_train_module_rejects_bad_override_in_a_subprocess():
    r = subprocess.run([sys.executable, "-m", "mmf.training.trainer", "--max_steps=ten"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "max_steps must be int" in r.stderr


def test_train_then_sample_end_to_end(tmp_path, capsys):
    out_dir, data_dir = str(tmp_path / "run"), str(tmp_path / "data")
    assert train_main(["--preset=smoke", f"--out_dir={out_dir}", f"--data_dir={data_dir}",
                       "--max_steps=6", "--sample_prompts=Once"]) == 0
    printed = capsys.readouterr().out
    assert "entropy floor" in printed and "--- sample 1 (prompt 'Once') ---\nOnce" in printed
    ckpt = os.path.join(out_dir, "ckpt.ckpt")
    assert sample_cli.main(["--checkpoint", ckpt, "--prompt", "One sunny", "--max_new_tokens", "8",
                            "--temperature", "0"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("One sunny")
    assert sample_cli.main(["--checkpoint", ckpt, "--prompt", "One sunny", "--max_new_tokens", "8",
                            "--temperature", "0"]) == 0
    assert capsys.readouterr().out == first                      # greedy is deterministic
    assert sample_cli.main(["--checkpoint", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_prepare_script(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "data", "prepare.py"), "--story_bytes=30000",
                        f"--out_dir={tmp_path}", "--vocab_size=300"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "entropy floor of the val split" in r.stdout
    assert (tmp_path / "stories30k-seed1337_bpe300_train.bin").stat().st_size > 0
    bad = subprocess.run([sys.executable, os.path.join(REPO, "data", "prepare.py"), "--corpus=tinyshakespeare",
                          "--ts_path=/nonexistent/ts.txt", f"--out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "/nonexistent/ts.txt" in bad.stderr
