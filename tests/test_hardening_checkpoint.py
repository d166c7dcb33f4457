"""Issue 11, items 6-8 for checkpoints: untrusted files get a clear CheckpointError (never a bare
KeyError/TypeError, never an allocation the file cannot back), non-finite parameters are never
saved, and temporary files of killed writers are removed at the next save."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import mmf
from mmf.atomic import remove_stale_temp_files
from mmf.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CFG = mmf.MMfreeConfig(vocab_size=16, hidden_size=8, num_layers=1, intermediate_size=16)


@pytest.fixture
def ckpt(tmp_path):
    import dataclasses
    model = mmf.MMfreeLM(CFG, seed=0)
    path = str(tmp_path / "c.ckpt")
    save_checkpoint(path, params=model.params, model_config=dataclasses.asdict(CFG), step=3)
    return path


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("header.json")), zf.read("payload.bin")


def _write(path, header, payload, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("header.json", json.dumps(header))
        zf.writestr("payload.bin", payload)


def test_a_good_checkpoint_loads(ckpt):
    """Negative control of everything below."""
    model = load_checkpoint(ckpt).build_model()
    assert model.config == CFG


def test_compressed_members_are_refused(ckpt, tmp_path):
    header, payload = _members(ckpt)
    bad = str(tmp_path / "zipped.ckpt")
    _write(bad, header, payload, zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zipped.ckpt.*compressed"):
        load_checkpoint(bad)


def test_a_small_file_cannot_demand_gigabytes(ckpt, tmp_path):
    header, payload = _members(ckpt)
    header["arrays"][0]["shape"] = [1 << 20, 1 << 12]                # 16 GiB of float32
    header["arrays"][0]["nbytes"] = 4 << 32
    bad = str(tmp_path / "huge.ckpt")
    _write(bad, header, payload)
    with pytest.raises(CheckpointError, match="huge.ckpt"):
        load_checkpoint(bad)


@pytest.mark.parametrize("edit, words", [
    (lambda h: h.pop("arrays"), "key 'arrays' is missing"),
    (lambda h: h.pop("payload_sha256"), "key 'payload_sha256' is missing"),
    (lambda h: h.__setitem__("step", "3"), "'step' is a str"),
    (lambda h: h.__setitem__("step", -1), "step -1"),
    (lambda h: h.__setitem__("arrays", [7]), "array entry 0"),
    (lambda h: h["arrays"][0].__setitem__("dtype", "|O"), "array entry 0"),
    (lambda h: h["arrays"][0].__setitem__("dtype", "<f8"), "does not match its byte count"),
    (lambda h: h["arrays"][0].__setitem__("shape", [-1]), "array entry 0"),
    (lambda h: h["arrays"][0].__setitem__("shape", "ab"), "array entry 0"),
    (lambda h: h["arrays"][1].__setitem__("offset", 0), "offset"),
    (lambda h: h["arrays"][0].pop("nbytes"), "exactly the keys"),
    (lambda h: h.__setitem__("scalars", {"params/x": 1}), "scalars"),
    (lambda h: h.__setitem__("model_config", [1, 2]), "'model_config' is a list"),
])
def test_crafted_headers_get_a_clear_error(ckpt, tmp_path, edit, words):
    header, payload = _members(ckpt)
    edit(header)
    bad = str(tmp_path / "crafted.ckpt")
    _write(bad, header, payload)
    with pytest.raises(CheckpointError, match=f"crafted.ckpt.*{words}"):
        load_checkpoint(bad)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c.__setitem__("colour", "blue"), r"config.ckpt.*\['colour'\]"),
    (lambda c: c.pop("vocab_size"), "config.ckpt.*vocab_size"),
    (lambda c: c.__setitem__("hidden_size", "8"), "config.ckpt.*hidden_size"),
    (lambda c: c.__setitem__("hidden_size", 9), "shape"),
])
def test_crafted_model_configs_get_a_clear_error(ckpt, tmp_path, edit, words):
    header, payload = _members(ckpt)
    edit(header["model_config"])
    bad = str(tmp_path / "config.ckpt")
    _write(bad, header, payload)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(bad).build_model()


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint(str(tmp_path))


def test_non_finite_params_are_never_saved(tmp_path):
    import dataclasses
    model = mmf.MMfreeLM(CFG, seed=0)
    model.params["lm_head.weight"][0, 0] = np.inf
    path = str(tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match="non-finite parameters.*lm_head.weight"):
        save_checkpoint(path, params=model.params, model_config=dataclasses.asdict(CFG))
    assert os.listdir(tmp_path) == []


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(ckpt, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()                  # a pid that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (dead, live.pid):
            with open(f"{ckpt}.tmp-{pid}", "wb") as f:
                f.write(b"half a checkpoint")
        import dataclasses
        save_checkpoint(ckpt, params=mmf.MMfreeLM(CFG).params, model_config=dataclasses.asdict(CFG))
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(["c.ckpt", f"c.ckpt.tmp-{live.pid}"])
        assert remove_stale_temp_files(str(tmp_path)) == []           # the live writer's file stays
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temp_files(str(tmp_path)) == [f"{ckpt}.tmp-{live.pid}"]


def test_random_corruptions_never_escape_as_other_errors(ckpt):
    """Truncate, flip and extend at many places: CheckpointError or (if harmless) a good load."""
    data = open(ckpt, "rb").read()
    rng = np.random.default_rng(0)
    variants = [data[:k] for k in rng.integers(0, len(data), 20)] + [data + bytes(rng.integers(0, 256, 7, np.uint8))]
    for k in rng.integers(0, len(data), 40):
        b = bytearray(data)
        b[k] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(b))
    for v in variants:
        with open(ckpt, "wb") as f:
            f.write(v)
        try:
            load_checkpoint(ckpt).build_model()
        except CheckpointError:
            pass
