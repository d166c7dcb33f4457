"""Corpora and token files: Tiny Shakespeare, the embedded story corpus, train/val split, memmaps.

A prepared dataset is four files in one directory (default `data/`, gitignored):

    {name}_train.bin, {name}_val.bin   flat uint16 token ids (read back through np.memmap)
    {name}_tokenizer.json              the tokenizer (mmf/tokenizer.py)
    {name}_meta.json                   sizes, bytes per token, and for stories the entropy floor

`name` is e.g. "stories1000k-seed1337_bpe512" or "tinyshakespeare_char": it holds every setting that
changes the files' contents (a val_fraction other than 0.1 is appended, e.g. "..._bpe512-val0.2"), so
two runs with different settings never share files. `prepare()` builds them (or reuses them when they
already exist with the same settings); `data/prepare.py` is its command line (--force rebuilds).

The four files are committed as one unit: meta.json is the commit record. It is deleted before any
other file is rewritten and written (atomically) last, holding the size and sha256 of the other
three; `load_dataset` verifies them and names the file that disagrees. A run that dies between files
therefore leaves no meta.json (the next `prepare` rebuilds), never a mixture that looks valid.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.request
from dataclasses import dataclass

import numpy as np

from mmf.atomic import remove_stale_temp_files, temp_name, write_text_atomic
from mmf.text.storygrammar import generate_story_corpus
from mmf.text.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # mmf/text/ -> repo
DATA_DIR = os.path.join(REPO_ROOT, "data")

TINY_SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/"
                        "data/tinyshakespeare/input.txt")
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# local copies tried before downloading: env var, the download cache, the team's shared copy
TINY_SHAKESPEARE_ENV = "MMF_TINYSHAKESPEARE"
_TS_CACHE = os.path.join(DATA_DIR, "cache", "tinyshakespeare.txt")
_TS_SHARED = os.path.join(REPO_ROOT, "..", "shared", "data", "tinyshakespeare.txt")

CORPORA = ("stories", "tinyshakespeare")


# ----------------------------------------------------------------------------------------------
# Tiny Shakespeare


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_verified(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    digest = _sha256(data)
    if digest != TINY_SHAKESPEARE_SHA256:
        raise ValueError(f"{path!r} is not Tiny Shakespeare: sha256 {digest} != expected "
                         f"{TINY_SHAKESPEARE_SHA256}; delete it or pass the right file")
    return data.decode("utf-8")


def load_tiny_shakespeare(path: str | None = None, download: bool = True,
                          url: str = TINY_SHAKESPEARE_URL, cache_path: str = _TS_CACHE) -> str:
    """The Tiny Shakespeare text, sha256-verified.

    Order: `path` if given (only that), else $MMF_TINYSHAKESPEARE, the download cache
    (data/cache/), ../shared/data/ next to the repo, and finally a download from `url` into the
    cache. Raises FileNotFoundError saying what was tried when nothing works.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Tiny Shakespeare not found at {path!r}")
        return _read_verified(path)
    tried = []
    for candidate in (os.environ.get(TINY_SHAKESPEARE_ENV), cache_path, _TS_SHARED):
        if candidate:
            if os.path.isfile(candidate):
                return _read_verified(candidate)
            tried.append(candidate)
    if download:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                data = r.read()
        except OSError as e:
            tried.append(f"{url} ({e})")
        else:
            if _sha256(data) != TINY_SHAKESPEARE_SHA256:
                raise ValueError(f"download from {url} has sha256 {_sha256(data)}, expected "
                                 f"{TINY_SHAKESPEARE_SHA256}; not using it")
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = f"{cache_path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, cache_path)
            return data.decode("utf-8")
    raise FileNotFoundError(
        "Tiny Shakespeare is not available. Tried: " + "; ".join(tried) +
        f". Download {url} yourself and pass its path (prepare(..., ts_path=...), "
        f"data/prepare.py --ts-path, or ${TINY_SHAKESPEARE_ENV}).")


# ----------------------------------------------------------------------------------------------
# splitting and token files


def split_text(text: str, val_fraction: float, boundaries: list[int] | None = None) -> tuple[str, str]:
    """First (1 - val_fraction) of the text for training, the rest for validation.

    With `boundaries` (e.g. story ends) the cut moves to the nearest boundary so no story is split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    if boundaries:
        cut = min(boundaries, key=lambda b: abs(b - cut))
    if cut <= 0 or cut >= len(text):
        raise ValueError(f"text of {len(text)} chars is too short to split with {val_fraction=}")
    return text[:cut], text[cut:]


def write_tokens(path: str, ids) -> None:
    """Flat little-endian uint16 file, written atomically."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        raise ValueError(f"token ids must be in [0, 65535] for a uint16 file, got [{arr.min()}, {arr.max()}]")
    tmp = temp_name(path)
    arr.astype("<u2").tofile(tmp)
    os.replace(tmp, path)


def read_tokens(path: str) -> np.memmap:
    """Memory-mapped read-only view of a uint16 token file (nothing is loaded until sliced)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"token file {path!r} does not exist; run data/prepare.py first")
    return np.memmap(path, dtype="<u2", mode="r")


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: x = tokens[s:s+T], y = tokens[s+1:s+T+1] for B random starts s.

    The only randomness is `rng`, so the generator's state *is* the data position (checkpointed).
    """
    n = len(tokens) - block_size - 1
    if n < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for block_size={block_size}")
    starts = rng.integers(0, n + 1, size=batch_size)                       # (B,)
    idx = starts[:, None] + np.arange(block_size + 1)[None, :]             # (B, T+1)
    window = np.asarray(tokens[idx], dtype=np.int64)                       # (B, T+1)
    return window[:, :-1], window[:, 1:]                                   # (B, T), (B, T)


def eval_windows(tokens: np.ndarray, block_size: int, max_windows: int | None = None):
    """Consecutive non-overlapping windows covering `tokens` (for a deterministic val loss)."""
    n_windows = (len(tokens) - 1) // block_size
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for one window of {block_size}")
    data = np.asarray(tokens[: n_windows * block_size + 1], dtype=np.int64)
    x = data[:-1].reshape(n_windows, block_size)                           # (N, T)
    y = data[1:].reshape(n_windows, block_size)                            # (N, T)
    return x, y


# ----------------------------------------------------------------------------------------------
# preparing a dataset


@dataclass
class Dataset:
    """A prepared dataset: memmapped train/val tokens, the tokenizer, and its metadata."""

    name: str
    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    meta: dict

    @property
    def bytes_per_token(self) -> float:
        """Validation-set UTF-8 bytes per token: converts nats/token into bits/byte."""
        return self.meta["val_bytes"] / self.meta["val_tokens"]

    def bits_per_byte(self, nats_per_token: float) -> float:
        return nats_per_token / math.log(2) / self.bytes_per_token

    def bits_per_char(self, nats_per_token: float) -> float:
        """Per Unicode character of the val text (== bits/byte for ASCII text like Tiny Shakespeare)."""
        return nats_per_token / math.log(2) * self.meta["val_tokens"] / self.meta["val_chars"]


def dataset_name(corpus: str, tokenizer: str, vocab_size: int, story_bytes: int = 0, seed: int = 0,
                 val_fraction: float = 0.1) -> str:
    """e.g. "stories1000k-seed1337_bpe512", "tinyshakespeare_char"."""
    if corpus == "stories":
        corpus = f"stories{story_bytes // 1000}k-seed{seed}"
        if story_bytes % 1000:
            corpus = f"stories{story_bytes}b-seed{seed}"             # exact when not whole kilobytes
    name = f"{corpus}_{tokenizer}{vocab_size if tokenizer == 'bpe' else ''}"
    return name if val_fraction == 0.1 else f"{name}-val{val_fraction:g}"


def prepare(corpus: str = "stories", tokenizer: str = "bpe", vocab_size: int = 512,
            out_dir: str = DATA_DIR, seed: int = 1337, story_bytes: int = 400_000,
            val_fraction: float = 0.1, ts_path: str | None = None, force: bool = False,
            progress: bool = True) -> Dataset:
    """Build (or reuse) the train/val token files and tokenizer for `corpus`.

    corpus "stories": the embedded grammar (mmf/storygrammar.py), `story_bytes` of text from `seed`;
    its meta records the exact entropy floor (bits/byte, and nats/token on the val split).
    corpus "tinyshakespeare": load_tiny_shakespeare(ts_path).
    The tokenizer is trained on the training split only.
    """
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {CORPORA}")
    name = dataset_name(corpus, tokenizer, vocab_size, story_bytes, seed, val_fraction)
    settings = {"corpus": corpus, "tokenizer": tokenizer, "vocab_size": vocab_size,
                "val_fraction": val_fraction}
    if corpus == "stories":
        settings.update(seed=seed, story_bytes=story_bytes)
    paths = {k: os.path.join(out_dir, f"{name}_{k}") for k in
             ("train.bin", "val.bin", "tokenizer.json", "meta.json")}
    remove_stale_temp_files(out_dir)                                 # files of writers that were killed
    if not force and os.path.isfile(paths["meta.json"]):
        meta = _read_meta(paths["meta.json"])
        if meta.get("settings") == settings:
            return load_dataset(name, out_dir)                       # verifies every file against meta

    # ---- text and split
    meta: dict = {"settings": settings}
    if corpus == "stories":
        sc = generate_story_corpus(story_bytes, seed=seed)
        train_text, val_text = split_text(sc.text, val_fraction, boundaries=sc.story_ends)
        meta["entropy_bits_per_byte"] = sc.entropy_bits_per_byte              # expected floor
        meta["val_floor_bits_per_byte"] = sc.empirical_bits_per_byte(start=len(train_text))
    else:
        train_text, val_text = split_text(load_tiny_shakespeare(ts_path), val_fraction)

    # ---- tokenizer (trained on train only) and token files
    tok = build_tokenizer(tokenizer, train_text, vocab_size, progress=progress)
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(paths["meta.json"]):
        os.remove(paths["meta.json"])                                # uncommit: the files are about to change
    write_tokens(paths["train.bin"], train_ids)
    write_tokens(paths["val.bin"], val_ids)
    save_tokenizer(tok, paths["tokenizer.json"])
    meta["files"] = {k: _file_record(paths[k]) for k in ("train.bin", "val.bin", "tokenizer.json")}
    meta.update(vocab_size=tok.vocab_size, train_tokens=len(train_ids), val_tokens=len(val_ids),
                train_bytes=len(train_text.encode()), val_bytes=len(val_text.encode()),
                val_chars=len(val_text))
    if corpus == "stories":
        # the entropy of the val text spread over its tokens: the floor in the loss's own unit
        meta["val_floor_nats_per_token"] = (meta["val_floor_bits_per_byte"] * math.log(2)
                                            * meta["val_bytes"] / meta["val_tokens"])
    write_text_atomic(paths["meta.json"], json.dumps(meta, indent=1))   # the commit
    return load_dataset(name, out_dir)


def _file_record(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    return {"bytes": len(data), "sha256": _sha256(data)}


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"data cache file {path!r} is corrupt ({e}); rebuild it with "
                         "`python data/prepare.py --force` or train with --rebuild_data=True") from None
    if not isinstance(meta, dict):
        raise ValueError(f"data cache file {path!r} is not a meta record; rebuild it with "
                         "`python data/prepare.py --force` or train with --rebuild_data=True")
    return meta


def verify_dataset_files(base: str, meta: dict) -> None:
    """Each file's size and sha256 must be the ones meta.json recorded when the cache was committed."""
    rebuild = "rebuild the cache with `python data/prepare.py --force` or train with --rebuild_data=True"
    files = meta.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"data cache file {base}_meta.json records no file sizes or hashes (made by an older "
                         f"version, or damaged); {rebuild}")
    for kind in ("train.bin", "val.bin", "tokenizer.json"):
        path, want = f"{base}_{kind}", files.get(kind)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data cache file {path!r} is missing; {rebuild}")
        if not isinstance(want, dict) or os.path.getsize(path) != want.get("bytes") \
                or _file_record(path)["sha256"] != want.get("sha256"):
            raise ValueError(f"data cache file {path!r} does not match {base}_meta.json (size "
                             f"{os.path.getsize(path):,} bytes, recorded {want.get('bytes') if isinstance(want, dict) else '?'}"
                             f"; or its sha256 differs): it was damaged or overwritten; {rebuild}")


def load_dataset(name: str, data_dir: str = DATA_DIR) -> Dataset:
    """Open a prepared dataset (memmaps, tokenizer, meta)."""
    base = os.path.join(data_dir, name)
    meta_path = f"{base}_meta.json"
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"dataset {name!r} is not prepared in {data_dir!r}; "
                                f"run `python data/prepare.py` (see data/README.md)")
    meta = _read_meta(meta_path)
    verify_dataset_files(base, meta)
    d = Dataset(name, read_tokens(f"{base}_train.bin"), read_tokens(f"{base}_val.bin"),
                load_tokenizer(f"{base}_tokenizer.json"), meta)
    if len(d.train) != meta.get("train_tokens") or len(d.val) != meta.get("val_tokens") \
            or d.tokenizer.vocab_size != meta.get("vocab_size"):
        raise ValueError(f"data cache {base}_*: token counts or vocabulary disagree with {meta_path}; rebuild "
                         "with `python data/prepare.py --force` or train with --rebuild_data=True")
    return d
