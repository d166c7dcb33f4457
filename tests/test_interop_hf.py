"""The Hugging Face format (mmf.interop): the official code's checkpoints load and give its logits; an
export round-trips exactly (float32) or as round-to-nearest-even (BF16), sharded or not; config.json
fields are honoured, ignored or refused as documented; truncated and corrupt files are refused with
the file's name and the reason."""
import json
import os
import shutil

import numpy as np
import pytest

import mmf
from mmf.backend import NumpyBackend
from mmf.interop import hf_config
from mmf.interop.hf_config import HFConfigError, config_from_hf
from mmf.interop.safetensors_io import CheckpointDir, SafetensorsError, SafetensorsFile
from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.layers.quant import activation_quant_int
from mmf.layers.rmsnorm import rmsnorm_forward

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official-hf")
OFFICIAL = ["tiny_float32", "tiny_bfloat16", "nolb_bfloat16"]


def official(name):
    z = np.load(os.path.join(FIXTURES, name, "expected_logits.npz"))
    return os.path.join(FIXTURES, name), z["ids"], z["logits"]


def position_errors(got, want):
    """(B, T) max |difference| at each position, relative to the largest official logit."""
    return np.abs(got - want).max(axis=-1) / np.abs(want).max()


# ----------------------------------------------------------------------------------------------
# the official checkpoints


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_checkpoints_give_official_logits_in_float32(name):
    path, ids, want = official(name)
    model = mmf.MMfreeLM.from_pretrained(path)
    assert model.dtype == np.float32
    assert position_errors(model.forward(ids), want).max() <= 1e-5      # every position


def test_official_config_mapping():
    tiny = mmf.MMfreeLM.from_pretrained(os.path.join(FIXTURES, "tiny_bfloat16")).config
    assert (tiny.vocab_size, tiny.hidden_size, tiny.num_layers, tiny.intermediate_size) == (128, 64, 2, 256)
    nolb = mmf.MMfreeLM.from_pretrained(os.path.join(FIXTURES, "nolb_bfloat16")).config
    assert (nolb.vocab_size, nolb.num_layers, nolb.use_lower_bound) == (150, 3, False)
    assert nolb.intermediate_size == 256                  # hidden_ratio 2: 256 * ceil(int(64*2*2/3) / 256)


class CodeRecorder(NumpyBackend):
    """The reference backend, also keeping the int8 activation codes (E2) of every BitLinear call."""

    def __init__(self):
        super().__init__()
        self.codes = []

    def bitlinear_forward(self, x, W, g):
        self.codes.append(activation_quant_int(rmsnorm_forward(x, g, BITLINEAR_EPS)[0])[0])
        return super().bitlinear_forward(x, W, g)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_checkpoints_in_float64_except_downstream_of_one_int8_flip(name):
    path, ids, want = official(name)
    rec32, rec64 = CodeRecorder(), CodeRecorder()
    got32 = mmf.MMfreeLM.from_pretrained(path, backend=rec32).forward(ids)   # matches the official code
    got64 = mmf.MMfreeLM.from_pretrained(path, dtype=np.float64, backend=rec64).forward(ids)
    err = position_errors(got64, want)
    flips = [(k, np.argwhere(a != b)) for k, (a, b) in enumerate(zip(rec32.codes, rec64.codes))
             if not np.array_equal(a, b)]
    if name != "nolb_bfloat16":
        assert not flips and err.max() <= 1e-5
        return
    # the documented flip: the first int8 code that differs between float32 (the official numbers) and
    # float64 is a single code, one quantum apart, at sequence 0, position 4 ...
    assert flips, "expected one int8 code of nolb_bfloat16 to round differently in float64"
    k, where = flips[0]
    assert len(where) == 1
    b, t, j = where[0]
    # BitLinear calls go i, f, g, o, gate, down per layer: call 5 is layer 0's down_proj, whose input
    # (the GLU product, E8) at sequence 0, position 4, channel 169 rounds to the other int8 code
    assert (k, b, t, j) == (5, 0, 4, 169)
    assert abs(int(rec32.codes[k][b, t, j]) - int(rec64.codes[k][b, t, j])) == 1
    # ... and every position that disagrees with the official logits is downstream of it
    bad = np.argwhere(err > 1e-5)
    assert len(bad) > 0 and all(bb == 0 and tt >= 4 for bb, tt in bad)
    assert err[1].max() <= 1e-5 and err[0, :4].max() <= 1e-5


def test_num_heads_and_other_ignored_fields_do_not_change_the_model(tmp_path):
    src = os.path.join(FIXTURES, "tiny_bfloat16")
    path, ids, want = official("tiny_bfloat16")
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(num_heads=4, hidden_act="gelu", max_position_embeddings=7, use_cache=False,
               fuse_cross_entropy=True, initializer_range=1.0, bos_token_id=None, eos_token_id=5)
    cfg.pop("dtype")
    cfg["torch_dtype"] = "bfloat16"                       # the transformers 4.x spelling
    (dst / "config.json").write_text(json.dumps(cfg))
    assert position_errors(mmf.MMfreeLM.from_pretrained(str(dst)).forward(ids), want).max() <= 1e-5


@pytest.mark.parametrize("field, value, match", [
    ("use_short_conv", True, "use_short_conv"),
    ("attn_mode", "chunk", "attn_mode"),
    ("expand_ratio", 2, "expand_ratio"),
    ("tie_word_embeddings", True, "tie_word_embeddings"),
    ("model_type", "llama", "model_type"),
    ("hidden_size", 0, "hidden_size"),
    ("rms_norm_eps", -1.0, "rms_norm_eps"),
    ("torch_dtype", "float16", "disagree"),               # beside "dtype": "bfloat16"
    ("dtype", "int8", "dtype"),
])
def test_refused_config_fields_are_named(field, value, match):
    d = json.loads(open(os.path.join(FIXTURES, "tiny_bfloat16", "config.json")).read())
    d[field] = value
    with pytest.raises(HFConfigError, match=match):
        config_from_hf(d, source="x/config.json")


def test_intermediate_size_when_given_wins_over_hidden_ratio():
    d = json.loads(open(os.path.join(FIXTURES, "tiny_bfloat16", "config.json")).read())
    assert config_from_hf({**d, "intermediate_size": 96, "hidden_ratio": 2}).intermediate_size == 96
    assert config_from_hf({**d, "hidden_ratio": 8}).intermediate_size == 512       # int(64*8*2/3)=341 -> 512
    assert config_from_hf({**d, "hidden_ratio": None}).intermediate_size == 256    # the official default 4


# ----------------------------------------------------------------------------------------------
# export


@pytest.fixture
def model():
    m = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=40, hidden_size=32, num_layers=2, intermediate_size=64), seed=3)
    rng = np.random.default_rng(0)
    for k, v in m.params.items():                          # norms and lower bounds away from their init
        if k.endswith("norm.weight") or k == "model.lower_bounds":
            m.params[k] = (v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
    w = m.params["model.norm.weight"]                      # exact BF16 ties: low 16 bits 0x8000
    bits = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000], np.uint32)  # even, odd, -even, -odd
    w[:4] = bits.view(np.float32)
    return m


def rne_bfloat16_bits(a):
    """An independent oracle: float32 -> bfloat16 bits by round-to-nearest-even on the integer bits."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def test_float32_export_round_trips_bit_exactly(model, tmp_path):
    model.save_pretrained(str(tmp_path), dtype="float32")
    back = mmf.MMfreeLM.from_pretrained(str(tmp_path))
    assert back.config == model.config
    for k, v in model.params.items():
        assert back.params[k].dtype == np.float32 and np.array_equal(back.params[k], v), k
    ids = np.array([[1, 5, 9, 30]])
    assert np.array_equal(back.forward(ids), model.forward(ids))


def test_bfloat16_export_is_round_to_nearest_even(model, tmp_path):
    model.save_pretrained(str(tmp_path), dtype="bfloat16")
    f = SafetensorsFile(str(tmp_path / "model.safetensors"))
    assert f.metadata == {"format": "pt"}
    for k, v in model.params.items():
        assert f.dtype_code(k) == "BF16"
        assert np.array_equal(f.view(k).view(np.uint16), rne_bfloat16_bits(v)), k
    assert rne_bfloat16_bits(model.params["model.norm.weight"][:4]).tolist() == [0x3F80, 0x3F82, 0xBF80, 0xBF82]
    back = mmf.MMfreeLM.from_pretrained(str(tmp_path))     # widened exactly: the BF16 values in float32
    w = back.params["lm_head.weight"]
    assert np.array_equal(w.view(np.uint32) >> 16, rne_bfloat16_bits(model.params["lm_head.weight"]))
    assert not (w.view(np.uint32) & 0xFFFF).any()


def test_exported_config_has_every_official_field(model, tmp_path):
    model.save_pretrained(str(tmp_path), dtype="bfloat16")
    cfg = json.loads((tmp_path / "config.json").read_text())
    written_by_official = json.loads(open(os.path.join(FIXTURES, "tiny_float32", "config.json")).read())
    assert set(written_by_official) - {"transformers_version"} <= set(cfg)
    assert cfg["architectures"] == ["HGRNBitForCausalLM"] and cfg["model_type"] == "hgrn_bit"
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (40, 32, 2, 64)
    assert cfg["bos_token_id"] is None and cfg["eos_token_id"] is None and cfg["pad_token_id"] is None
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    assert cfg["use_short_conv"] is False and cfg["tie_word_embeddings"] is False and cfg["expand_ratio"] == 1


def test_sharded_export_loads(model, tmp_path):
    files = model.save_pretrained(str(tmp_path), dtype="float32", max_shard_bytes=20_000)
    shards = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))
    assert len(shards) >= 3 and "model.safetensors" not in os.listdir(tmp_path)
    assert set(shards) <= set(files)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.params) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == 4 * model.num_params()
    from safetensors import safe_open                       # the library's own reader agrees
    for s in shards:
        with safe_open(str(tmp_path / s), framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}
            for k in f.keys():
                assert np.array_equal(f.get_tensor(k), model.params[k])
    back = mmf.MMfreeLM.from_pretrained(str(tmp_path))
    assert all(np.array_equal(back.params[k], v) for k, v in model.params.items())
    model.save_pretrained(str(tmp_path), dtype="float32")  # unsharded again: the stale shards go
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_only_ternary_models_export(model, tmp_path):
    model.set_weights("float")
    with pytest.raises(ValueError, match="'float' weights.*ternary BitLinear weights only"):
        model.save_pretrained(str(tmp_path))
    binary = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=8, hidden_size=16, num_layers=1, weights="binary"))
    with pytest.raises(ValueError, match="'binary' weights"):
        binary.save_pretrained(str(tmp_path))
    bitnet = mmf.TransformerLM(mmf.TransformerConfig(vocab_size=8, hidden_size=16, num_layers=1, num_heads=2,
                                                     weights="ternary"))
    from mmf.interop.pretrained import save_pretrained
    with pytest.raises(ValueError, match="arch is 'transformer'"):
        save_pretrained(bitnet, str(tmp_path))
    paper_gate = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=8, hidden_size=16, num_layers=1, output_gate="paper"))
    with pytest.raises(ValueError, match="output_gate='paper'"):
        paper_gate.save_pretrained(str(tmp_path))
    assert os.listdir(tmp_path) == []                      # refused before anything is written
    model.set_weights("ternary")
    with pytest.raises(ValueError, match="dtype"):
        model.save_pretrained(str(tmp_path), dtype="float16")


# ----------------------------------------------------------------------------------------------
# refusing bad files


def rewrite(path, header, data):
    """Write a .safetensors file from a header dict and the data bytes (to forge broken files)."""
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


def parts(path):
    blob = open(path, "rb").read()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(os.path.join(FIXTURES, "tiny_float32"), dst)
    return dst


def test_truncated_file_is_refused_with_name_and_reason(copy):
    st = copy / "model.safetensors"
    blob = st.read_bytes()
    st.write_bytes(blob[:-100])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: truncated.*'model\.norm\.weight'"):
        mmf.MMfreeLM.from_pretrained(str(copy))
    st.write_bytes(blob[:5])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: truncated"):
        mmf.MMfreeLM.from_pretrained(str(copy))
    st.write_bytes(blob[:200])                              # cut inside the header
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: truncated or corrupt: the header claims"):
        mmf.MMfreeLM.from_pretrained(str(copy))


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["lm_head.weight"].update(shape=[128, 65]), r"'lm_head\.weight' is F32 \[128, 65\].*span"),
    (lambda h: h["lm_head.weight"].update(dtype="F8_E4M3"), r"'lm_head\.weight' has dtype 'F8_E4M3'"),
    (lambda h: h["lm_head.weight"].update(data_offsets=[300, 33068]), r"'lm_head\.weight' starts at byte 300"),
    (lambda h: h.__setitem__("model.norm.weight", [1, 2]), r"'model\.norm\.weight' lacks"),
])
def test_header_that_lies_is_refused(copy, edit, match):
    st = copy / "model.safetensors"
    header, data = parts(st)
    edit(header)
    rewrite(st, header, data)
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: .*" + match):
        mmf.MMfreeLM.from_pretrained(str(copy))


def test_header_not_json_and_trailing_bytes_are_refused(copy):
    st = copy / "model.safetensors"
    blob = st.read_bytes()
    st.write_bytes(blob[:8] + b"\xff" * 20 + blob[28:])
    with pytest.raises(SafetensorsError, match="model.safetensors: corrupt header: not JSON"):
        mmf.MMfreeLM.from_pretrained(str(copy))
    st.write_bytes(blob + b"\0" * 8)
    with pytest.raises(SafetensorsError, match="model.safetensors: corrupt: 8 bytes after the last tensor"):
        mmf.MMfreeLM.from_pretrained(str(copy))


def test_missing_extra_and_misshapen_tensors_are_named(copy):
    st = copy / "model.safetensors"
    header, data = parts(st)
    meta = header.pop("__metadata__")

    def forge(tensors):
        """Rewrite the file holding {name: (shape, bytes)} in order."""
        h, out, pos = {"__metadata__": meta}, b"", 0
        for name, (shape, raw) in tensors.items():
            h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [pos, pos + len(raw)]}
            out += raw
            pos += len(raw)
        rewrite(st, h, out)

    tensors = {k: (e["shape"], data[e["data_offsets"][0]:e["data_offsets"][1]]) for k, e in header.items()}
    forge({k: v for k, v in tensors.items() if k != "model.layers.1.attn.g_norm.weight"})
    with pytest.raises(SafetensorsError, match=r"tensor 'model\.layers\.1\.attn\.g_norm\.weight' is missing"):
        mmf.MMfreeLM.from_pretrained(str(copy))
    forge({**tensors, "model.layers.2.attn_norm.weight": ([64], b"\0" * 256)})
    with pytest.raises(SafetensorsError, match=r"unexpected tensor 'model\.layers\.2\.attn_norm\.weight'"):
        mmf.MMfreeLM.from_pretrained(str(copy))
    shape, raw = tensors["lm_head.weight"]
    forge({**tensors, "lm_head.weight": ([64, 128], raw)})  # bytes right, shape transposed
    with pytest.raises(SafetensorsError, match=r"tensor 'lm_head\.weight' has shape \[64, 128\], but the "
                                               r"config\.json needs \[128, 64\]"):
        mmf.MMfreeLM.from_pretrained(str(copy))


def test_index_naming_a_missing_shard_is_refused(model, tmp_path):
    model.save_pretrained(str(tmp_path), dtype="bfloat16", max_shard_bytes=10_000)
    shards = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))
    os.remove(tmp_path / shards[1])
    with pytest.raises(SafetensorsError, match=rf"index\.json: names shard '{shards[1]}'.* does not exist"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path))


def test_directory_without_weights_or_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(open(os.path.join(FIXTURES, "tiny_float32", "config.json")).read())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor .*convert them to safetensors"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text('{"model_type": "hgrn_bit", ')
    with pytest.raises(HFConfigError, match=r"config\.json: not valid JSON"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path))


def test_reader_reads_what_the_library_reads():
    from safetensors import safe_open
    path = os.path.join(FIXTURES, "nolb_bfloat16", "model.safetensors")
    ours = SafetensorsFile(path)
    with safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == sorted(ours.names())
        for k in f.keys():
            lib = f.get_tensor(k)
            assert np.array_equal(ours.view(k).view(np.uint16), lib.view(np.uint16))
            assert np.array_equal(ours.read(k, np.float64), lib.astype(np.float64))
    assert CheckpointDir(os.path.dirname(path)).storage_dtypes() == {"BF16"}


def test_hf_defaults_cover_the_official_fields():
    written_by_official = json.loads(open(os.path.join(FIXTURES, "nolb_bfloat16", "config.json")).read())
    bookkeeping = {"architectures", "model_type", "transformers_version", "dtype"}
    assert set(written_by_official) - bookkeeping == set(hf_config.HF_DEFAULTS)


def test_mmf_load_accepts_a_hugging_face_directory(tmp_path):
    path, ids, want = official("nolb_bfloat16")
    model = mmf.load(path)
    assert model.config.weights == "ternary" and position_errors(model.forward(ids), want).max() <= 1e-5
    with pytest.raises(IsADirectoryError, match="model_type hgrn_bit"):
        mmf.load(str(tmp_path))


def test_export_read_by_the_safetensors_torch_loader_gives_an_independent_oracle_our_logits(model, tmp_path):
    """What transformers does with an exported file (safetensors.torch.load_file), fed to the
    independent PyTorch reference (tests/oracle_torch.py): the names, shapes and [out, in] layout we
    write are the ones a model written from the equations expects."""
    import torch
    from safetensors.torch import load_file

    import oracle_torch
    model.save_pretrained(str(tmp_path), dtype="float32")
    state = load_file(str(tmp_path / "model.safetensors"))
    ids = np.array([[1, 5, 9, 30, 2, 17], [0, 39, 4, 4, 8, 12]])
    quant = oracle_torch.Quantizer()
    with torch.no_grad():
        ref = oracle_torch.model_logits({k: v.double() for k, v in state.items()}, torch.tensor(ids), quant).numpy()
    ours = mmf.MMfreeLM.from_pretrained(str(tmp_path), dtype=np.float64).forward(ids)
    assert quant.tie_margin > 1e-6                        # no code near a rounding tie: a fair comparison
    assert np.abs(ours - ref).max() <= 1e-9 * np.abs(ref).max()


def test_float16_tensors_are_widened_exactly(model, tmp_path):
    from safetensors.numpy import save_file
    model.save_pretrained(str(tmp_path), dtype="float32")
    half = {k: v.astype(np.float16) for k, v in model.params.items()}
    save_file(half, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    back = mmf.MMfreeLM.from_pretrained(str(tmp_path))
    assert all(np.array_equal(back.params[k], v.astype(np.float32)) for k, v in half.items())


def test_index_that_disagrees_with_its_shards_is_refused(model, tmp_path):
    model.save_pretrained(str(tmp_path), dtype="bfloat16", max_shard_bytes=10_000)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"]["lm_head.weight"] = next(s for s in shards if s != index["weight_map"]["lm_head.weight"])
    index_path.write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match=r"index\.json: says tensor 'lm_head\.weight' is in .*does not hold it"):
        mmf.MMfreeLM.from_pretrained(str(tmp_path))
