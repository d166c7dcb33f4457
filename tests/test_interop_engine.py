"""Engine.from_pretrained: packs a Hugging Face checkpoint tensor by tensor from its memory map into the
same engine as Engine(MMfreeLM.from_pretrained(dir)), decodes the same greedy tokens, and never holds
the float model."""
import os
import tracemalloc

import numpy as np
import pytest

import mmf
from kernels_numba import Engine
from kernels_numba.packing import pack_model_weight, unpack_ternary
from mmf.layers.quant import weight_quant_int

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official-hf")


def engine_arrays(engine):
    return {k: v for k, v in vars(engine).items() if isinstance(v, np.ndarray)}


def check_engine_from_pretrained(path):
    """Engine.from_pretrained(path) holds the arrays of Engine(MMfreeLM.from_pretrained(path)) and decodes
    the model's greedy tokens; returns them. (tests/test_kernels_engine.py runs it on a trained model.)"""
    model = mmf.MMfreeLM.from_pretrained(path)
    direct, via_model = engine_arrays(Engine.from_pretrained(path)), engine_arrays(Engine(model))
    assert direct.keys() == via_model.keys()
    for k in direct:
        assert direct[k].dtype == via_model[k].dtype and np.array_equal(direct[k], via_model[k]), k
    prompt = np.array([[3, 14, 15], [26, 5, 35]])
    got = Engine.from_pretrained(path).generate(prompt, 20, temperature=0.0)
    assert np.array_equal(got, model.generate(prompt, 20, temperature=0))
    return got


@pytest.mark.parametrize("source", ["nolb_bfloat16", "tiny_float32"])
def test_engine_from_pretrained_equals_engine_of_the_loaded_model(source):
    check_engine_from_pretrained(os.path.join(FIXTURES, source))


def test_engine_from_a_sharded_checkpoint(tmp_path):
    model = mmf.MMfreeLM.from_pretrained(os.path.join(FIXTURES, "tiny_bfloat16"))
    model.save_pretrained(str(tmp_path), dtype="bfloat16", max_shard_bytes=50_000)
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    check_engine_from_pretrained(str(tmp_path))


def test_chunked_packing_equals_packing_the_whole_quantized_matrix():
    W = np.random.default_rng(0).normal(0, 0.02, (700, 200)).astype(np.float32)
    Wt, beta = weight_quant_int(W)
    for rows in (1, 64, 699, 10_000):
        p = pack_model_weight(W, rows_per_chunk=rows)
        assert p.scale == beta and np.array_equal(unpack_ternary(p), Wt)


def test_engine_from_pretrained_never_holds_the_float_model(tmp_path):
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=4096, hidden_size=128, num_layers=4, intermediate_size=384))
    model.save_pretrained(str(tmp_path), dtype="bfloat16")
    largest = max(v.size for v in model.params.values()) * 4          # one float32 copy: 2 MiB here
    float_model = model.num_params() * 4                              # 7.3 MiB
    del model
    tracemalloc.start()                                               # NumPy reports its buffers to it
    try:
        engine = Engine.from_pretrained(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= engine.nbytes + largest + 2**20
    assert peak < 0.5 * float_model


def test_engine_from_pretrained_refuses_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Engine.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="embedding must be one of"):
        Engine.from_pretrained(os.path.join(FIXTURES, "tiny_float32"), embedding="bf16")
