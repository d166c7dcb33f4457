"""Peak resident memory of a training step, fused vs caching (E5), each measured in a fresh process.

Why processes and RSS: Numba's kernels allocate through its own runtime, which tracemalloc does not
see, and the allocator keeps freed pages; the operating system's count of resident pages is what a
user runs out of. Each child process
  1. compiles every kernel on a tiny model (Numba compiles per dtype, not per shape),
  2. builds the model and its AdamW state, and reads its resident set (VmRSS): the baseline,
  3. resets the kernel's high-water mark (writing 5 to /proc/self/clear_refs, Linux >= 4.0),
  4. runs `steps` training steps (loss, gradients, AdamW), and reads the high-water mark (VmHWM).
The step's memory is VmHWM - baseline: what a training step needs on top of the parameters, the
optimizer state and the libraries. Modes alternate between processes (fused, caching, fused, ...).

    python -m kernels_numba.step_memory [--runs N] [--smoke]       (also: python -m kernels_numba.bench --only rss)
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

MiB = 2 ** 20


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure_in_this_process(config_kw, B, T, fused, steps=2, seed=0):
    """The child's side: returns dict(baseline, peak, step) in bytes for one mode."""
    import mmf
    from mmf.training.adamw import AdamW

    def train(cfg, n):
        model = mmf.MMfreeLM(cfg, seed=seed, backend="numba", fused=fused)
        opt = AdamW(model.params, lr=1e-3, ops=model.backend)
        ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (B if n else 2, (T if n else 8) + 1))
        return model, opt, ids

    tiny = mmf.MMfreeConfig(vocab_size=64, hidden_size=32, num_layers=2)
    model, opt, ids = train(tiny, 0)                                 # compile every kernel
    opt.step(model.loss_and_grads(ids[:, :-1], ids[:, 1:])[1])
    del model, opt
    model, opt, ids = train(mmf.MMfreeConfig(**config_kw), 1)
    x, y = ids[:, :-1], ids[:, 1:]
    baseline = _status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                                 # VmHWM := VmRSS
    for _ in range(steps):
        _, grads = model.loss_and_grads(x, y)
        opt.step(grads)
        del grads
    peak = _status_kib("VmHWM") * 1024
    return dict(baseline=baseline, peak=peak, step=peak - baseline)


def measure(config_kw, B, T, runs=3, steps=2):
    """Alternating fresh processes per mode; returns {mode: {baseline, peak, step: [per run]}}."""
    out = {"fused": [], "caching": []}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the children import this package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    for _ in range(runs):
        for mode in ("fused", "caching"):
            code = ("import json; from kernels_numba.step_memory import measure_in_this_process as m; "
                    f"print(json.dumps(m({config_kw!r}, {B}, {T}, {mode == 'fused'}, {steps})))")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
            out[mode].append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def summarize(out):
    med = {mode: {k: float(np.median([r[k] for r in runs])) for k in ("baseline", "peak", "step")}
           for mode, runs in out.items()}
    rng = {mode: (min(r["step"] for r in runs), max(r["step"] for r in runs)) for mode, runs in out.items()}
    return med, rng, 1 - med["fused"]["step"] / med["caching"]["step"]


def format_result(out, label):
    med, rng, saving = summarize(out)
    lines = [f"peak RSS of a training step, {label}, {len(out['fused'])} processes per mode (medians, min-max):"]
    for mode in ("caching", "fused"):
        m = med[mode]
        lines.append(f"  {mode:8s} step {m['step'] / MiB:7.1f} MiB ({rng[mode][0] / MiB:.1f}-{rng[mode][1] / MiB:.1f}) "
                     f"above a baseline of {m['baseline'] / MiB:.1f} MiB (libraries, parameters, AdamW state); "
                     f"process peak {m['peak'] / MiB:.1f} MiB")
    lines.append(f"  fused needs {100 * saving:.0f}% less than caching (target >= 40%)")
    return "\n".join(lines)


def main(argv=None):
    from .bench import FULL, SMOKE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--runs", type=int, default=3, help="processes per mode (default 3)")
    args = ap.parse_args(argv)
    S = SMOKE if (args.smoke or os.environ.get("MMF_SMOKE") == "1") else FULL
    out = measure(S["train"], S["batch"], S["seq"], args.runs)
    print(format_result(out, f"{S['train']} B={S['batch']} T={S['seq']}"))


if __name__ == "__main__":
    main()
