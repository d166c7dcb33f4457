"""Sample from a trained checkpoint, or from a Hugging Face model directory.

    python -m mmf.sample --checkpoint=runs/tiny/ckpt.ckpt --prompt="Once upon a time"
    python -m mmf.sample --checkpoint=runs/shakespeare/ckpt.ckpt --prompt="ROMEO:" --temperature=0
    python -m mmf.sample --hf=MMfreeLM-370M --prompt="The capital of France is" --engine

The prompt is prefilled once, then each new token costs one recurrent step (mmf/generate.py).
--hf reads config.json + model.safetensors + tokenizer.json (the released models, or an export of
`python -m mmf.export`); --engine decodes with kernels_numba's add/subtract Engine. The speed, in new
tokens per second, goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from mmf.training.checkpoint import load_checkpoint
from mmf.models.generate import generate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmf.sample", description=__doc__.splitlines()[0],
                                epilog="--debug shows the traceback of an error")
    p.add_argument("--checkpoint", default=None, help="checkpoint file written by mmf.training.trainer")
    p.add_argument("--hf", default=None, metavar="DIR",
                   help="Hugging Face model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--engine", action="store_true",
                   help="decode with kernels_numba's Engine (packed ternary weights, add/subtract kernels)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top_k", "--top-k", type=int, default=None)
    p.add_argument("--top_p", "--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_samples", "--num-samples", type=int, default=1)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--backend", default="numpy", choices=["numpy", "numba"])
    return p


def _load(args):
    """(a generate function ids, n, **options -> ids, the tokenizer, what decodes) for the arguments."""
    if (args.checkpoint is None) == (args.hf is None):
        raise ValueError("give exactly one of --checkpoint=FILE (an mmf checkpoint) or --hf=DIR "
                         "(a Hugging Face model directory)")
    if args.hf is not None:
        from mmf.interop.hf_tokenizer import load_hf_tokenizer
        from mmf.interop.pretrained import load_pretrained
        tok = load_hf_tokenizer(args.hf)
        if args.engine:
            from kernels_numba import Engine
            return Engine.from_pretrained(args.hf).generate, tok, "kernels_numba Engine"
        model = load_pretrained(args.hf, backend=args.backend)
    else:
        ck = load_checkpoint(args.checkpoint)
        model, tok = ck.build_model(backend=args.backend), ck.build_tokenizer()
        if args.engine:
            from kernels_numba import Engine
            return Engine(model).generate, tok, "kernels_numba Engine"
    return (lambda ids, n, **kw: generate(model, ids, n, **kw)), tok, f"MMfreeLM, backend {args.backend}"


def main(argv: list[str] | None = None) -> int:
    """Errors become one-line messages: exit 2 for usage errors, 1 for a failed run; --debug re-raises."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.sample")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {args.num_samples}")
    run, tok, what = _load(args)
    ids = np.array(tok.encode(args.prompt), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("the prompt encodes to no tokens; give at least one character")
    for k in range(args.num_samples):
        t0 = time.perf_counter()
        out = run(ids, args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, seed=args.seed + k)
        seconds = time.perf_counter() - t0
        if args.num_samples > 1:
            print(f"--- sample {k + 1} ---")
        print(tok.decode(out))
        print(f"[{args.max_new_tokens} new tokens in {seconds:.2f} s (prefill included): "
              f"{args.max_new_tokens / max(seconds, 1e-9):.1f} tokens/s, {what}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
