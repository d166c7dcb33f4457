"""Benchmarks of the fast tier (the README's "Measured" table), each a ratio measured within one run:

  1. ternary GEMV 4096 x 4096 (packed 2-bit, int8 in) vs NumPy float32 W @ x
  2. decoding a 370M-shaped model (V=32000, D=1024, L=24, I=2816, random ternary weights), batch 1:
     Engine vs the same model decoded by mmf's forward with float32 BLAS (W~ dequantized once)
  3. resident weight memory of that model: Engine (embedding in RAM, memory-mapped, or int8) vs float32
  4. training step (fwd + bwd + AdamW), V=2048, D=256, L=4, B=16, T=128: NumbaBackend vs NumPy reference
  5. activation memory of a training step: fused recompute vs caching x~
  6. (--pretrained) a 370M-shaped BF16 checkpoint written by the exporter (save_pretrained):
     Engine.from_pretrained's load time and peak anonymous memory (RssAnon: the file's mapped pages do
     not count) against its budget, beside MMfreeLM.from_pretrained (the float model), each in a fresh
     process
  7. (--only checks) the input checks of the public entries (Engine.step, ternary_matvec) against the work they guard:
     the checks alone (many calls) vs one decoding step of the 370M shape / one 4096 x 4096 GEMV

  (--only rss) peak resident memory of a training step, fused vs caching, in fresh processes (step_memory.py)
  (--only profile) a training step's time per phase against its float-GEMM floor (step_profile.py)
  8. (--peers, instead of 1-7; kernels_numba/peers.py) mmf beside real peers and the machine's limits, every
     contender in its own process, alternated: training against PyTorch eager and torch.compile of the
     same model (kernels_numba/peer_torch.py) and against its float-GEMM floor; decoding (batch 1, 4, 8,
     16, through Engine.generate) against the read bandwidth measured with the engine's threads, with
     the GEMV kernel's in-cache rate beside it (a roofline); a 512-token prefill against PyTorch
     float32 on the same weights and against its float GEMMs; beside llama.cpp's ternary TQ2_0 on a
     Llama of the same widths (kernels_numba/peer_llama.py, dev-only: requirements-peers.txt), batch-1
     decoding and the same prefill; the 4096^2 and 16384^2 GEMVs in GB/s.
     Ratios are withheld when the machine is visibly busy. --no_compile skips the torch.compile
     contender (its first compile takes minutes; later runs reuse PyTorch's on-disk cache).

Medians of repeats with min-max; the machine is shared, so only ratios within one run mean much.
`python -m kernels_numba.bench` (full) or `--smoke` (tiny sizes, seconds; the notebook uses that).
On a loaded machine two-thread BLAS degrades far more than one thread does; for ratios that do not
depend on the neighbours, also run `NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m kernels_numba.bench`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

import numba
import numpy as np

import mmf
from mmf.training.adamw import AdamW
from mmf.backend import NumpyBackend
from mmf.layers.bitlinear import BITLINEAR_EPS
from mmf.layers.quant import activation_quant, weight_quant
from mmf.layers.rmsnorm import rmsnorm_forward

from .backend import NumbaBackend
from .engine import LAYOUT, Engine
from .packing import pack_ternary
from .products import BEST, BEST_TOKENS, cpu_vectors, ternary_matvec

FULL = dict(gemv=4096, decode=dict(vocab_size=32000, hidden_size=1024, num_layers=24, intermediate_size=2816),
            decode_tokens=24, train=dict(vocab_size=2048, hidden_size=256, num_layers=4), batch=16, seq=128,
            train_steps=5)
SMOKE = dict(gemv=512, decode=dict(vocab_size=512, hidden_size=128, num_layers=2, intermediate_size=256),
             decode_tokens=6, train=dict(vocab_size=256, hidden_size=64, num_layers=2), batch=4, seq=32,
             train_steps=2)


def alternating_blocks(fns, rounds=3, per_block=10, settle=0.3):
    """Seconds per call of each fn in fns (name -> callable), timed in alternating blocks: each round
    runs every fn in turn, first untimed for `settle` seconds, then `per_block` timed calls.

    Why blocks and not one call each in turn: after a BLAS call OpenBLAS's idle threads keep spinning
    for ~0.1 s, and a Numba kernel launched meanwhile shares its core with them (measured: a decoding
    step took 28 ms right after a BLAS call, 6 ms after another step). The settle time lets the other
    library's threads go to sleep; the rounds still let both see the same machine load."""
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t_end = time.perf_counter() + settle
            while time.perf_counter() < t_end:
                fn()
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                ts[k].append(time.perf_counter() - t0)
    return {k: np.array(v) for k, v in ts.items()}


def stats(ts):
    return dict(median=float(np.median(ts)), min=float(ts.min()), max=float(ts.max()))


def fmt_us(s):
    return f"{s['median'] * 1e6:.2f} us (min {s['min'] * 1e6:.2f}, max {s['max'] * 1e6:.2f})"


def fmt_ms(s):
    return f"{s['median'] * 1e3:.3f} ms (min {s['min'] * 1e3:.3f}, max {s['max'] * 1e3:.3f})"


# ----------------------------------------------------------------------------
# 1. GEMV

def bench_gemv(n, repeats=50):
    rng = np.random.default_rng(0)
    Wt = rng.integers(-1, 2, (n, n)).astype(np.int8)
    x_q = rng.integers(-127, 128, n).astype(np.int8)
    W = Wt.astype(np.float32)
    x = x_q.astype(np.float32)
    p = pack_ternary(Wt)
    assert np.array_equal(ternary_matvec(p, x_q), (W @ x).astype(np.int32))   # validated before timed
    ts = alternating_blocks({"kernel": lambda: ternary_matvec(p, x_q), "numpy": lambda: W @ x},
                            rounds=5, per_block=max(1, repeats // 5))
    k, f = stats(ts["kernel"]), stats(ts["numpy"])
    return dict(n=n, kernel=k, numpy=f, speedup=f["median"] / k["median"])


# ----------------------------------------------------------------------------
# 2./3. decoding and memory

class DequantizedBackend(NumpyBackend):
    """mmf's own forward, decoded with float32 BLAS: each W~ = Wt * beta is computed once (as a
    deployment of the official code would keep it) and every BitLinear is a float GEMV."""

    def __init__(self):
        super().__init__(weights="ternary", fused=True)
        self._wq = {}

    def bitlinear_forward(self, x, W, g):
        Wq = self._wq.get(id(W))
        if Wq is None:
            Wq = self._wq[id(W)] = weight_quant(W)
        xn, _ = rmsnorm_forward(x, g, BITLINEAR_EPS)
        return activation_quant(xn) @ Wq.T, None


def bench_decode(config_kw, n_tokens, embedding="float32", seed=0):
    cfg = mmf.MMfreeConfig(**config_kw)
    model = mmf.MMfreeLM(cfg, seed=seed, backend=DequantizedBackend())
    engine = Engine(model, embedding=embedding)
    prompt = np.array([[1, 2, 3, 4]])
    # validated before timing: the engine's logits are the float32 model's. Untrained random weights
    # put many activations and weights next to a rounding boundary of E2/E3, so one-ulp differences
    # flip a few int8 codes and the logits move by ~1-5% (mmf's own float32 vs float64 forward differ
    # as much on such models); exact greedy agreement is tested on a trained model instead.
    ref = model.forward(prompt)[:, -1]                               # (1, V)
    got = engine.prefill(prompt)[0]
    logits_err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert logits_err < 0.1, f"engine logits differ from the float32 model's by {logits_err:.2e}"
    _, state = model.forward(prompt, return_state=True)
    e_state = engine.prefill(prompt)[1]
    toks = iter(np.random.default_rng(1).integers(0, cfg.vocab_size, 10**6))

    def float_step():
        nonlocal state
        _, state = model.forward(np.array([[next(toks)]]), state=state, return_state=True)

    mats = list(model.backend._wq.values())                          # every W~ of the model, float32
    vecs = [np.ones(W.shape[1], np.float32) for W in mats]

    def float_gemvs():                                               # the floor of any float32 decoder
        for W, v in zip(mats, vecs):
            W @ v

    ts = alternating_blocks({"engine": lambda: engine.step(np.array([next(toks)]), e_state), "float32": float_step,
                             "gemvs": float_gemvs}, rounds=3, per_block=max(1, n_tokens // 3))
    e, f, gv = stats(ts["engine"]), stats(ts["float32"]), stats(ts["gemvs"])
    float_bytes = model.num_params() * 4
    mapped = Engine(model, embedding="mmap")                         # exact; resident = rows of tokens seen
    mapped_tokens = mapped.generate(prompt, n_tokens)
    return dict(gemvs=gv, gemv_speedup=gv["median"] / e["median"], mmap_bytes=mapped.nbytes, mmap_rows=len(np.unique(mapped_tokens)),
                nonembedding_ratio=(engine.nbytes - engine.emb.nbytes) / (float_bytes - engine.emb.nbytes),
                config=config_kw, logits_err=logits_err, engine=e, float32=f, speedup=f["median"] / e["median"],
                engine_tok_s=1.0 / e["median"], float32_tok_s=1.0 / f["median"],
                engine_bytes=engine.nbytes, float32_bytes=float_bytes,
                memory_ratio=engine.nbytes / float_bytes, engine_int8_emb_bytes=_int8_emb_bytes(engine, cfg))


def _int8_emb_bytes(engine, cfg):
    """Resident bytes if the embedding were int8 + a float32 scale per row (embedding='int8')."""
    if engine.emb.dtype == np.int8:
        return engine.nbytes
    return engine.nbytes - engine.emb.nbytes + cfg.vocab_size * cfg.hidden_size     # (V, D) int8; scales already counted


# ----------------------------------------------------------------------------
# 4. training step

def bench_train(config_kw, B, T, steps):
    """Steps of the three variants interleaved with the float32 GEMMs a step needs whatever the
    kernels do (the GEMM floor, below), so that all of them see the same machine load."""
    cfg = mmf.MMfreeConfig(**config_kw)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    runs = {"numpy": "numpy", "numba": NumbaBackend(True, True, "blas"),
            "numba-ternary": NumbaBackend(True, True, "ternary")}
    models = {k: mmf.MMfreeLM(cfg, seed=0, backend=b) for k, b in runs.items()}
    opts = {k: AdamW(m.params, lr=1e-3, ops=m.backend) for k, m in models.items()}
    losses = {k: m.loss_and_grads(x, y)[0] for k, m in models.items()}   # warm-up (compiles kernels)
    floor = gemm_floor(cfg, B * T)
    ts = {k: [] for k in list(models) + list(floor)}
    for _ in range(steps):                                           # interleaved
        for k, m in models.items():
            t0 = time.perf_counter()
            _, g = m.loss_and_grads(x, y)
            opts[k].step(g)
            ts[k].append(time.perf_counter() - t0)
        for k, fn in floor.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    out = {k: dict(step=stats(np.array(ts[k])), tok_s=B * T / float(np.median(ts[k]))) for k in models}
    out.update({k: stats(np.array(ts[k])) for k in floor})
    out["losses"] = losses
    out["speedup"] = out["numpy"]["step"]["median"] / out["numba"]["step"]["median"]
    out["speedup_ternary"] = out["numpy"]["step"]["median"] / out["numba-ternary"]["step"]["median"]
    return out


def bitlinear_shapes(cfg):
    """(out, in) of every BitLinear a training step runs: 4 MLGRU projections, gate, down per layer; head."""
    D, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    return [(D, D)] * 4 * cfg.num_layers + [(2 * I, D), (D, I)] * cfg.num_layers + [(V, D)]


def gemm_floor(cfg, M):
    """The float32 GEMMs of one training step on M tokens: the forward product of every BitLinear
    ("gemm forward") and the STE backward pair dW = dy.T @ x~, dx~ = dy @ W~ (E5, "gemm backward").
    A step that keeps float products cannot take less than their sum."""
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((M, k), np.float32), rng.standard_normal((n, k), np.float32),
             rng.standard_normal((M, n), np.float32)) for n, k in bitlinear_shapes(cfg)]
    return {"gemm forward": lambda: [x @ W.T for x, W, _ in mats],
            "gemm backward": lambda: [(dy.T @ x, dy @ W) for x, W, dy in mats]}


# ----------------------------------------------------------------------------
# 5. activation memory

def _unique_array_bytes(obj, seen):
    """Bytes of every distinct ndarray buffer reachable from obj (tuples, lists, dicts, NamedTuples)."""
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) in seen:
            return 0
        seen.add(id(base))
        return base.nbytes
    if isinstance(obj, dict):
        return sum(_unique_array_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_unique_array_bytes(v, seen) for v in obj)
    return 0


def bench_activation_memory(config_kw, B, T):
    cfg = mmf.MMfreeConfig(**config_kw)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    out = {}
    for fused in (False, True):
        model = mmf.MMfreeLM(cfg, seed=0, backend=NumbaBackend(True, fused, "blas"))
        model.loss_and_grads(x, y)                                   # compile outside the measurement
        _, _, cache = model._forward(x, None)                        # what a training step holds for backward
        params = {id(p) for p in model.params.values()}
        seen = set(params)                                           # weights are not activations
        held = _unique_array_bytes(cache, seen)
        bitlinear = _unique_array_bytes(_bitlinear_caches(cache), set(params))
        del cache
        tracemalloc.start()
        model.loss_and_grads(x, y)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out["fused" if fused else "caching"] = dict(cache_bytes=held, bitlinear_bytes=bitlinear, peak_bytes=peak)
    c, f = out["caching"], out["fused"]
    out["cache_saving"] = 1 - f["cache_bytes"] / c["cache_bytes"]
    out["bitlinear_saving"] = 1 - f["bitlinear_bytes"] / c["bitlinear_bytes"]
    out["peak_saving"] = 1 - f["peak_bytes"] / c["peak_bytes"]
    return out


def _bitlinear_caches(obj):
    from .backend import BitLinearCache
    found = []

    def walk(o):
        if isinstance(o, BitLinearCache):
            found.append((o.x, o.xq, o.rstd, o.s))
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (tuple, list)):
            for v in o:
                walk(v)
    walk(obj)
    return found


def bench_checks(config_kw, gemv_n, step_repeats=30, check_repeats=2000):
    """Seconds of the O(1) input checks of Engine.step and ternary_matvec (each timed over many calls)
    beside the work they guard (a decoding step without its checks; the GEMV kernel alone)."""
    from .packing import check_activations
    from .products import _check_packed, matmul_best
    cfg = mmf.MMfreeConfig(**config_kw)
    engine = Engine(mmf.MMfreeLM(cfg, seed=0))
    state = engine.new_state(1)
    toks = iter(np.random.default_rng(1).integers(0, cfg.vocab_size, 10**6))
    tok = np.array([5])

    def checks_only():
        for _ in range(100):
            engine._check_step(tok, state)

    ts = alternating_blocks({"step": lambda: engine._step_unchecked(np.array([next(toks)]), state),
                             "checks x100": checks_only}, rounds=3, per_block=max(1, step_repeats // 3))
    step, checks = stats(ts["step"]), stats(np.array(ts["checks x100"]) / 100)
    rng = np.random.default_rng(0)
    packed = pack_ternary(rng.integers(-1, 2, (gemv_n, gemv_n)).astype(np.int8))
    x = rng.integers(-128, 128, gemv_n).astype(np.int8)

    def gemv_checks_only():
        for _ in range(100):
            _check_packed(packed)
            check_activations("x_q", x, packed.shape[1], ndim=1)

    tg = alternating_blocks({"gemv": lambda: matmul_best(packed, x.reshape(1, -1)),
                             "checks x100": gemv_checks_only}, rounds=3, per_block=max(1, check_repeats // 300))
    gemv, gchecks = stats(tg["gemv"]), stats(np.array(tg["checks x100"]) / 100)
    return {"config": config_kw, "step": step, "step_checks": checks,
            "step_ratio": checks["median"] / step["median"], "gemv": gemv, "gemv_checks": gchecks,
            "gemv_ratio": gchecks["median"] / gemv["median"]}


# ----------------------------------------------------------------------------

# ----------------------------------------------------------------------------
# 6. loading a Hugging Face checkpoint

def rss_anon_bytes():
    """This process's anonymous resident memory (RssAnon in /proc/self/status), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakSampler:
    """Samples RssAnon every `interval` seconds on a thread until stopped; .peak is the largest seen
    (a lower bound of the true peak; NumPy's large operations release the GIL, so the thread runs)."""

    def __init__(self, interval=0.001):
        self.interval, self.peak, self._stop = interval, rss_anon_bytes() or 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_bytes() or 0)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_bytes() or 0)


def _load_in_this_process(path, what):
    """The child side of bench_pretrained: build `what` ('engine' or 'model') from `path`, print JSON."""
    from mmf.interop.pretrained import load_pretrained
    np.zeros(1)                                                      # everything imported before the baseline
    before = rss_anon_bytes()
    tracemalloc.start()                                              # NumPy reports its buffers to it
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        obj = Engine.from_pretrained(path) if what == "engine" else load_pretrained(path)
        seconds = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = dict(seconds=seconds, before=before, peak=sampler.peak, after=rss_anon_bytes(), traced_peak=traced_peak)
    if what == "engine":
        out.update(engine_bytes=obj.nbytes, embedding_bytes=obj.emb.nbytes)
    print(json.dumps(out))


def bench_pretrained(config_kw):
    """Export a random model of this shape as BF16 (save_pretrained), then load it in two fresh
    processes: Engine.from_pretrained and MMfreeLM.from_pretrained."""
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**config_kw), seed=0)
    largest = max(v.size for v in model.params.values()) * 4        # one float32 copy of the largest tensor
    float_bytes = model.num_params() * 4
    with tempfile.TemporaryDirectory(prefix="mmf-bench-hf-") as d:
        t0 = time.perf_counter()
        model.save_pretrained(d, dtype="bfloat16")
        export_s = time.perf_counter() - t0
        del model
        file_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        runs = {}
        for what in ("engine", "model"):
            code = f"from kernels_numba.bench import _load_in_this_process; _load_in_this_process({d!r}, {what!r})"
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            runs[what] = json.loads(r.stdout.strip().splitlines()[-1])
    e = runs["engine"]
    budget = e["engine_bytes"] + largest + 100 * 2**20
    return dict(export_s=export_s, file_bytes=file_bytes, float_bytes=float_bytes, largest=largest,
                engine=e, model=runs["model"], budget=budget, grown=e["peak"] - e["before"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--only", nargs="*", default=None, choices=["gemv", "decode", "train", "memory", "pretrained",
                                                                  "checks", "rss", "profile", "infer", "pauses"],
                    help="sections to run; with --peers: train, infer, pauses")
    ap.add_argument("--peers", action="store_true",
                    help="instead of sections 1-7: mmf beside PyTorch (eager, torch.compile) and the machine's "
                         "limits, each contender in its own process (kernels_numba/peers.py; minutes)")
    ap.add_argument("--no_compile", action="store_true", help="--peers without the torch.compile contender")
    ap.add_argument("--no_numpy", action="store_true", help="--peers without the NumPy reference contender")
    ap.add_argument("--rounds", type=int, default=None, help="--peers: alternating rounds (default 4; inference 8)")
    ap.add_argument("--ratios_anyway", action="store_true",
                    help="--peers: print the ratios even when the machine looks busy")
    ap.add_argument("--pretrained", action="store_true",
                    help="also section 6: export a 370M-shaped BF16 checkpoint, load it (about a minute, 3 GB)")
    args = ap.parse_args(argv)
    smoke = args.smoke or os.environ.get("MMF_SMOKE") == "1"
    S = SMOKE if smoke else FULL
    if args.peers:
        from . import peers
        sections = ("train", "infer", "pauses")
        only = [w for w in (args.only or sections) if w in sections] or list(sections)
        peers.main(smoke=smoke, rounds=args.rounds, no_compile=args.no_compile, no_numpy=args.no_numpy,
                   ratios_anyway=args.ratios_anyway, only=only)
        return
    want = set(args.only or ["gemv", "decode", "train", "memory"]) | ({"pretrained"} if args.pretrained else set())
    print(f"kernels_numba bench: numba {numba.__version__}, {numba.get_num_threads()} threads, numpy {np.__version__}; "
          f"BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; "
          f"ternary products version {BEST} for one token, {BEST_TOKENS} for several (products.py; {cpu_vectors()}); "
          f"the engine's weights as {LAYOUT} ({'version 8 throughout' if LAYOUT == 'pairs' else 'those versions'}); "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other jobs share this machine)")
    if "gemv" in want:
        r = bench_gemv(S["gemv"])
        print(f"[1] GEMV {r['n']}x{r['n']}: ternary kernel {fmt_ms(r['kernel'])} | NumPy float32 W@x "
              f"{fmt_ms(r['numpy'])} | speedup {r['speedup']:.2f}x (target >= 6x)")
    if "decode" in want:
        r = bench_decode(S["decode"], S["decode_tokens"])
        print(f"[2] decode {r['config']} batch 1, {S['decode_tokens']} tokens: Engine {fmt_ms(r['engine'])} "
              f"= {r['engine_tok_s']:.1f} tok/s | float32 BLAS {fmt_ms(r['float32'])} = {r['float32_tok_s']:.1f} tok/s"
              f" | speedup {r['speedup']:.2f}x (targets >= 8x, >= 60 tok/s); max logit difference "
              f"{r['logits_err']:.1e} of the largest logit")
        print(f"[2] the float32 GEMVs of one token alone (no norms, no Python; the floor of any float32 decoder): "
              f"{fmt_ms(r['gemvs'])}; Engine is {r['gemv_speedup']:.2f}x faster than that too")
        fb = r["float32_bytes"]
        print(f"[3] resident weights vs the float32 model's {fb / 2**20:.1f} MiB (target <= 10%):\n"
              f"    embedding='mmap'    (exact, {r['mmap_rows']} distinct tokens seen): {r['mmap_bytes'] / 2**20:.1f} MiB "
              f"= {100 * r['mmap_bytes'] / fb:.1f}%\n"
              f"    embedding='int8'    (Q8, not exact):                {r['engine_int8_emb_bytes'] / 2**20:.1f} MiB "
              f"= {100 * r['engine_int8_emb_bytes'] / fb:.1f}%\n"
              f"    embedding='float32' (exact, all in RAM):            {r['engine_bytes'] / 2**20:.1f} MiB "
              f"= {100 * r['memory_ratio']:.1f}%\n"
              f"    everything but the embedding, on both sides:       {100 * r['nonembedding_ratio']:.1f}%")
    if "train" in want:
        r = bench_train(S["train"], S["batch"], S["seq"], S["train_steps"])
        for k in ("numpy", "numba", "numba-ternary"):
            s = r[k]["step"]
            print(f"[4] train step {S['train']} B={S['batch']} T={S['seq']} {k:13s}: {fmt_ms(s)} = "
                  f"{r[k]['tok_s']:.0f} tok/s")
        print(f"[4] training speedup numba/numpy {r['speedup']:.2f}x, numba-ternary/numpy "
              f"{r['speedup_ternary']:.2f}x (targets >= 3x and >= 2.8k tok/s)")
        ref, fwd, bwd = r["numpy"]["step"]["median"], r["gemm forward"], r["gemm backward"]
        print(f"[4] float32 GEMMs of one step alone: backward (dW, dx~) {fmt_ms(bwd)}, forward {fmt_ms(fwd)}. "
              f"With float products a step cannot beat the reference by more than "
              f"{ref / (fwd['median'] + bwd['median']):.1f}x (all its GEMMs) or, with a free forward, "
              f"{ref / bwd['median']:.1f}x (the STE backward pair, E5)")
    if "memory" in want:
        r = bench_activation_memory(S["train"], S["batch"], S["seq"])
        c, f = r["caching"], r["fused"]
        print(f"[5] activation memory, caching vs fused: cache {c['cache_bytes'] / 2**20:.1f} -> "
              f"{f['cache_bytes'] / 2**20:.1f} MiB ({100 * r['cache_saving']:.0f}% less); BitLinear caches "
              f"{c['bitlinear_bytes'] / 2**20:.1f} -> {f['bitlinear_bytes'] / 2**20:.1f} MiB "
              f"({100 * r['bitlinear_saving']:.0f}% less); tracemalloc peak {c['peak_bytes'] / 2**20:.1f} -> "
              f"{f['peak_bytes'] / 2**20:.1f} MiB ({100 * r['peak_saving']:.0f}% less) (target >= 40%)")
    if "pretrained" in want:
        r = bench_pretrained(S["decode"])
        e, m, MiB = r["engine"], r["model"], 2**20
        print(f"[6] HF checkpoint {S['decode']}: save_pretrained BF16 {r['export_s']:.1f} s, "
              f"{r['file_bytes'] / MiB:.0f} MiB on disk (float32 model {r['float_bytes'] / MiB:.0f} MiB)")
        print(f"[6] Engine.from_pretrained: {e['seconds']:.1f} s (page cache warm: the file was just written); "
              f"peak RssAnon {e['peak'] / MiB:.0f} MiB, {r['grown'] / MiB:.0f} MiB above the "
              f"{e['before'] / MiB:.0f} MiB before loading (sampled every ms; NumPy's own peak by tracemalloc "
              f"{e['traced_peak'] / MiB:.0f} MiB); budget = engine {e['engine_bytes'] / MiB:.0f} MiB (embedding "
              f"{e['embedding_bytes'] / MiB:.0f}) + largest tensor in float32 {r['largest'] / MiB:.0f} MiB + 100 MiB "
              f"= {r['budget'] / MiB:.0f} MiB: {'within' if r['grown'] <= r['budget'] else 'OVER'}")
        print(f"[6] MMfreeLM.from_pretrained (the float32 model, for contrast): {m['seconds']:.1f} s; peak RssAnon "
              f"{(m['peak'] - m['before']) / MiB:.0f} MiB above the {m['before'] / MiB:.0f} MiB before loading")
    if "rss" in want:                                                # step_memory.py: fresh processes
        from .step_memory import format_result, measure
        print("[rss] " + format_result(measure(S["train"], S["batch"], S["seq"]), f"{S['train']} B={S['batch']} T={S['seq']}"))
    if "profile" in want:                                            # step_profile.py: time per phase
        from .step_profile import format_profile, profile_step
        print("[profile] " + format_profile(profile_step(S["train"], S["batch"], S["seq"]), "training step by phase"))
    if "checks" in want:
        r = bench_checks(S["decode"], S["gemv"])
        print(f"[7] input checks of Engine.step, {r['config']} batch 1: {fmt_us(r['step_checks'])} per call vs "
              f"the step without them {fmt_ms(r['step'])} = {100 * r['step_ratio']:.3f}% (target < 2%)")
        print(f"[7] input checks of ternary_matvec {S['gemv']}x{S['gemv']}: {fmt_us(r['gemv_checks'])} per call vs "
              f"the kernel {fmt_ms(r['gemv'])} = {100 * r['gemv_ratio']:.3f}%")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
