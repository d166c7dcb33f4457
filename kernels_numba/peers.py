"""`python -m kernels_numba.bench --peers`: mmf beside real peers and beside the machine's limits.

Every contender runs in its own process (a "worker"), built and warmed up once, then timed in
alternating rounds A, B, C, A, B, C, ...: while one runs, the others wait on a pipe and use no CPU,
and every one of them sees the machine in the same states. Medians of the timed calls with min-max;
ratios only between contenders of this one run.

Training (V=2048 D=256 L=4 B=16 T=128, fwd + bwd + AdamW, one step per call):
    mmf-numba      MMfreeLM(backend="numba") + mmf's AdamW
    mmf-numpy      the NumPy reference (skipped with --no_numpy)
    torch-eager    kernels_numba/peer_torch.py (the same math as a PyTorch user writes it) + torch.optim.AdamW
    torch-compile  the same module through torch.compile (minutes to compile; --no_compile skips it)
    gemm-floor     only the float32 GEMMs a step needs whatever else it does (forward x W~.T, backward
                   dW and dx~ of every BitLinear, E5): a step with float products cannot be faster
Inference (the 370M shape: V=32000 D=1024 L=24 I=2816, random weights, seed 0 in every process):
    engine         kernels_numba.Engine: Engine.generate for batch 1, 4, 8, 16 (greedy, prompt of one
                   token, sampling included); a 512-token prefill; and the limits, measured in this
                   process with the engine's thread count: read bandwidth (a streaming sum over 512 MiB),
                   the ternary GEMV kernel's in-cache rate (a compute roofline), the 4096^2 and the
                   out-of-cache 16384^2 GEMV
    torch-prefill  the PyTorch peer in float32 on the same weights, W~ computed once (freeze_), the
                   same 512-token prompt under torch.inference_mode
    gemm-prefill   the float32 GEMMs of that prefill alone (NumPy BLAS): the floor of a float prefill
    llama-cpp      llama.cpp on a Llama of the same widths quantized to TQ2_0, its ternary format
                   (kernels_numba/peer_llama.py; dev-only, requirements-peers.txt): batch-1 decoding
                   and the same 512-token prefill, with the engine's thread count

Decoding moves every packed weight (2 bits each) and the MLGRU state through the memory bus once per
token, so bytes per token / read bandwidth bounds its speed; the roofline line beside it says
whether the kernel could go that fast even from cache.

What the runs showed (the kernel compute-bound at about the read bandwidth, where a decoding step's
time goes, the 4096^2 GEMV's two modes) is written down in the README, "Beside real peers".

When the machine is visibly busy (load average above the core count, or a contender whose
p10-p90 spread exceeds SPREAD_LIMIT of its median) the ratios are withheld and a warning printed
(--ratios_anyway prints them regardless).
"""
import json
import os
import subprocess
import sys
import time

import numba
import numpy as np
from numba import njit, prange

TRAIN = dict(config=dict(vocab_size=2048, hidden_size=256, num_layers=4), batch=16, seq=128)
# gemv: (in-cache roofline, L3-sized, out of cache) GEMV sizes n x n
INFER = dict(config=dict(vocab_size=32000, hidden_size=1024, num_layers=24, intermediate_size=2816),
             prompt=512, decode_tokens=48, batches=(1, 4, 8, 16), gemv=(2048, 4096, 16384))
SMOKE_TRAIN = dict(config=dict(vocab_size=256, hidden_size=64, num_layers=2), batch=4, seq=16)
SMOKE_INFER = dict(config=dict(vocab_size=512, hidden_size=128, num_layers=2, intermediate_size=256),
                   prompt=32, decode_tokens=8, batches=(1, 4), gemv=(256, 512, 1024))
SPREAD_LIMIT = 0.3          # (p90 - p10) / median above this: the contender was disturbed (the percentiles
                            # rather than min-max, so that one interrupt in 100 GEMVs does not count)
PROMPT_SEED = 5
# llama.cpp's ternary TQ2_0 on a random Llama of the same widths (D=1024, L=24, FFN 2816, V=32000),
# llama-cpp-python 0.3.36 built with -march=native, 2 threads, measured on this project's machine on
# 2026-11-30. Printed as a reference, never as a ratio, when llama.cpp is not installed to run beside
# the engine (the llama-cpp contender).
LLAMA_CPP_TQ2_0 = dict(decode=(100, 135), prefill=(245, 285))
PROTOCOL = "@@"             # worker lines that carry results start with this


# ----------------------------------------------------------------------------
# worker side: build one contender, then answer RUN requests on stdin

def _say(kind, payload):
    print(f"{PROTOCOL}{kind} {json.dumps(payload)}", flush=True)


def _timed(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _train_batch(S):
    import mmf
    cfg = mmf.MMfreeConfig(**S["config"])
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (S["batch"], S["seq"] + 1))
    return cfg, ids[:, :-1], ids[:, 1:]


def _train_worker(kind, S):
    """-> (info, step()) for a training contender."""
    import mmf
    cfg, x, y = _train_batch(S)
    info = {}
    if kind in ("mmf-numba", "mmf-numpy"):
        from mmf.training.adamw import AdamW
        model = mmf.MMfreeLM(cfg, seed=0, backend=kind.split("-")[1])
        opt = AdamW(model.params, lr=1e-3, ops=model.backend)
        last = {}

        def step():
            last["loss"], g = model.loss_and_grads(x, y)
            opt.step(g)
    elif kind in ("torch-eager", "torch-compile"):
        import torch
        from .peer_torch import MMfreeTorch, adamw
        net = MMfreeTorch.from_mmf(mmf.MMfreeLM(cfg, seed=0))
        opt = adamw(net, lr=1e-3, fused=True)                          # the fastest CPU AdamW of torch
        fwd = torch.compile(net) if kind == "torch-compile" else net
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        last = {}
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()

        def step():
            loss = fwd(xt, yt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last["loss"] = loss.item()
    elif kind == "gemm-floor":
        from .bench import gemm_floor
        floor = gemm_floor(cfg, x.size)
        last = {"loss": None}

        def step():
            floor["gemm forward"]()
            floor["gemm backward"]()
    else:
        raise ValueError(f"unknown training contender {kind!r}")
    t0 = time.perf_counter()
    step()                                                           # warm-up: compiles, first touches
    info["first_loss"] = last["loss"]
    info["setup_s"] = time.perf_counter() - t0
    step()
    return info, step


@njit(cache=True)
def _sum_words(a):
    s = np.uint64(0)
    for i in range(a.shape[0]):                                      # vectorized
        s += a[i]
    return s


@njit(parallel=True, cache=True)
def read_all(a, n_chunks, out):
    """out[c] = sum of chunk c of a (uint64); chunk c goes to one thread: a streaming read.
    (The chunk is a slice handed to a serial loop: with the bounds computed inside the prange body
    LLVM left the loop scalar and the probe read 4.5 GB/s instead of 21.)"""
    step = a.shape[0] // n_chunks
    for c in prange(n_chunks):
        out[c] = _sum_words(a[c * step:(c + 1) * step])


def _prompt(S, V):
    return np.random.default_rng(PROMPT_SEED).integers(0, V, (1, S["prompt"]))


def _infer_model(S):
    import mmf
    return mmf.MMfreeLM(mmf.MMfreeConfig(**S["config"]), seed=0)


def _engine_worker(S):
    """-> (info, run(request)) for the engine: decoding, prefill and the limits."""
    from .engine import Engine
    from .packing import pack_ternary
    from .products import cpu_vectors, layout_gemv
    t0 = time.perf_counter()
    model = _infer_model(S)
    engine = Engine(model)
    cfg = model.config
    del model
    prompt = _prompt(S, cfg.vocab_size)
    logits, _ = engine.prefill(prompt)                               # warm-up + the cross-process check
    for B in S["batches"]:
        engine.generate(np.ones((B, 1), np.int64), 2)
    L, D = cfg.num_layers, cfg.hidden_size
    skip = {id(engine.emb), id(engine.emb_scale)}
    weights = sum(v.nbytes for v in vars(engine).values() if isinstance(v, np.ndarray) and id(v) not in skip)
    per_token = weights + D * 4 + 4                                  # + one embedding row and its scale
    state = 2 * L * D * 4                                            # the MLGRU state, read and written
    threads = numba.get_num_threads()
    probe = np.ones(2**26, np.uint64)                                # 512 MiB, first touched here
    sums = np.empty(threads, np.uint64)
    read_all(probe, threads, sums)
    rng = np.random.default_rng(0)
    pack, activations, kernel = layout_gemv(engine.layout)          # the engine's own GEMV
    gemvs = {}
    for n in S["gemv"]:                                              # in-cache roofline, L3, out of cache
        w = pack(pack_ternary(rng.integers(-1, 2, (n, n), dtype=np.int8)))
        xq = rng.integers(-128, 128, (1, n)).astype(np.int8)
        gemvs[n] = (w, xq, np.empty((1, n), np.int32))
        kernel(w, activations(xq, w.n_blocks), gemvs[n][2])
    n_roof = S["gemv"][0]
    w_roof, x_roof, out_roof = gemvs[n_roof]
    acts_roof = activations(x_roof, w_roof.n_blocks)
    lookup = engine.lookup_from is not None and prompt.size >= engine.lookup_from
    info = dict(setup_s=time.perf_counter() - t0, threads=threads, version=engine.version,
                batch_version=engine.version_tokens, layout=engine.layout,
                prefill_version=engine.lookup_version if lookup else engine.version_tokens, cpu=cpu_vectors(),
                weight_bytes=weights, bytes_per_token=per_token, state_bytes=state, probe_bytes=probe.nbytes,
                logits=[float(v) for v in logits[0]],
                gemv_bytes={n: w.nbytes for n, (w, _, _) in gemvs.items()})

    def run(req):
        task = req["task"]
        if task == "decode":
            B, n = req["batch"], req["tokens"]
            start = np.arange(1, B + 1, dtype=np.int64).reshape(B, 1)
            return _timed(lambda: engine.generate(start, n), 1)
        if task == "prefill":
            return _timed(lambda: engine.prefill(prompt), 1)
        if task == "bandwidth":
            return _timed(lambda: read_all(probe, threads, sums), req.get("repeats", 5))
        if task == "gemv":                                           # activations prepared, then the kernel
            w, xq, out = gemvs[req["n"]]
            return _timed(lambda: kernel(w, activations(xq, w.n_blocks), out), req.get("repeats", 20))
        if task == "roofline":                                       # the bare kernel, its activations ready
            return _timed(lambda: kernel(w_roof, acts_roof, out_roof), req.get("repeats", 100))
        raise ValueError(f"unknown engine task {task!r}")
    return info, run


def _torch_prefill_worker(S):
    import torch
    from .peer_torch import MMfreeTorch
    t0 = time.perf_counter()
    model = _infer_model(S)
    net = MMfreeTorch.from_mmf(model).freeze_().eval()
    V = model.config.vocab_size
    del model
    ids = torch.from_numpy(_prompt(S, V))

    def prefill():
        with torch.inference_mode():
            return net(ids, last_only=True)[0][0, -1]
    logits = prefill()
    info = dict(setup_s=time.perf_counter() - t0, torch=torch.__version__, threads=torch.get_num_threads(),
                logits=[float(v) for v in logits])
    return info, lambda req: _timed(prefill, 1)


def _gemm_prefill_worker(S):
    """The float32 GEMMs of a prefill of S['prompt'] tokens: every BitLinear of every layer on all
    tokens, the head on the last one (as the engine computes it)."""
    import mmf
    from .bench import bitlinear_shapes
    cfg = mmf.MMfreeConfig(**S["config"])
    rng = np.random.default_rng(0)
    shapes = bitlinear_shapes(cfg)
    mats = [(rng.standard_normal((S["prompt"] if i < len(shapes) - 1 else 1, k), np.float32),
             rng.standard_normal((n, k), np.float32)) for i, (n, k) in enumerate(shapes)]

    def gemms():
        for x, W in mats:
            x @ W.T
    gemms()
    return dict(), lambda req: _timed(gemms, 1)


def gemv_after_pauses(n, pauses=(0.0, 0.001, 0.02), calls=60, seed=0):
    """Seconds per call of an n x n GEMV (the public ternary_matvec path's kernel) when each call
    follows a pause of p seconds, for the packed planes on 4 KiB pages (a malloc'd copy) and on
    transparent huge pages (what pack_ternary makes from 2 MiB on). -> {(pages, pause): stats}.

    The experiment behind the 4096^2 GEMV's two modes: back to back the call takes one time; after
    an idle pause (the other thread asleep, its CPU lent away, caches and TLB cold) it takes more."""
    from .packing import huge_page_empty, pack_ternary
    from .products import best_gemv_kernel
    kernel, activations = best_gemv_kernel()
    rng = np.random.default_rng(seed)
    p = pack_ternary(rng.integers(-1, 2, (n, n), dtype=np.int8))
    u = activations(rng.integers(-128, 128, (1, n)).astype(np.int8), p.n_blocks)
    out = np.empty(n, np.int32)
    small = lambda a: np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)   # noqa: E731 (malloc: 4 KiB pages)
    huge = lambda a: huge_page_empty(a.shape, a.dtype, read_only_source=a)    # noqa: E731
    res = {}
    for pages, copy in (("4 KiB pages", small), ("huge pages", huge)):
        nz, ng = copy(p.nonzero), copy(p.negative)
        for _ in range(5):
            kernel(nz, ng, p.offset, u, out)
        for pause in pauses:
            ts = []
            for _ in range(calls):
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                kernel(nz, ng, p.offset, u, out)
                ts.append(time.perf_counter() - t0)
            res[(pages, pause)] = stats(ts)
    return res, 2 * p.nonzero.nbytes


# P3's processes: the same GEMV after idle pauses under four thread setups. OpenMP's wait policy is
# read once, when the thread pool starts, so each needs its own process.
PAUSE_SETUPS = (
    ("2 threads, spin ~30 us then sleep (mmf's default)", {}),
    ("2 threads, spin always (OMP_WAIT_POLICY=ACTIVE)", {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}),
    ("1 thread (NUMBA_NUM_THREADS=1)", {"NUMBA_NUM_THREADS": "1"}),
    ("2 threads, mmf's default wait, each bound to a CPU (OMP_PROC_BIND=true)", {"OMP_PROC_BIND": "true"}),
)


def gemv_after_pauses_in_process(n, env_changes, calls=60):
    """gemv_after_pauses(n) in a fresh Python process whose environment has env_changes (None removes
    a variable) -> ({(pages, pause): stats}, plane bytes, what the process ran with: its thread count
    and wait-policy variables)."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    code = ("import json, os, numba; from kernels_numba.peers import gemv_after_pauses; "
            f"res, nb = gemv_after_pauses({int(n)}, calls={int(calls)}); "
            "ran = dict(threads=numba.get_num_threads(), OMP_WAIT_POLICY=os.environ.get('OMP_WAIT_POLICY'), "
            "GOMP_SPINCOUNT=os.environ.get('GOMP_SPINCOUNT'), OMP_PROC_BIND=os.environ.get('OMP_PROC_BIND')); "
            "print(json.dumps([nb, [[p, s, st] for (p, s), st in res.items()], ran]))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the pause experiment's process failed (exit {out.returncode}): {out.stderr[-2000:]}")
    nbytes, items, ran = json.loads(out.stdout.strip().splitlines()[-1])
    return {(p, s): st for p, s, st in items}, nbytes, ran


def _llama_worker(S):
    """llama.cpp's TQ2_0 peer (kernels_numba/peer_llama.py), the engine's thread count."""
    from . import peer_llama
    t0 = time.perf_counter()
    path = peer_llama.build_tq2_0_model(S["config"], log=lambda m: print(m, file=sys.stderr, flush=True))
    threads = numba.get_num_threads()
    peer = peer_llama.LlamaPeer(path, n_ctx=S["prompt"] + S["decode_tokens"] + 8, threads=threads)
    prompt = [int(i) for i in _prompt(S, S["config"]["vocab_size"])[0]]
    peer.prefill(prompt)                                             # warm-up
    peer.generate(1, 2)                                              # (tokens, logits)
    info = dict(setup_s=time.perf_counter() - t0, threads=threads, llama_cpp=peer.version,
                tensor_types=peer_llama.tensor_types(path), file_bytes=os.path.getsize(path),
                cpu_features=peer_llama.cpu_features())

    def run(req):
        if req["task"] == "decode":
            return _timed(lambda: peer.generate(1, req["tokens"]), 1)
        if req["task"] == "prefill":
            return _timed(lambda: peer.prefill(prompt), 1)
        raise ValueError(f"unknown llama-cpp task {req['task']!r}")
    return info, run


def worker_main(kind, setting_json):
    S = json.loads(setting_json)
    if kind == "engine":
        info, run = _engine_worker(S)
    elif kind == "torch-prefill":
        info, run = _torch_prefill_worker(S)
    elif kind == "gemm-prefill":
        info, run = _gemm_prefill_worker(S)
    elif kind == "llama-cpp":
        info, run = _llama_worker(S)
    else:
        info, step = _train_worker(kind, S)
        run = lambda req: (step(), _timed(step, req["steps"]))[1]   # noqa: E731 (one untimed step first)
    _say("READY", info)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("task") == "quit":
            break
        _say("RESULT", run(req))


# ----------------------------------------------------------------------------
# parent side

class Worker:
    """One contender's process. start() returns once it is built and warmed up (READY)."""

    def __init__(self, kind, setting):
        self.kind = kind
        env = dict(os.environ)
        self.proc = subprocess.Popen([sys.executable, "-m", "kernels_numba.peers", "--worker", kind,
                                      json.dumps(setting)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.info = self._read("READY")

    def _read(self, kind):
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                tag, payload = line[len(PROTOCOL):].split(" ", 1)
                if tag == kind:
                    return json.loads(payload)
        code = self.proc.wait()
        raise RuntimeError(f"peer worker {self.kind!r} ended (exit code {code}) before sending {kind}; "
                           f"its error is printed above")

    def run(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read("RESULT")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"task": "quit"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def stats(ts):
    ts = np.asarray(ts, dtype=float)
    med = float(np.median(ts))
    p10, p90 = np.percentile(ts, [10, 90])
    return dict(median=med, min=float(ts.min()), max=float(ts.max()), n=len(ts),
                spread=float((p90 - p10) / med) if med > 0 else 0.0)


def _start(kinds, setting, log):
    workers = {}
    for kind in kinds:
        t0 = time.perf_counter()
        log(f"  starting {kind} ...")
        workers[kind] = Worker(kind, setting)
        log(f"  {kind} ready after {time.perf_counter() - t0:.1f} s")
    return workers


def alternate(workers, requests, rounds):
    """For each round, every (worker, request) pair in turn; -> {(kind, label): [seconds, ...]}."""
    ts = {}
    for _ in range(rounds):
        for kind, label, req in requests:
            time.sleep(0.2)                                          # let the last one's threads go idle
            ts.setdefault((kind, label), []).extend(workers[kind].run(**req))
    return ts


def run_training(S, rounds, steps, kinds, log):
    workers = _start(kinds, S, log)
    try:
        ts = alternate(workers, [(k, "step", dict(steps=steps)) for k in kinds], rounds)
    finally:
        for w in workers.values():
            w.close()
    tokens = S["batch"] * S["seq"]
    out = {k: dict(stats(ts[(k, "step")]), info=workers[k].info) for k in kinds}
    for k in kinds:
        out[k]["tok_s"] = tokens / out[k]["median"]
    return out


def run_inference(S, rounds, with_torch, log, with_llama=False):
    kinds = (["engine", "gemm-prefill"] + (["torch-prefill"] if with_torch else [])
             + (["llama-cpp"] if with_llama else []))
    workers = _start(kinds, S, log)
    reqs = [("engine", f"decode B={B}", dict(task="decode", batch=B, tokens=S["decode_tokens"]))
            for B in S["batches"]]
    n_roof, n_cache, n_out = S["gemv"]
    reqs += [("engine", "bandwidth", dict(task="bandwidth")),
             ("engine", "gemv roofline", dict(task="roofline")),
             ("engine", "gemv cache", dict(task="gemv", n=n_cache)),
             ("engine", "gemv out", dict(task="gemv", n=n_out, repeats=5)),
             ("engine", "prefill", dict(task="prefill")),
             ("gemm-prefill", "prefill", dict(task="prefill"))]
    if with_torch:
        reqs.append(("torch-prefill", "prefill", dict(task="prefill")))
    if with_llama:
        reqs += [("llama-cpp", "decode B=1", dict(task="decode", tokens=S["decode_tokens"])),
                 ("llama-cpp", "prefill", dict(task="prefill"))]
    try:
        ts = alternate(workers, reqs, rounds)
    finally:
        for w in workers.values():
            w.close()
    out = {f"{k} {label}": stats(v) for (k, label), v in ts.items()}
    out["info"] = {k: w.info for k, w in workers.items()}
    return out


def _fmt(s, unit="ms"):
    k = 1e3 if unit == "ms" else 1.0
    return f"{s['median'] * k:.2f} {unit} (min {s['min'] * k:.2f}, max {s['max'] * k:.2f}; n={s['n']})"


def busy_reasons(results, cores):
    """Why ratios of this run would be nonsense, or [] when the machine looked quiet."""
    reasons = []
    load = os.getloadavg()[0]
    if load > cores:
        reasons.append(f"load average {load:.2f} > {cores} cores")
    wide = [f"{name} ({100 * s['spread']:.0f}%)" for name, s in results.items()
            if isinstance(s, dict) and "spread" in s and s["spread"] > SPREAD_LIMIT]
    if wide:
        reasons.append(f"p10-p90 spread above {100 * SPREAD_LIMIT:.0f}% of the median: {', '.join(wide)}")
    return reasons


def main(smoke=False, rounds=None, steps=None, no_compile=False, no_numpy=False, ratios_anyway=False,
         only=("train", "infer", "pauses"), log=print):
    cores = os.cpu_count()
    have_torch = torch_available()
    if not have_torch:
        log("PyTorch is not installed (a dev-only dependency: pip install -r requirements-dev.txt): "
            "the PyTorch peers are skipped; mmf, the GEMM floors and the limits still run.")
    from .peer_llama import available as llama_available
    have_llama = "infer" in only and llama_available()
    if "infer" in only and not have_llama:
        log("llama.cpp is not installed (dev-only: pip install -r requirements-peers.txt builds it): the TQ2_0 "
            "peer is skipped and its figures from this machine are printed as a reference, not as ratios.")
    T, I = (SMOKE_TRAIN, SMOKE_INFER) if smoke else (TRAIN, INFER)
    rounds = rounds or (2 if smoke else 4)
    steps = steps or (2 if smoke else 3)
    log(f"peers: {rounds} alternating rounds; load average at start {os.getloadavg()[0]:.2f} on {cores} cores")
    all_stats = {}
    lines = []
    if "train" in only:
        kinds = ["mmf-numba"] + ([] if no_numpy else ["mmf-numpy"])
        if have_torch:
            kinds += ["torch-eager"] + ([] if no_compile else ["torch-compile"])
        kinds.append("gemm-floor")
        r = run_training(T, rounds, steps, kinds, log)
        all_stats.update({f"train {k}": v for k, v in r.items()})
        tok = T["batch"] * T["seq"]
        log(f"[P1] training step {T['config']} B={T['batch']} T={T['seq']} ({tok} tokens), fwd+bwd+AdamW, "
            f"{rounds} rounds x {steps} steps after warm-up:")
        for k in kinds:
            extra = f"; compile + first step {r[k]['info']['setup_s']:.0f} s" if k == "torch-compile" else ""
            loss = r[k]["info"].get("first_loss")
            log(f"  {k:14s} {_fmt(r[k])} = {r[k]['tok_s']:,.0f} tok/s"
                + (f"; first loss {loss:.5f}" if loss is not None else "") + extra)
        losses = [r[k]["info"]["first_loss"] for k in kinds if r[k]["info"].get("first_loss") is not None]
        if len(losses) > 1:
            log(f"  first-step losses agree to {max(losses) - min(losses):.1e} (same weights and batch in every process)")
        m = r["mmf-numba"]["median"]
        lines.append(("train", [f"mmf-numba step = {100 * r['gemm-floor']['median'] / m:.0f}% of the float-GEMM "
                                f"floor (floor {r['gemm-floor']['tok_s']:,.0f} tok/s; target >= 85%)"]
                      + [f"mmf-numba tok/s / {k} tok/s: {r[k]['median'] / m:.2f}x" for k in kinds
                         if k not in ("mmf-numba", "gemm-floor")]))
    if "infer" in only:
        r = run_inference(I, max(rounds, 2 if smoke else 8), have_torch, log, with_llama=have_llama)
        all_stats.update({f"infer {k}": v for k, v in r.items() if k != "info"})
        e = r["info"]["engine"]
        bw = e["probe_bytes"] / r["engine bandwidth"]["median"]
        log(f"[P2] {I['config']}; engine process: {e['threads']} threads, ternary products version {e['version']} "
            f"(batches: version {e.get('batch_version', e['version'])}; prefill: version "
            f"{e.get('prefill_version', e['version'])}; weights as {e.get('layout', 'planes')}; "
            f"{e.get('cpu', 'CPU not recorded')})")
        log(f"  read bandwidth ({e['probe_bytes'] >> 20} MiB streamed, {e['threads']} threads): "
            f"{bw / 1e9:.1f} GB/s (min-max {e['probe_bytes'] / r['engine bandwidth']['max'] / 1e9:.1f}-"
            f"{e['probe_bytes'] / r['engine bandwidth']['min'] / 1e9:.1f})")
        per_tok = e["bytes_per_token"] + e["state_bytes"]
        limit = bw / per_tok
        n_roof, n_cache, n_out = I["gemv"]
        g2 = r["engine gemv roofline"]
        kernel_rate = n_roof * n_roof / g2["median"]                     # weights per second, in cache
        weights_per_tok = e["weight_bytes"] * 4                      # 2 bits per weight (offsets are rounding)
        log(f"  bytes per token (batch 1): packed weights {e['weight_bytes'] / 2**20:.1f} MiB + embedding row + "
            f"state {e['state_bytes'] / 1024:.0f} KiB = {per_tok / 2**20:.1f} MiB -> bandwidth limit "
            f"{limit:.0f} tok/s")
        log(f"  roofline: the GEMV kernel alone in cache ({n_roof}^2, {e['gemv_bytes'][str(n_roof)] >> 10} KiB) runs "
            f"{kernel_rate / 1e9:.1f} G weights/s = {e['gemv_bytes'][str(n_roof)] / g2['median'] / 1e9:.1f} GB/s of packed "
            f"weights -> compute limit ~{kernel_rate / weights_per_tok:.0f} tok/s "
            f"({'compute' if kernel_rate / weights_per_tok < limit else 'memory'}-bound)")
        dec = {}
        for B in I["batches"]:
            s = r[f"engine decode B={B}"]
            dec[B] = B * I["decode_tokens"] / s["median"]
            log(f"  Engine.generate batch {B:2d}, {I['decode_tokens']} tokens: {_fmt(s)} = {dec[B]:,.0f} tok/s"
                + (f" = {100 * dec[B] / limit:.0f}% of the bandwidth limit" if B == 1 else
                   f" ({dec[B] / dec[1]:.2f}x batch 1)"))
        for n, label in ((n_cache, "cache"), (n_out, "out")):
            s = r[f"engine gemv {label}"]
            nb = e["gemv_bytes"][str(n)]
            log(f"  ternary GEMV {n}^2 ({nb / 2**20:.1f} MiB packed): {_fmt(s)} = {nb / s['median'] / 1e9:.1f} GB/s"
                + (f" = {100 * nb / s['median'] / bw:.0f}% of the read bandwidth (target >= 85%)" if label == "out" else
                   f" (per-call min-max {nb / s['max'] / 1e9:.1f}-{nb / s['min'] / 1e9:.1f} GB/s)"))
        P = I["prompt"]
        pe, pg = r["engine prefill"], r["gemm-prefill prefill"]
        log(f"  prefill {P} tokens: engine {_fmt(pe)} = {P / pe['median']:,.0f} tok/s; its float32 GEMMs alone "
            f"(NumPy) {_fmt(pg)} = {P / pg['median']:,.0f} tok/s")
        if have_torch:
            pt = r["torch-prefill prefill"]
            t_logits = np.array(r["info"]["torch-prefill"]["logits"])
            e_logits = np.array(e["logits"])
            err = float(np.abs(t_logits - e_logits).max() / np.abs(t_logits).max())
            log(f"  prefill {P} tokens, PyTorch float32 (same weights, W~ once, inference_mode): {_fmt(pt)} = "
                f"{P / pt['median']:,.0f} tok/s; last-token logits vs the engine's: max difference {err:.1e} of the "
                f"largest, same argmax: {int(t_logits.argmax()) == int(e_logits.argmax())}")
        if have_llama:
            li = r["info"]["llama-cpp"]
            ld, lp = r["llama-cpp decode B=1"], r["llama-cpp prefill"]
            types = ", ".join(f"{n} {k}" for k, n in sorted(li["tensor_types"].items(), key=lambda kv: -kv[1]))
            log(f"  llama.cpp {li['llama_cpp']} ({li['threads']} threads), a Llama of the same widths in TQ2_0 "
                f"({li['file_bytes'] / 2**20:.0f} MiB; tensors: {types}); built for {' '.join(li['cpu_features'])}:")
            log(f"    decode batch 1, {I['decode_tokens']} tokens: {_fmt(ld)} = {I['decode_tokens'] / ld['median']:,.0f} "
                f"tok/s; prefill {P} tokens: {_fmt(lp)} = {P / lp['median']:,.0f} tok/s")
        else:
            lo, hi = LLAMA_CPP_TQ2_0["prefill"]
            log(f"  reference, not from this run: llama.cpp TQ2_0 on this machine's project day, 512-token prefill "
                f"{lo}-{hi} tok/s, decode {LLAMA_CPP_TQ2_0['decode'][0]}-{LLAMA_CPP_TQ2_0['decode'][1]} tok/s")
        inf = [f"decode batch 1: {dec[1]:.0f} tok/s = {100 * dec[1] / limit:.0f}% of the bandwidth limit "
               f"(targets >= 85%, >= 300 tok/s)"]
        if 8 in dec:
            inf.append(f"decode batch 8 / batch 1: {dec[8] / dec[1]:.2f}x (target >= 3x)")
        inf.append(f"prefill tok/s, engine / its float32 GEMMs alone: {pg['median'] / pe['median']:.2f}x")
        if have_torch:
            inf.append(f"prefill tok/s, engine / PyTorch float32: {pt['median'] / pe['median']:.2f}x")
        if have_llama:
            inf.append(f"prefill tok/s, engine / llama.cpp TQ2_0: {lp['median'] / pe['median']:.2f}x (target >= 2x)")
            inf.append(f"decode batch 1 tok/s, engine / llama.cpp TQ2_0: "
                       f"{dec[1] / (I['decode_tokens'] / ld['median']):.2f}x")
        s16 = r["engine gemv out"]
        inf.append(f"GEMV {n_out}^2: {100 * e['gemv_bytes'][str(n_out)] / s16['median'] / bw:.0f}% of the read "
                   f"bandwidth (target >= 85%)")
        lines.append(("inference", inf))
    if "pauses" in only:
        n = I["gemv"][1]
        log(f"[P3] GEMV {n}^2 after idle pauses, each setup in a fresh process (the causes of the slow mode: "
            "a second thread that went to sleep; one that woke on the first thread's CPU, which binding prevents)")
        for setup, changes in PAUSE_SETUPS:
            res, nbytes, ran = gemv_after_pauses_in_process(n, changes, calls=20 if smoke else 60)
            log(f"  {setup} ({nbytes / 2**20:.1f} MiB of planes; ran with {ran}):")
            for (pages, pause), st in res.items():
                log(f"    {pages:12s} pause {pause * 1e3:4.0f} ms: {_fmt(st)} = {nbytes / st['median'] / 1e9:.1f} GB/s")
    reasons = busy_reasons(all_stats, cores)
    log(f"load average at end {os.getloadavg()[0]:.2f} on {cores} cores")
    if reasons and not ratios_anyway:
        log("WARNING: the machine was visibly busy (" + "; ".join(reasons) + "): ratios withheld, they would "
            "measure the neighbours. Rerun on a quiet machine (or pass --ratios_anyway).")
    else:
        if reasons:
            log("WARNING: busy machine (" + "; ".join(reasons) + "); ratios printed anyway (--ratios_anyway)")
        for what, ls in lines:
            for line in ls:
                log(f"[ratio, {what}] {line}")
    return all_stats


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("run it as python -m kernels_numba.bench --peers")
