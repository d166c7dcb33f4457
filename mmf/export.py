"""Export an mmf checkpoint as a Hugging Face model directory for the official GPU package.

    python -m mmf.export --checkpoint=runs/shakespeare/ckpt.ckpt --out_dir=hf/shakespeare
    python -m mmf.export --checkpoint=runs/shakespeare/ckpt.ckpt --out_dir=hf/shakespeare --dtype=float32

Writes config.json (model_type hgrn_bit, every HGRNBitConfig field), model.safetensors (or shards +
model.safetensors.index.json above --max_shard_bytes) and, when the checkpoint holds a tokenizer,
tokenizer.json + tokenizer_config.json (needs the optional `tokenizers` package). On a GPU machine:
`import mmfreelm` then `transformers.AutoModelForCausalLM.from_pretrained(out_dir)`.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmf.export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint file written by mmf.training.trainer")
    p.add_argument("--out_dir", "--out-dir", required=True, help="directory to write (created if needed)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="storage dtype: bfloat16 (as the released models; round-to-nearest-even) or float32 "
                        "(exact)")
    p.add_argument("--max_shard_bytes", "--max-shard-bytes", type=int, default=None,
                   help="split the weights into shards of at most this many bytes (default 5e9)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Errors become one-line messages: exit 2 for usage errors, 1 for a failed run; --debug re-raises."""
    from mmf.cli import run
    return run(_main, argv, "python -m mmf.export")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from mmf.interop.pretrained import save_pretrained
    from mmf.training.checkpoint import load_checkpoint
    ck = load_checkpoint(args.checkpoint)
    model = ck.build_model()                                        # any architecture: refused below if not hgrn_bit
    tok = ck.build_tokenizer() if ck.tokenizer is not None else None
    files = save_pretrained(model, args.out_dir, dtype=args.dtype, tokenizer=tok,
                            max_shard_bytes=args.max_shard_bytes)
    print(f"wrote {args.out_dir}: {', '.join(files)}"
          + ("" if tok is not None else " (the checkpoint holds no tokenizer, so no tokenizer.json)"))
    return 0

if __name__ == "__main__":
    sys.exit(main())
