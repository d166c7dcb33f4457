"""Prepare a dataset: text -> tokenizer -> uint16 train/val token files in data/ (see data/README.md).

    python data/prepare.py                                   # embedded stories, BPE 512 (the main job's)
    python data/prepare.py --corpus=tinyshakespeare --tokenizer=bpe --vocab_size=2048
    python data/prepare.py --corpus=tinyshakespeare --tokenizer=char --ts_path=../shared/data/tinyshakespeare.txt
"""
import argparse
import sys

from mmf.text.corpus import DATA_DIR, prepare


def main(argv=None) -> int:
    from mmf.cli import run
    return run(_main, argv, "data/prepare.py")


def _main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="--debug shows the traceback of an error")
    p.add_argument("--corpus", default="stories", choices=["stories", "tinyshakespeare"])
    p.add_argument("--tokenizer", default="bpe", choices=["bpe", "char"])
    p.add_argument("--vocab_size", type=int, default=512, help="BPE vocabulary (512-4096)")
    p.add_argument("--story_bytes", type=int, default=1_000_000, help="size of the generated stories")
    p.add_argument("--seed", type=int, default=1337, help="story generator seed")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--ts_path", default=None, help="local Tiny Shakespeare file (else search, then download)")
    p.add_argument("--out_dir", default=DATA_DIR)
    p.add_argument("--force", action="store_true", help="rebuild even if the files exist (e.g. a damaged cache)")
    a = p.parse_args(argv)
    d = prepare(a.corpus, a.tokenizer, a.vocab_size, out_dir=a.out_dir, seed=a.seed,
                story_bytes=a.story_bytes, val_fraction=a.val_fraction, ts_path=a.ts_path, force=a.force)
    m = d.meta
    print(f"{d.name}: vocab {m['vocab_size']}, train {m['train_tokens']:,} tokens ({m['train_bytes']:,} bytes), "
          f"val {m['val_tokens']:,} tokens ({m['val_bytes']:,} bytes), {d.bytes_per_token:.2f} bytes/token")
    if "val_floor_bits_per_byte" in m:
        print(f"entropy floor of the val split: {m['val_floor_bits_per_byte']:.4f} bits/byte = "
              f"{m['val_floor_nats_per_token']:.4f} nats/token "
              f"(grammar's expected rate {m['entropy_bits_per_byte']:.4f} bits/byte)")
    print(f"files: {a.out_dir}/{d.name}_{{train.bin,val.bin,tokenizer.json,meta.json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
