"""The benchmark's ternary peer: llama.cpp decoding and prefilling a Llama of the 370M widths whose
linear layers are quantized to TQ2_0, llama.cpp's own ternary format (2 bits per weight, one scale per
256 weights). Dev-only: `pip install -r requirements-peers.txt` builds llama.cpp from the package index
(llama-cpp-python, compiled for this CPU) and brings `gguf`, the GGUF file writer.

The model is random: a speed peer needs the shapes and the formats, not trained values. It is built
once, the way a llama.cpp user builds a ternary model: a float16 GGUF written with `gguf`, then
llama.cpp's own quantizer (`llama_model_quantize`, file type MOSTLY_TQ2_0), which picks every
tensor's format itself (TQ2_0 for the layers' matrices, a 4-bit K-quant for the token embedding, a
6-bit one for the output head). The result is cached (MMF_PEER_CACHE, default ~/.cache/mmf) and
reused by later runs.

A Llama is not an MMfreeLM: at the same widths it has attention (four D x D matrices, a KV cache)
where the MLGRU has four D x D projections and a D-sized state, and the same GLU, so the layers hold
the same number of weights, at 2.06 bits each in TQ2_0 against the engine's 2. Its head stays at 6.6
bits (Q6_K), so it reads ~17% more bytes per decoded token than the engine (~101 against 86 MiB). Its
prefill also pays attention over the prompt. That is the comparison the issue asks for ("a Llama of
the same widths").
"""
import contextlib
import ctypes
import os
import sys

import numpy as np

HEAD_DIM = 64
TQ2_0_FILE_TYPE = 37            # LLAMA_FTYPE_MOSTLY_TQ2_0 in llama.h


def available():
    """True when llama-cpp-python and gguf import (requirements-peers.txt)."""
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


def cache_dir():
    return os.environ.get("MMF_PEER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmf")


def model_path(config):
    c = config
    name = f"llama-tq2_0-V{c['vocab_size']}-D{c['hidden_size']}-L{c['num_layers']}-I{c['intermediate_size']}.gguf"
    return os.path.join(cache_dir(), name)


def write_f16_gguf(path, config, seed=0):
    """A random Llama with the config's widths as a float16 GGUF (norms in float32) at path."""
    import gguf
    V, D, L, I = (config[k] for k in ("vocab_size", "hidden_size", "num_layers", "intermediate_size"))
    if D % HEAD_DIM:
        raise ValueError(f"hidden_size {D} is not a multiple of the head width {HEAD_DIM}")
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(D // HEAD_DIM)
    w.add_head_count_kv(D // HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(V)
    w.add_tokenizer_model("none")        # token ids in, logits out: no text, so no vocabulary needed
    w.add_file_type(1)                   # mostly float16

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols), np.float32) * cols ** -0.5).astype(np.float16)
    w.add_tensor("token_embd.weight", matrix(V, D))
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    w.add_tensor("output.weight", matrix(V, D))
    for i in range(L):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", matrix(D, D))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(D, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(D, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(I, D))
        w.add_tensor(f"blk.{i}.ffn_up.weight", matrix(I, D))
        w.add_tensor(f"blk.{i}.ffn_down.weight", matrix(D, I))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@contextlib.contextmanager
def _stderr_to(path):
    """Send this process's file descriptor 2 (where llama.cpp's C code prints) to the file path."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield path
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def build_tq2_0_model(config, log=print):
    """The cached TQ2_0 GGUF of config's widths, built on first use -> its path."""
    import llama_cpp
    path = model_path(config)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f16 = path + ".f16.tmp"
    part = path + ".tmp"
    log(f"  building llama.cpp's TQ2_0 model (once): {path}")
    try:
        write_f16_gguf(f16, config)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = TQ2_0_FILE_TYPE
        params.nthread = os.cpu_count() or 1
        with _stderr_to(path + ".log") as log_path:                  # a line per tensor: kept out of the bench
            code = llama_cpp.llama_model_quantize(f16.encode(), part.encode(), ctypes.byref(params))
        if code != 0:
            raise RuntimeError(f"llama.cpp's quantizer failed (code {code}) on {f16}; its output is in {log_path}")
        os.replace(part, path)            # whole or absent: a killed build leaves no half model
    finally:
        for tmp in (f16, part):
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def tensor_types(path):
    """{format name: number of tensors} of a GGUF file."""
    import gguf
    counts = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def cpu_features():
    """The CPU features llama.cpp was compiled to use, from its system info (e.g. AVX512, AVX512_VNNI)."""
    import llama_cpp
    info = llama_cpp.llama_print_system_info().decode()
    pairs = (item.split("=") for item in info.split("|") if item.count("=") == 1)
    return [k.split(":")[-1].strip() for k, v in pairs if v.strip() == "1"]


class LlamaPeer:
    """llama.cpp on the TQ2_0 model with `threads` threads: prefill(ids) and generate(first, n), the
    latter greedy with the argmax taken here, as Engine.generate samples."""

    def __init__(self, path, n_ctx, threads):
        import llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                   n_threads=threads, n_threads_batch=threads, verbose=False)
        self.version = llama_cpp.__version__
        self.n_vocab = self.llm.n_vocab()
        self._llama_cpp = llama_cpp

    def _last_logits(self):
        # read from llama.cpp's context: llama-cpp-python's `scores` is filled only with logits_all=True
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def prefill(self, ids):
        """ids: list of ints -> the last token's logits (float32 (V,), a view valid until the next call)."""
        self.llm.reset()                  # the KV cache starts empty, as the engine's state does
        self.llm.eval(list(ids))
        return self._last_logits()

    def generate(self, first, n):
        """One-token prompt, then n greedy tokens (n - 1 decoding steps after the prefill, the KV cache
        carried); -> (tokens, the logits the last token was sampled from)."""
        logits = self.prefill([first])
        out = []
        for k in range(n):
            tok = int(np.argmax(logits))
            out.append(tok)
            if k + 1 < n:
                self.llm.eval([tok])
                logits = self._last_logits()
        return out, logits
