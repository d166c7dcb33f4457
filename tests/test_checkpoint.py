"""Checkpoint files: full round trip, atomic writes, and refusal of truncated, corrupt,
version-mismatched or foreign files with the file's name and the reason."""
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

import mmf.training.checkpoint as ckmod
from mmf import MMfreeConfig, MMfreeLM
from mmf.training.adamw import AdamW
from mmf.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mmf.text.tokenizer import CharTokenizer


@pytest.fixture
def saved(tmp_path):
    """A small model after two AdamW steps, saved with everything a resume needs."""
    cfg = MMfreeConfig(vocab_size=11, hidden_size=16, num_layers=2)
    model = MMfreeLM(cfg, seed=1)
    opt = AdamW(model.params, lr=1e-2)
    ids = np.random.default_rng(0).integers(0, 11, (2, 5))
    for _ in range(2):
        opt.step(model.loss_and_grads(ids, ids)[1])
    rng = np.random.default_rng(42)
    rng.random(3)                                          # advance: the state is not the seed's
    tok = CharTokenizer.from_text("abcdefghij\n")
    path = str(tmp_path / "m.ckpt")
    save_checkpoint(path, params=model.params, model_config={**cfg.__dict__},
                    optimizer_state=opt.state_dict(), train_config={"lr": 0.01, "corpus": "stories"},
                    tokenizer=tok.to_dict(), step=2, rng_state=rng.bit_generator.state,
                    extra={"history": {"train_loss": [3.0, 2.5]}})
    return path, model, opt, rng, tok


def test_round_trip_restores_everything(saved):
    path, model, opt, rng, tok = saved
    ck = load_checkpoint(path)
    assert ck.step == 2 and ck.train_config == {"lr": 0.01, "corpus": "stories"}
    assert ck.extra == {"history": {"train_loss": [3.0, 2.5]}}
    assert set(ck.params) == set(model.params)
    for k, v in model.params.items():
        assert ck.params[k].dtype == v.dtype and np.array_equal(ck.params[k], v)
    st = opt.state_dict()
    assert ck.optimizer_state["t"] == st["t"] == 2
    for k in st["m"]:
        assert np.array_equal(ck.optimizer_state["m"][k], st["m"][k])
        assert np.array_equal(ck.optimizer_state["v"][k], st["v"][k])
    r2 = np.random.default_rng(0)
    r2.bit_generator.state = ck.rng_state
    assert np.array_equal(r2.random(5), rng.random(5))      # the data position continues exactly
    back = ck.build_model()
    ids = np.array([[1, 2, 3]])
    assert np.array_equal(back.forward(ids), model.forward(ids))
    assert ck.build_tokenizer().encode("abc") == tok.encode("abc")
    ck.params["lm_head.weight"][0, 0] += 1.0                # loaded arrays are own, writable copies


def test_truncated_file_is_refused(saved, tmp_path):
    path = saved[0]
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 100):
        bad = tmp_path / f"cut{cut}.ckpt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.ckpt.*(truncated|corrupt)"):
            load_checkpoint(str(bad))


def test_flipped_byte_is_refused(saved, tmp_path):
    path = saved[0]
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("payload.bin")
    data[info.header_offset + 200] ^= 0xFF                  # inside the payload's bytes
    bad = tmp_path / "flip.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flip.ckpt.*corrupt"):
        load_checkpoint(str(bad))


def _rewrite(src, dst, header_edit=None, payload_edit=None):
    """Re-zip a checkpoint with a modified header/payload (valid zip CRCs, so only our checks can catch it)."""
    with zipfile.ZipFile(src) as zf:
        header, payload = json.loads(zf.read("header.json")), zf.read("payload.bin")
    if header_edit:
        header_edit(header)
    if payload_edit:
        payload = payload_edit(payload)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("payload.bin", payload)
        zf.writestr("header.json", json.dumps(header))


def test_payload_changed_behind_the_zip_is_caught_by_sha256(saved, tmp_path):
    bad = str(tmp_path / "sha.ckpt")
    _rewrite(saved[0], bad, payload_edit=lambda p: p[:50] + bytes([p[50] ^ 1]) + p[51:])
    with pytest.raises(CheckpointError, match="sha.ckpt.*sha256"):
        load_checkpoint(bad)
    ok = str(tmp_path / "same.ckpt")                        # negative control: an unchanged re-zip loads
    _rewrite(saved[0], ok)
    assert load_checkpoint(ok).step == 2


def test_version_mismatch_is_refused(saved, tmp_path):
    bad = str(tmp_path / "v99.ckpt")
    _rewrite(saved[0], bad, header_edit=lambda h: h.update(format_version=99))
    with pytest.raises(CheckpointError, match=r"v99.ckpt.*version 99.*versions \(1, 2\)"):
        load_checkpoint(bad)


def test_foreign_files_are_refused(saved, tmp_path):
    npz = tmp_path / "weights.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="weights.npz.*not an mmf checkpoint"):
        load_checkpoint(str(npz))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_checkpoint(str(text))
    nomagic = str(tmp_path / "nomagic.ckpt")
    _rewrite(saved[0], nomagic, header_edit=lambda h: h.update(magic="other"))
    with pytest.raises(CheckpointError, match="magic"):
        load_checkpoint(nomagic)
    with pytest.raises(FileNotFoundError, match="absent.ckpt"):
        load_checkpoint(str(tmp_path / "absent.ckpt"))


def test_failed_write_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    path, model = saved[0], saved[1]
    before = open(path, "rb").read()

    def crash(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ckmod.json, "dumps", crash)          # fails after the payload was written
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, params=model.params, model_config={}, step=3)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert load_checkpoint(path).step == 2
    assert [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f] == []


def test_overwrite_replaces_whole_file(saved, tmp_path):
    path, model = saved[0], saved[1]
    copy = str(tmp_path / "copy.ckpt")
    shutil.copy(path, copy)
    save_checkpoint(copy, params=model.params, model_config={"x": 1}, step=7)
    ck = load_checkpoint(copy)
    assert ck.step == 7 and ck.optimizer_state is None and ck.model_config == {"x": 1}
