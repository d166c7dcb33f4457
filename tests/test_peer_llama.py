"""The benchmark's llama.cpp peer (kernels_numba/peer_llama.py) builds the model it claims to build
and drives llama.cpp the way the engine is timed.

The GGUF writer needs only `gguf` (requirements-dev.txt); the quantized model and its decoding need
llama.cpp itself (requirements-peers.txt, not installed by CI, which skips that one test)."""
import os

import numpy as np
import pytest

from kernels_numba import peer_llama

gguf = pytest.importorskip("gguf")

TINY = dict(vocab_size=96, hidden_size=256, num_layers=2, intermediate_size=512)   # rows of 256: TQ2_0 applies


def test_f16_gguf_is_a_llama_of_the_given_widths(tmp_path):
    path = tmp_path / "m.gguf"
    peer_llama.write_f16_gguf(str(path), TINY)
    r = gguf.GGUFReader(str(path))
    f = r.fields
    text = lambda k: bytes(f[k].parts[f[k].data[0]]).decode()   # noqa: E731
    num = lambda k: int(f[k].parts[f[k].data[0]][0])           # noqa: E731
    assert text("general.architecture") == "llama"
    assert text("tokenizer.ggml.model") == "none"
    V, D, L, I = (TINY[k] for k in ("vocab_size", "hidden_size", "num_layers", "intermediate_size"))
    assert (num("llama.vocab_size"), num("llama.embedding_length"), num("llama.block_count"),
            num("llama.feed_forward_length"), num("llama.attention.head_count")) == (V, D, L, I, D // 64)
    shapes = {t.name: (tuple(int(n) for n in t.shape), t.tensor_type.name) for t in r.tensors}
    # GGUF lists a matrix's shape innermost first: (columns, rows)
    want = {"token_embd.weight": ((D, V), "F16"), "output.weight": ((D, V), "F16"),
            "output_norm.weight": ((D,), "F32")}
    for i in range(L):
        want.update({f"blk.{i}.{n}.weight": ((D, D), "F16") for n in ("attn_q", "attn_k", "attn_v", "attn_output")})
        want.update({f"blk.{i}.attn_norm.weight": ((D,), "F32"), f"blk.{i}.ffn_norm.weight": ((D,), "F32"),
                     f"blk.{i}.ffn_gate.weight": ((D, I), "F16"), f"blk.{i}.ffn_up.weight": ((D, I), "F16"),
                     f"blk.{i}.ffn_down.weight": ((I, D), "F16")})
    assert shapes == want


def test_widths_that_do_not_split_into_heads_are_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of the head width"):
        peer_llama.write_f16_gguf(str(tmp_path / "m.gguf"), dict(TINY, hidden_size=100))


def test_model_is_cached_by_widths(tmp_path, monkeypatch):
    monkeypatch.setenv("MMF_PEER_CACHE", str(tmp_path))
    a = peer_llama.model_path(TINY)
    assert a.startswith(str(tmp_path))
    assert peer_llama.model_path(dict(TINY, num_layers=3)) != a


def test_quantized_model_and_greedy_decoding(tmp_path, monkeypatch):
    """llama.cpp's quantizer puts the layers' matrices in TQ2_0; prefill starts from an empty cache
    every time; generate decodes with the cache carried: its last logits are those of a fresh
    prefill of everything before (and not those of the last token alone)."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("MMF_PEER_CACHE", str(tmp_path))
    path = peer_llama.build_tq2_0_model(TINY, log=lambda m: None)
    types = peer_llama.tensor_types(path)
    assert types.get("TQ2_0") == 7 * TINY["num_layers"]
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    assert "AVX2" in peer_llama.cpu_features() or "NEON" in peer_llama.cpu_features()   # a build for this CPU
    peer = peer_llama.LlamaPeer(path, n_ctx=64, threads=1)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    first = np.array(peer.prefill(prompt))
    assert np.isfinite(first).all() and np.abs(first).max() > 0    # real logits, not an unfilled buffer
    peer.prefill([7, 7, 7])
    np.testing.assert_array_equal(np.array(peer.prefill(prompt)), first)
    toks, last = peer.generate(5, 6)
    last = np.array(last)
    seq = [5] + toks[:-1]
    full = np.array(peer.prefill(seq))                               # the same context in one batch
    assert toks[-1] == int(np.argmax(full))
    np.testing.assert_allclose(last, full, rtol=0, atol=1e-3 * np.abs(full).max())
    alone = np.array(peer.prefill(seq[-1:]))                         # negative control: the context matters
    assert np.abs(alone - full).max() > 1e-2 * np.abs(full).max()
