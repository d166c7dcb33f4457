"""Decoding cost against context length: the MatMul-free LM's constant state beside a Transformer's KV cache.

    python -m mmf.experiments.decode_cost                      # contexts 128 ... 8192, the baselines' size
    python -m mmf.experiments.decode_cost --plot=decode.png --repeats=21 --table=decode.md
    python -m mmf.experiments.decode_cost --smoke              # seconds, NumPy models only (CI)

To decode token n+1 a model needs what it remembers of tokens 1..n. The MatMul-free LM remembers one
hidden vector per layer (the MLGRU state h, L x D numbers) whatever n is; a Transformer keeps every past
key and value (the KV cache, 2 x L x n x D numbers) and attends over all of them. So the MMfree step
costs the same at n = 128 and n = 8192, and the Transformer's grows with n, in time and in memory.

Method: three decoders at the baselines' size (D = 256, L = 2, V = 2048), untrained (timing does not
depend on the weights' values), batch 1, float32, in one process:
  * MMfree with float weights in NumPy and Transformer++ (float, 4 heads) in NumPy with its KV cache: the
    same kind of float arithmetic per projection, so the difference between them is the carried state;
  * MMfree ternary in kernels_numba.Engine (2-bit packed weights, add/subtract kernels): how it is deployed.
Each context is reached by real prefill (random tokens; the NumPy models in chunks of at most 512 so the
attention scores stay small), then one decoding step is timed `repeats` times from that same state; we
report the median and the min-max. State bytes are those of the arrays the model carries from step to
step. The machine is shared: absolute times are noisy, the shape of the curves is the result.
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


class Decoder:
    """One way to decode with a model: `prefill(ids (1, T))` continues the carried state through T tokens,
    `step(token)` times one decoding step from the current state without changing it."""

    def __init__(self, name, model):
        self.name, self.model, self.state = name, model, None

    def prefill(self, ids):
        for s in range(0, ids.shape[1], PREFILL_CHUNK):           # chunks keep attention scores small
            _, self.state = self.model.forward(ids[:, s:s + PREFILL_CHUNK], state=self.state, return_state=True)

    def step(self, token):
        """Seconds for one step, and the bytes of the state it returns (forward returns a new state)."""
        t = time.perf_counter()
        _, after = self.model.forward(np.array([[token]]), state=self.state, return_state=True)
        return time.perf_counter() - t, state_bytes(after)


class EngineDecoder(Decoder):
    """The MatMul-free LM's deployable path: kernels_numba.Engine, weights packed to 2 bits once."""

    def __init__(self, name, model):
        import kernels_numba
        super().__init__(name, kernels_numba.Engine(model))
        self.state, self.started = self.model.new_state(1), False

    def prefill(self, ids):
        if self.started:                                           # continue the carried state token by token
            for t in range(ids.shape[1]):
                self.model.step(ids[:, t], self.state)
        else:                                                      # the first segment: the matrix-kernel prefill
            _, self.state = self.model.prefill(ids)
            self.started = True

    def step(self, token):
        state = self.state.copy()                                  # step updates in place; keep ours
        t = time.perf_counter()
        self.model.step(np.array([token]), state)
        return time.perf_counter() - t, state_bytes([state])


def build_decoders(size: dict, max_context: int, num_heads: int = 4, seed: int = 0, engine: bool = True):
    """MMfree (float weights, NumPy), MMfree (ternary, the packed Numba engine) and Transformer++ (float,
    NumPy, KV cache), all of the same width and depth. The two NumPy models do the same kind of float
    arithmetic per projection, so their difference is the state; the engine is how MMfree is deployed."""
    import mmf
    from mmf.models.transformer import TransformerLM
    from mmf.models.transformer_config import TransformerConfig
    heads = min(num_heads, size["hidden_size"] // 16)
    out = [Decoder("MMfree, float, NumPy", mmf.MMfreeLM(mmf.MMfreeConfig(**size, weights="float"), seed=seed))]
    if engine:
        out.append(EngineDecoder("MMfree, ternary, packed engine",
                                 mmf.MMfreeLM(mmf.MMfreeConfig(**size, weights="ternary"), seed=seed)))
    out.append(Decoder("Transformer++, float, NumPy, KV cache",
                       TransformerLM(TransformerConfig(**size, num_heads=heads, weights="float",
                                                       max_position_embeddings=max_context + 1), seed=seed)))
    return out


def measure(contexts=CONTEXTS, size=None, repeats: int = 11, seed: int = 0, engine: bool = True,
            progress: bool = False) -> list[dict]:
    """Rows {model, context, median_ms, min_ms, max_ms, state_bytes}: one decoding step after `context`
    prefilled tokens, timed `repeats` times from the same state."""
    size = size or SIZE
    contexts = sorted(contexts)
    if not contexts or contexts[0] < 1 or repeats < 1:
        raise ValueError(f"need contexts >= 1 and repeats >= 1, got {contexts}, {repeats}")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, size["vocab_size"], (1, contexts[-1] + 1))
    rows = []
    for dec in build_decoders(size, contexts[-1], seed=seed, engine=engine):
        done = 0
        dec.step(int(ids[0, 0]))                                   # warm up (compilation, caches)
        for n in contexts:
            dec.prefill(ids[:, done:n])
            done = n
            times, nbytes = [], 0
            for _ in range(repeats):
                t, nbytes = dec.step(int(ids[0, n]))
                times.append(t)
            rows.append({"model": dec.name, "context": n, "median_ms": 1e3 * statistics.median(times),
                         "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times), "state_bytes": nbytes})
            if progress:
                r = rows[-1]
                print(f"{dec.name:38s} n={n:5d}: {r['median_ms']:8.3f} ms/token ({r['min_ms']:.3f}-{r['max_ms']:.3f}), "
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
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Decoding one token: constant recurrent state vs growing KV cache")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def main(argv=None) -> int:
    """The command line; errors become one-line messages (exit 2 for usage errors)."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.experiments.decode_cost")


def _main(argv) -> int:
    contexts, size, repeats, plot_path, table_path, engine = CONTEXTS, SIZE, 11, None, None, True
    for a in argv:
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a == "--smoke":
            contexts, size, repeats, engine = SMOKE_CONTEXTS, SMOKE_SIZE, 3, False   # no Numba compile
        elif a.startswith("--contexts="):
            contexts = tuple(int(x) for x in a.split("=", 1)[1].split(","))
        elif a.startswith("--repeats="):
            repeats = int(a.split("=", 1)[1])
        elif a.startswith("--plot="):
            plot_path = a.split("=", 1)[1]
        elif a.startswith("--table="):
            table_path = a.split("=", 1)[1]
        else:
            raise ValueError(f"unknown argument {a!r}; see --help")
    if not contexts or min(contexts) < 1 or repeats < 1:
        raise ValueError(f"contexts and repeats must be positive, got {contexts}, {repeats}")
    rows = measure(contexts, size, repeats, engine=engine, progress=True)
    print(table(rows), end="")
    if table_path:
        with open(table_path, "w") as f:
            f.write(table(rows))
    if plot_path:
        import matplotlib
        matplotlib.use("Agg")
        plot(rows, plot_path)
        print(f"plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
