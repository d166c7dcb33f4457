"""Sample from a trained checkpoint.

    python -m mmf.sample --checkpoint=runs/tiny/ckpt.ckpt --prompt="Once upon a time"
    python -m mmf.sample --checkpoint=runs/shakespeare/ckpt.ckpt --prompt="ROMEO:" --temperature=0

The prompt is prefilled once, then each new token costs one recurrent step (mmf/generate.py).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from mmf.training.checkpoint import load_checkpoint
from mmf.models.generate import generate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmf.sample", description=__doc__.splitlines()[0],
                                epilog="--debug shows the traceback of an error")
    p.add_argument("--checkpoint", required=True, help="checkpoint file written by mmf.training.trainer")
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


def main(argv: list[str] | None = None) -> int:
    """Errors become one-line messages: exit 2 for usage errors, 1 for a failed run; --debug re-raises."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.sample")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {args.num_samples}")
    ck = load_checkpoint(args.checkpoint)
    model, tok = ck.build_model(backend=args.backend), ck.build_tokenizer()
    ids = np.array(tok.encode(args.prompt), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("the prompt encodes to no tokens; give at least one character")
    for k in range(args.num_samples):
        out = generate(model, ids, args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed + k)
        if args.num_samples > 1:
            print(f"--- sample {k + 1} ---")
        print(tok.decode(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
