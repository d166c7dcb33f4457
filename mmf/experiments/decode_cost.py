"""Decoding cost against context length: the MatMul-free LM's constant state beside a Transformer's KV cache.

    python -m mmf.experiments.decode_cost                      # contexts 128 ... 8192, the baselines' size
    python -m mmf.experiments.decode_cost --plot=decode.png --repeats=21
    python -m mmf.experiments.decode_cost --smoke              # seconds (CI, notebooks under MMF_SMOKE=1)

To decode token n+1 a model needs what it remembers of tokens 1..n. The MatMul-free LM remembers one
hidden vector per layer (the MLGRU state h, L x D numbers) whatever n is; a Transformer keeps every past
key and value (the KV cache, 2 x L x n x D numbers) and attends over all of them. So the MMfree step
costs the same at n = 128 and n = 8192, and the Transformer's grows with n, in time and in memory.

Method: both models at the baselines' size (D = 256, L = 2, V = 2048; Transformer++ float with 4 heads),
untrained (timing does not depend on the weights' values), batch 1, float32, the NumPy reference on one
machine in one process. Each context is reached by real prefill (random tokens, fed in chunks of at most
512 so the attention scores stay small), then one decoding step is timed `repeats` times from that same
state; we report the median and the min-max. The state bytes are those of the arrays the model carries.
The machine is shared: absolute times are noisy, the shape of the curves is the result.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

CONTEXTS = (128, 256, 512, 1024, 2048, 4096, 8192)
SMOKE_CONTEXTS = (16, 64)
SIZE = dict(vocab_size=2048, hidden_size=256, num_layers=2)
SMOKE_SIZE = dict(vocab_size=64, hidden_size=32, num_layers=1)
PREFILL_CHUNK = 512


def state_bytes(state) -> int:
    """Bytes of a model's carried state: MMfree's list of h arrays, or a Transformer's list of (K, V)."""
    total = 0
    for item in state:
        for a in (item if isinstance(item, (tuple, list)) else (item,)):
            total += a.nbytes
    return int(total)


def build_models(size: dict, max_context: int, num_heads: int = 4, seed: int = 0):
    """{name: model}: MMfree ternary and Transformer++ float of the same width and depth."""
    import mmf
    from mmf.models.transformer_config import TransformerConfig
    from mmf.models.transformer import TransformerLM
    mm = mmf.MMfreeLM(mmf.MMfreeConfig(**size, weights="ternary"), seed=seed)
    heads = min(num_heads, size["hidden_size"] // 16)
    tf = TransformerLM(TransformerConfig(**size, num_heads=heads, weights="float",
                                         max_position_embeddings=max_context + 1), seed=seed)
    return {"MMfree (ternary)": mm, "Transformer++ (float, KV cache)": tf}


def _prefill(model, state, ids):
    """Feed ids (1, T) in chunks, carrying the state; returns the state after the last token."""
    for s in range(0, ids.shape[1], PREFILL_CHUNK):
        _, state = model.forward(ids[:, s:s + PREFILL_CHUNK], state=state, return_state=True)
    return state


def measure(contexts=CONTEXTS, size=None, repeats: int = 11, seed: int = 0, progress: bool = False) -> list[dict]:
    """Rows {model, context, median_ms, min_ms, max_ms, state_bytes}: one decoding step after `context`
    prefilled tokens, timed `repeats` times from the same state."""
    size = size or SIZE
    contexts = sorted(contexts)
    if not contexts or contexts[0] < 1 or repeats < 1:
        raise ValueError(f"need contexts >= 1 and repeats >= 1, got {contexts}, {repeats}")
    models = build_models(size, contexts[-1], seed=seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, size["vocab_size"], (1, contexts[-1] + 1))
    rows = []
    for name, model in models.items():
        state, done = None, 0
        for n in contexts:
            state = _prefill(model, state, ids[:, done:n])
            done = n
            step_ids = ids[:, n:n + 1]
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                _, after = model.forward(step_ids, state=state, return_state=True)
                times.append(time.perf_counter() - t)
            rows.append({"model": name, "context": n, "median_ms": 1e3 * statistics.median(times),
                         "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times), "state_bytes": state_bytes(after)})
            if progress:
                r = rows[-1]
                print(f"{name:32s} n={n:5d}: {r['median_ms']:8.2f} ms/token ({r['min_ms']:.2f}-{r['max_ms']:.2f}), "
                      f"state {r['state_bytes']:,} bytes", flush=True)
    return rows


def table(rows) -> str:
    lines = ["| model | context | ms per token, median (min-max) | state bytes |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['context']:,} | {r['median_ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f}) "
                     f"| {r['state_bytes']:,} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: str | None = None):
    """Two panels against context length (log-log): time per token with min-max bars, and state bytes."""
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        n = [r["context"] for r in rs]
        med = np.array([r["median_ms"] for r in rs])
        err = np.array([[m - r["min_ms"] for m, r in zip(med, rs)], [r["max_ms"] - m for m, r in zip(med, rs)]])
        ax_t.errorbar(n, med, yerr=err, marker="o", capsize=3, label=name)
        ax_m.plot(n, [r["state_bytes"] for r in rs], marker="o", label=name)
    for ax, ylabel in ((ax_t, "ms per decoded token (median, min-max)"), (ax_m, "carried state (bytes)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens already seen)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Decoding one token: constant recurrent state vs growing KV cache")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    contexts, size, repeats, plot_path = CONTEXTS, SIZE, 11, None
    try:
        for a in argv:
            if a in ("-h", "--help"):
                print(__doc__)
                return 0
            if a == "--smoke":
                contexts, size, repeats = SMOKE_CONTEXTS, SMOKE_SIZE, 3
            elif a.startswith("--contexts="):
                contexts = tuple(int(x) for x in a.split("=", 1)[1].split(","))
            elif a.startswith("--repeats="):
                repeats = int(a.split("=", 1)[1])
            elif a.startswith("--plot="):
                plot_path = a.split("=", 1)[1]
            else:
                raise ValueError(f"unknown argument {a!r}; see --help")
        if min(contexts) < 1 or repeats < 1:
            raise ValueError(f"contexts and repeats must be positive, got {contexts}, {repeats}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = measure(contexts, size, repeats, progress=True)
    print(table(rows), end="")
    if plot_path:
        import matplotlib
        matplotlib.use("Agg")
        plot(rows, plot_path)
        print(f"plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
