"""Where the time of one training step goes, phase by phase (python -m kernels_numba.step_profile).

A step is float GEMMs (the floor any exact implementation pays, kernels_numba.bench.gemm_floor) plus
everything between them. This profiler wraps every method of a model's backend, and the kernels the
backend calls through its modules (fused.*, mixers.*, scan.*), with timers that count *exclusive*
time (a call's own time minus the timed calls inside it), runs a few training steps (loss, gradients,
AdamW) and prints the median milliseconds per phase:

    float GEMMs        what is left of the BitLinear forward/backward once its kernels are taken out:
                       the float products x~ W~^T, dy^T x~, dy W~ (E4/E5) and a few reshapes
    weight quant       E3: W -> W~ (the absmean scale and the codes), once per BitLinear call
    norm + quant       E1 + E2 in the BitLinear (one kernel), and the backward's recompute of x~
    RMSNorm            the block norms, the final norm, g_norm, and the BitLinear norms' backward
    MLGRU              E6: gates, scan, output gate, forward and backward
    GLU                E8: SiLU(gate) * up, forward and backward
    cross-entropy      E11, forward and backward
    embedding grad     the scatter-add of the input gradient into the embedding rows
    AdamW              the optimizer step (all parameters)
    rest               everything not inside a timed call: NumPy elementwise operations of the
                       mixers and blocks, residual adds, concatenates, the gradient dict, Python

    python -m kernels_numba.step_profile [--caching] [--backend numpy] [--steps N] [--smoke]
"""
import argparse
import os
import time
from collections import defaultdict

import numpy as np

import mmf
from mmf.training.adamw import AdamW

GEMM = "float GEMMs"
# phase of each backend method (a method not listed is reported under its own name)
METHODS = {
    "bitlinear_forward": GEMM, "bitlinear_backward": GEMM, "_bitlinear_rows": GEMM, "_bitlinear_grads": GEMM,
    "_ste_products": GEMM,
    "_weight": "weight quant",
    "rmsnorm_forward": "RMSNorm", "rmsnorm_backward": "RMSNorm", "rmsnorm_normalized": "RMSNorm",
    "sigmoid": "MLGRU/GLU gates", "silu": "MLGRU/GLU gates", "silu_grad": "MLGRU/GLU gates",
    "scan_forward": "MLGRU", "scan_backward": "MLGRU",
    "cross_entropy_forward": "cross-entropy", "cross_entropy_backward": "cross-entropy",
    "embedding_backward": "embedding grad", "adamw_update": "AdamW",
    "block_forward": "rest", "block_backward": "rest",
}
# phase of the module-level functions the backend and block.py call as module.name (so patchable)
FUNCTIONS = {
    "fused": {"norm_quant": "norm + quant", "requant_kernel": "norm + quant", "ternary_weight_kernel": "weight quant",
              "rmsnorm_kernel": "RMSNorm", "rmsnorm_backward_rows": "RMSNorm",
              "embedding_backward_kernel": "embedding grad"},
    "mixers": {"mlgru_forward_kernel": "MLGRU", "mlgru_output_kernel": "MLGRU",
               "mlgru_output_backward_kernel": "MLGRU", "mlgru_carry_kernel": "MLGRU",
               "mlgru_gates_backward_kernel": "MLGRU",
               "glu_forward_kernel": "GLU", "glu_backward_kernel": "GLU",
               "add_rmsnorm_kernel": "RMSNorm", "rmsnorm_apply_kernel": "RMSNorm"},
    "backend": {"weight_codes": "weight quant", "pack_ternary": "weight quant"},
    "block": {"gate_up_products": GEMM, "gate_up_backward_products": GEMM},
}


class PhaseTimer:
    """Replaces each method of `backend` (on the instance) and each function of FUNCTIONS (on its
    module, until close()) by a timed wrapper. Times are exclusive: a fused block method that calls
    bitlinear_forward is charged only for its own work."""

    def __init__(self, backend):
        import importlib
        self.totals = defaultdict(float)
        self._stack = []                                            # child time of each open call
        self._restore = []
        for name in dir(type(backend)):
            if name.startswith("__") or not callable(getattr(type(backend), name, None)):
                continue
            if name.startswith("_") and name not in METHODS:
                continue
            setattr(backend, name, self._wrap(METHODS.get(name, name), getattr(backend, name)))
        for mod_name, funcs in FUNCTIONS.items():
            try:
                mod = importlib.import_module(f"kernels_numba.{mod_name}")
            except ImportError:
                continue
            for fn_name, phase in funcs.items():
                if hasattr(mod, fn_name):
                    self._restore.append((mod, fn_name, getattr(mod, fn_name)))
                    setattr(mod, fn_name, self._wrap(phase, getattr(mod, fn_name)))

    def close(self):
        for mod, name, fn in self._restore:
            setattr(mod, name, fn)

    def _wrap(self, phase, fn):
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                children = self._stack.pop()
                self.totals[phase] += elapsed - children
                if self._stack:
                    self._stack[-1] += elapsed
        return timed

    def take(self):
        out, self.totals = dict(self.totals), defaultdict(float)
        return out


def profile_step(config_kw, B, T, steps=8, backend="numba", fused=True, seed=0):
    """Median ms per phase over `steps` timed training steps (after one warm-up step), the step's
    median ms, and the float-GEMM floor of the step measured alone in the same run."""
    from .bench import gemm_floor
    cfg = mmf.MMfreeConfig(**config_kw)
    model = mmf.MMfreeLM(cfg, seed=seed, backend=backend, fused=fused)
    timer = PhaseTimer(model.backend)
    opt = AdamW(model.params, lr=1e-3, ops=model.backend)
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    floor = gemm_floor(cfg, B * T)
    rows, step_s, floor_s = [], [], []
    for k in range(steps + 1):
        timer.take()
        t0 = time.perf_counter()
        _, grads = model.loss_and_grads(x, y)
        t_grads = time.perf_counter()
        phases = timer.take()
        opt.step(grads)
        dt = time.perf_counter() - t0
        timer.take()
        del grads
        phases["rest"] = (t_grads - t0) - sum(v for p, v in phases.items() if p != "rest")
        phases["AdamW"] = dt - (t_grads - t0)
        t1 = time.perf_counter()
        for fn in floor.values():
            fn()
        if k:                                                        # the first step compiles
            floor_s.append(time.perf_counter() - t1)
            rows.append(phases)
            step_s.append(dt)
    timer.close()
    names = sorted({p for r in rows for p in r}, key=lambda p: -np.median([r.get(p, 0.0) for r in rows]))
    med = {p: float(np.median([r.get(p, 0.0) for r in rows])) for p in names}
    return dict(phases=med, step=float(np.median(step_s)), step_min=min(step_s), step_max=max(step_s),
                floor=float(np.median(floor_s)), tokens=B * T)


def format_profile(r, label):
    ms = 1e3
    lines = [f"{label}: step {r['step'] * ms:.1f} ms (min {r['step_min'] * ms:.1f}, max {r['step_max'] * ms:.1f}) "
             f"= {r['tokens'] / r['step']:.0f} tok/s; float-GEMM floor {r['floor'] * ms:.1f} ms "
             f"({100 * r['floor'] / r['step']:.0f}% of the step)",
             f"  {'phase':<16} {'ms':>8} {'% step':>7}"]
    for p, v in r["phases"].items():
        note = f"  (the floor measured alone: {r['floor'] * ms:.1f})" if p == GEMM else ""
        lines.append(f"  {p:<16} {v * ms:8.1f} {100 * v / r['step']:6.1f}%{note}")
    lines.append(f"  above the floor: {(r['step'] - r['floor']) * ms:.1f} ms")
    return "\n".join(lines)


def main(argv=None):
    from .bench import FULL, SMOKE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps after one warm-up (default 8)")
    ap.add_argument("--backend", choices=["numba", "numpy"], default="numba")
    ap.add_argument("--caching", action="store_true", help="the caching mode (fused=False) instead of fused")
    args = ap.parse_args(argv)
    S = SMOKE if (args.smoke or os.environ.get("MMF_SMOKE") == "1") else FULL
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (timings scale with it)")
    r = profile_step(S["train"], S["batch"], S["seq"], args.steps, args.backend, not args.caching)
    print(format_profile(r, f"{args.backend} {'caching' if args.caching else 'fused'} {S['train']} "
                            f"B={S['batch']} T={S['seq']}, {args.steps} steps"))


if __name__ == "__main__":
    main()
