"""Issue 11, items 2-5 and 9 for runs: the data cache is keyed, committed and verified; --resume is
exact or refused with the list of differences; settings and the output directory are checked before
the work; a checkpoint is kept only if its validation loss is finite; every CLI answers a user's
mistake with one line and an exit code (2 = usage), --debug with the traceback."""
import dataclasses
import errno
import json
import os
import shutil

import numpy as np
import pytest

import mmf
from mmf.text import corpus
from mmf.text.corpus import load_dataset, prepare
from mmf.training.adamw import AdamW
from mmf.training.checkpoint import load_checkpoint, save_checkpoint
from mmf.training.trainer import PRESETS, NonFiniteLossError, TrainConfig, main as train_main, train

SMALL = dict(PRESETS["smoke"], story_bytes=20_000, vocab_size=300, max_steps=12, eval_interval=6,
             checkpoint_interval=3, sample_prompts="", eval_windows=2)


def cfg(tmp_path, **kw):
    return TrainConfig(**{**SMALL, "data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), **kw})


def prep(tmp_path, **kw):
    return prepare("stories", "bpe", 300, out_dir=str(tmp_path), story_bytes=20_000, progress=False, **kw)


# ---------------------------------------------------------------- item 2: the data cache

def test_val_fraction_is_part_of_the_cache_key(tmp_path):
    a, b = prep(tmp_path), prep(tmp_path, val_fraction=0.2)
    assert a.name != b.name and "val0.2" in b.name
    assert len(b.val) > len(a.val)
    assert load_dataset(a.name, str(tmp_path)).meta == a.meta       # both caches live side by side


def test_a_death_between_files_leaves_no_valid_looking_cache(tmp_path, monkeypatch):
    good = prep(tmp_path)
    real = corpus.save_tokenizer

    def disk_full(tok, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(corpus, "save_tokenizer", disk_full)         # dies after the two token files
    with pytest.raises(OSError):
        prep(tmp_path, force=True)
    assert not os.path.exists(tmp_path / f"{good.name}_meta.json")   # uncommitted
    monkeypatch.setattr(corpus, "save_tokenizer", real)
    again = prep(tmp_path)                                            # rebuilt, consistent
    np.testing.assert_array_equal(again.train, good.train)


def test_a_mismatched_token_file_is_refused_with_its_name(tmp_path):
    d = prep(tmp_path)
    train_bin = tmp_path / f"{d.name}_train.bin"
    data = train_bin.read_bytes()
    train_bin.write_bytes(data[: len(data) // 2])                    # another run's shorter file
    with pytest.raises(ValueError, match=f"{d.name}_train.bin.*does not match.*--force"):
        prep(tmp_path)
    fixed = prep(tmp_path, force=True)                               # the CLI's way to rebuild
    assert len(fixed.train) == d.meta["train_tokens"]
    flipped = bytearray(data)
    flipped[100] ^= 1                                                # same size, other content
    train_bin.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="train.bin"):
        load_dataset(d.name, str(tmp_path))


def test_training_on_a_damaged_cache_exits_2_and_rebuild_data_fixes_it(tmp_path, capsys):
    c = cfg(tmp_path, max_steps=2)
    train(c)
    name = corpus.dataset_name("stories", "bpe", 300, 20_000, c.data_seed)
    (tmp_path / "data" / f"{name}_val.bin").write_bytes(b"\0\0" * 10)
    argv = [f"--{k}={v!r}" for k, v in dataclasses.asdict(c).items()]
    assert train_main(argv) == 2
    assert f"{name}_val.bin" in capsys.readouterr().err
    assert train_main(argv + ["--rebuild_data=True"]) == 0


# ---------------------------------------------------------------- item 3: exact resume or a refusal

@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run stopped at step 3 (inside the warmup of 5 steps) and one stopped at step 9."""
    tmp = tmp_path_factory.mktemp("stopped")
    early = train(cfg(tmp / "early", stop_at=3))["checkpoint"]
    late = train(cfg(tmp / "late", stop_at=9))["checkpoint"]
    return tmp, early, late


@pytest.mark.parametrize("change, words", [
    (dict(data_seed=7), "data_seed: 1337 -> 7"),
    (dict(val_fraction=0.2), "val_fraction: 0.1 -> 0.2"),
    (dict(tokenizer="char"), "tokenizer: 'bpe' -> 'char'"),
    (dict(seed=1), "seed: 0 -> 1"),
    (dict(batch_size=8), "batch_size: 4 -> 8"),
    (dict(hidden_size=16), "hidden_size: 32 -> 16"),
    (dict(lr=1e-3), "lr: 0.004 -> 0.001"),
    (dict(beta2=0.99, grad_clip=0.5), "beta2: 0.95 -> 0.99\n  grad_clip: 1.0 -> 0.5"),
])
def test_resume_refuses_what_would_not_be_exact(stopped, change, words):
    tmp, early, _ = stopped
    with pytest.raises(ValueError, match="cannot resume exactly") as e:
        train(cfg(tmp / "x", resume=early, **change))
    assert words in str(e.value)
    assert not os.path.exists(tmp / "x" / "data")                    # refused before preparing data


def test_resume_may_change_outputs_and_with_the_flag_the_optimisation(stopped):
    tmp, early, _ = stopped
    s = train(cfg(tmp / "y", resume=early, out_dir=str(tmp / "elsewhere"), eval_interval=4, progress=False,
                  checkpoint_interval=0, stop_at=6))
    assert s["steps"] == 6
    s = train(cfg(tmp / "z", resume=early, lr=1e-3, allow_changed_optim=True, stop_at=5))
    assert s["steps"] == 5


def test_max_steps_may_change_only_where_the_schedule_of_the_done_steps_is_the_same(stopped, tmp_path):
    tmp, early, late = stopped
    longer = train(cfg(tmp / "w", resume=early, max_steps=20))    # step 3 < warmup 5: same schedule so far
    straight = train(cfg(tmp_path, max_steps=20))
    a, b = load_checkpoint(longer["checkpoint"]).params, load_checkpoint(straight["checkpoint"]).params
    assert all(np.array_equal(a[k], b[k]) for k in a)                # == a fresh 20-step run, bit for bit
    with pytest.raises(ValueError, match="max_steps: 12 -> 20 .*schedule"):
        train(cfg(tmp / "v", resume=late, max_steps=20))             # step 9: past the midpoint of 12


def test_resume_from_a_checkpoint_without_optimizer_state_is_refused(tmp_path, capsys):
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=300, hidden_size=32, num_layers=1))
    path = str(tmp_path / "weights_only.ckpt")
    save_checkpoint(path, params=model.params, model_config=dataclasses.asdict(model.config))
    assert train_main([f"--resume={path!r}", "--preset=smoke", f"--out_dir={str(tmp_path / 'r')!r}"]) == 2
    assert "no optimizer state" in capsys.readouterr().err


# ---------------------------------------------------------------- item 4: fail before the work

@pytest.mark.parametrize("kw, words", [
    (dict(beta2=2.0), "beta2 must be in"), (dict(beta1=-0.1), "beta1"), (dict(weight_decay=-1.0), "weight_decay"),
    (dict(grad_clip=-1.0), "grad_clip"), (dict(grad_clip=float("inf")), "grad_clip"),
    (dict(backend="cuda"), "backend"), (dict(stop_at=13), "stop_at"), (dict(sample_temperature=-1.0), "sample_temp"),
    (dict(sample_top_k=-2), "sample_top_k"), (dict(sample_tokens=-1), "sample_tokens"),
    (dict(val_fraction=1.0), "val_fraction"), (dict(warmup_steps=-1), "warmup_steps"),
    (dict(lr=0.5, weight_decay=1e6), "weight_decay"), (dict(resume="/no/such.ckpt"), "resume"),
])
def test_impossible_settings_are_refused_by_the_config(tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        cfg(tmp_path, **kw)


def test_an_unusable_output_directory_is_found_before_the_data(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a writable directory"):
        train(cfg(tmp_path, out_dir=str(blocker / "run")))
    assert not os.path.exists(tmp_path / "data")                     # no data prepared

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ValueError, match="MB free"):
        train(cfg(tmp_path))
    assert not os.path.exists(tmp_path / "data")


def test_sample_prompts_the_tokenizer_cannot_encode_are_found_before_training(tmp_path):
    c = cfg(tmp_path, tokenizer="char", sample_prompts="Once|\u00e9t\u00e9 \u2603")
    with pytest.raises(ValueError, match="sample_prompts: .* cannot be encoded"):
        train(c)
    assert not os.path.exists(os.path.join(c.out_dir, "ckpt.ckpt"))


# ---------------------------------------------------------------- item 5: the last good checkpoint is good

def _poison_after(monkeypatch, bad_step):
    """From optimizer step `bad_step` on, the final-norm gain becomes 3e38: parameters stay finite,
    the forward overflows to NaN (what a huge weight decay did in the issue)."""
    real = AdamW.step

    def step(self, grads, lr, weight_decay):
        real(self, grads, lr=lr, weight_decay=weight_decay)
        if self.t >= bad_step:
            self.params["model.norm.weight"][:] = 3e38
    monkeypatch.setattr(AdamW, "step", step)


def test_a_checkpoint_with_a_nan_forward_is_never_written(tmp_path, monkeypatch):
    _poison_after(monkeypatch, 6)                                    # right before the step-6 save
    c = cfg(tmp_path)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLossError) as e:
        train(c)
    msg = str(e.value)
    assert "validation batch" in msg and os.path.join(c.out_dir, "ckpt.ckpt") in msg
    ck = load_checkpoint(os.path.join(c.out_dir, "ckpt.ckpt"))
    assert ck.step == 3                                               # the step-6 save was refused
    assert np.isfinite(ck.params["model.norm.weight"]).all() and ck.params["model.norm.weight"].max() < 1e3


def test_the_error_never_recommends_a_checkpoint_it_did_not_verify(tmp_path, monkeypatch):
    c = cfg(tmp_path)
    os.makedirs(c.out_dir)
    shutil.copy(__file__, os.path.join(c.out_dir, "ckpt.ckpt"))     # someone else's file in out_dir
    _poison_after(monkeypatch, 1)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLossError, match="(?i)last good checkpoint: none yet") as e:
        train(c)
    assert "resume" not in str(e.value) and "ckpt.ckpt" not in str(e.value)


# ---------------------------------------------------------------- item 9: clear errors from every CLI

def test_train_cli_usage_errors_exit_2_and_debug_shows_the_traceback(capsys):
    for argv, words in ((["--beta2=2"], "beta2"), (["--weight_decay=-1"], "weight_decay"),
                        (["--grad_clip=-1"], "grad_clip"), (["--backend=gpu"], "backend")):
        assert train_main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    with pytest.raises(ValueError, match="beta2"):
        train_main(["--beta2=2", "--debug"])


def test_sample_cli_errors(tmp_path, capsys):
    from mmf import sample
    assert sample.main(["--checkpoint", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 not really")
    assert sample.main(["--checkpoint", str(tmp_path / "junk.ckpt")]) == 2
    assert "junk.ckpt" in capsys.readouterr().err


def _nan_forward_checkpoint(tmp_path, vocab=16):
    """Finite params (saveable) whose forward is NaN, with a char tokenizer."""
    from mmf.text.tokenizer import build_tokenizer
    tok = build_tokenizer("char", "abcdefghijklmnop", 0, progress=False)
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1,
                                          intermediate_size=32))
    model.params["model.norm.weight"][:] = 3e38
    path = str(tmp_path / "nan.ckpt")
    save_checkpoint(path, params=model.params, model_config=dataclasses.asdict(model.config),
                    tokenizer=tok.to_dict())
    return path


def test_sample_and_fpga_clis_fail_on_nan_logits(tmp_path, capsys):
    from mmf import sample
    import fpga_model.__main__ as fpga
    path = _nan_forward_checkpoint(tmp_path)
    with np.errstate(all="ignore"):
        assert sample.main(["--checkpoint", path, "--prompt", "abc", "--temperature", "0"]) == 1
        assert "non-finite logits" in capsys.readouterr().err
        assert fpga.main(["--checkpoint", path, "--prompt", "abc", "--tokens", "2"]) == 1
    assert "non-finite logits" in capsys.readouterr().err
    assert not fpga.comparison_passes(True, float("nan")) and fpga.comparison_passes(True, 0.0)


@pytest.mark.parametrize("argv, words", [
    (["--random-model", "16,16,1", "--tokens=-1"], "--tokens must be >= 0"),
    (["--random-model", "16,16,1", "--prompt-ids", "1,99"], r"must lie in \[0, 16\)"),
    (["--random-model", "16,16,1", "--prompt-ids", "1,x"], "comma-separated ints"),
    (["--random-model", "16,16"], "three ints"),
])
def test_fpga_cli_usage_errors(argv, words, tmp_path, capsys):
    import fpga_model.__main__ as fpga
    assert fpga.main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(words, err) and "Traceback" not in err
    assert fpga.main(["--checkpoint", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
