"""Corpora and token files: Tiny Shakespeare resolution with sha256, splits, uint16 memmaps, batches,
prepared datasets."""
import hashlib
import io
import json
import os

import numpy as np
import pytest

import mmf.text.corpus as corpus
from mmf.text.corpus import (eval_windows, get_batch, load_dataset, load_tiny_shakespeare, prepare,
                        read_tokens, split_text, write_tokens)

TS_PATH = os.environ.get("MMF_TINYSHAKESPEARE") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")
needs_ts = pytest.mark.skipif(not os.path.isfile(TS_PATH), reason="Tiny Shakespeare not on this machine")


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No local copy anywhere: env var unset, empty cache, no shared copy."""
    monkeypatch.delenv(corpus.TINY_SHAKESPEARE_ENV, raising=False)
    monkeypatch.setattr(corpus, "_TS_SHARED", str(tmp_path / "no-shared.txt"))
    return str(tmp_path / "cache" / "ts.txt")


# ----------------------------------------------------------------------------------------------
# Tiny Shakespeare


def test_wrong_file_is_refused_by_sha256(tmp_path):
    fake = tmp_path / "fake.txt"
    fake.write_text("To be or not to be\n")
    with pytest.raises(ValueError, match="sha256"):
        load_tiny_shakespeare(str(fake))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_tiny_shakespeare(str(tmp_path / "missing.txt"))


def test_clear_error_when_no_copy_and_no_download(nowhere):
    with pytest.raises(FileNotFoundError, match="Tried") as e:
        load_tiny_shakespeare(download=False, cache_path=nowhere)
    assert "ts_path" in str(e.value)


def test_failed_download_is_reported(nowhere, monkeypatch):
    def offline(url, timeout):
        raise OSError("network is unreachable")
    monkeypatch.setattr(corpus.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="network is unreachable"):
        load_tiny_shakespeare(cache_path=nowhere)


def test_downloaded_bytes_with_wrong_hash_are_refused(nowhere, monkeypatch):
    monkeypatch.setattr(corpus.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"tampered"))
    with pytest.raises(ValueError, match="sha256"):
        load_tiny_shakespeare(cache_path=nowhere)
    assert not os.path.exists(nowhere)


@needs_ts
def test_download_route_verifies_and_caches(nowhere, monkeypatch):
    with open(TS_PATH, "rb") as f:
        real = f.read()
    assert hashlib.sha256(real).hexdigest() == corpus.TINY_SHAKESPEARE_SHA256
    monkeypatch.setattr(corpus.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(real))
    text = load_tiny_shakespeare(cache_path=nowhere)
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    with open(nowhere, "rb") as f:
        assert f.read() == real                              # cached for the next time
    # and the local-path route returns the same text
    assert load_tiny_shakespeare(TS_PATH) == text


# ----------------------------------------------------------------------------------------------
# split, token files, batches


def test_split_respects_boundaries():
    text = "aaaa\nbb\ncccccc\nd\n"
    ends = [5, 8, 15, 17]
    train, val = split_text(text, 0.3, boundaries=ends)
    assert train + val == text and len(train) in ends
    assert split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")
    with pytest.raises(ValueError, match="val_fraction"):
        split_text(text, 1.0)


def test_token_file_round_trip_and_range(tmp_path):
    ids = np.array([0, 1, 65535, 300, 7])
    path = str(tmp_path / "t.bin")
    write_tokens(path, ids)
    assert os.path.getsize(path) == 2 * len(ids)
    back = read_tokens(path)
    assert isinstance(back, np.memmap) and back.dtype == np.uint16
    np.testing.assert_array_equal(back, ids)
    with pytest.raises(ValueError, match="uint16"):
        write_tokens(path, [65536])
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_tokens(str(tmp_path / "none.bin"))


def test_batches_are_shifted_windows_and_seeded():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)                  # next-token targets
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)     # contiguous windows
    x2, _ = get_batch(tokens, 4, 16, np.random.default_rng(0))
    x3, _ = get_batch(tokens, 4, 16, np.random.default_rng(1))
    assert np.array_equal(x, x2) and not np.array_equal(x, x3)
    with pytest.raises(ValueError, match="too few"):
        get_batch(tokens[:10], 2, 16, np.random.default_rng(0))


def test_eval_windows_cover_consecutive_tokens():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = eval_windows(tokens, 10)
    assert x.shape == (9, 10)
    np.testing.assert_array_equal(x.reshape(-1), np.arange(90))
    np.testing.assert_array_equal(y.reshape(-1), np.arange(1, 91))
    assert eval_windows(tokens, 10, max_windows=3)[0].shape == (3, 10)


# ----------------------------------------------------------------------------------------------
# prepared datasets


def test_prepare_stories(tmp_path):
    d = prepare("stories", "bpe", 400, out_dir=str(tmp_path), story_bytes=40_000, seed=3, progress=False)
    m = d.meta
    assert len(d.train) == m["train_tokens"] and len(d.val) == m["val_tokens"]
    assert d.tokenizer.decode(np.asarray(d.val)) .endswith("\n")     # val starts/ends on story bounds
    assert m["train_bytes"] + m["val_bytes"] >= 40_000
    assert 0.05 < m["val_floor_bits_per_byte"] < 0.3 and 0.05 < m["entropy_bits_per_byte"] < 0.3
    # floor in nats/token is the same information spread over tokens instead of bytes
    assert np.isclose(m["val_floor_nats_per_token"],
                      m["val_floor_bits_per_byte"] * np.log(2) * m["val_bytes"] / m["val_tokens"])
    assert np.isclose(d.bits_per_byte(m["val_floor_nats_per_token"]), m["val_floor_bits_per_byte"])
    # reused when the settings match, rebuilt when they differ or when forced
    meta_path = tmp_path / f"{d.name}_meta.json"
    stamp = os.path.getmtime(meta_path)
    prepare("stories", "bpe", 400, out_dir=str(tmp_path), story_bytes=40_000, seed=3, progress=False)
    assert os.path.getmtime(meta_path) == stamp
    again = prepare("stories", "bpe", 400, out_dir=str(tmp_path), story_bytes=40_000, seed=3,
                    progress=False, force=True)
    np.testing.assert_array_equal(again.train, d.train)      # deterministic rebuild
    assert json.loads(meta_path.read_text())["settings"]["seed"] == 3
    assert load_dataset(d.name, str(tmp_path)).meta == m


def test_prepare_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus"):
        prepare("wikipedia", out_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        load_dataset("nothing_here", str(tmp_path))


@needs_ts
def test_prepare_tiny_shakespeare_char_from_local_path(tmp_path):
    d = prepare("tinyshakespeare", "char", 0, out_dir=str(tmp_path), ts_path=TS_PATH, progress=False)
    assert d.tokenizer.vocab_size == 65
    assert d.meta["train_tokens"] + d.meta["val_tokens"] == 1_115_394
    assert d.tokenizer.decode(d.train[:14]) == "First Citizen:"


def test_repo_root_is_the_repository():
    # the data directory, ../shared/data and the notebooks' runs/ are found from REPO_ROOT
    from mmf.text.corpus import DATA_DIR, REPO_ROOT
    assert os.path.isfile(os.path.join(REPO_ROOT, "README.md")), REPO_ROOT
    assert os.path.isfile(os.path.join(REPO_ROOT, "pyproject.toml")), REPO_ROOT
    assert DATA_DIR == os.path.join(REPO_ROOT, "data")
