"""Tokenizers: a byte-level BPE trained here (served by tiktoken) and a character-level one.

Byte-level BPE in three sentences. Start from the 256 byte values as tokens. Split the text into
"words" with GPT-2's pre-tokenization regex (so merges never cross a word/space/punctuation boundary),
then repeatedly merge the most frequent adjacent pair of tokens into a new token, until the vocabulary
has the size asked for. The learned tokens, in order of creation, are the *ranks* that
`tiktoken.Encoding` needs: tiktoken then encodes/decodes in Rust, fast and exactly.

Training is incremental: we keep a count for every adjacent pair (weighted by how often each word
occurs) and, for every pair, the set of words containing it. A merge rewrites only those words and
patches the counts of the pairs that changed; a lazy max-heap finds the next best pair. That is what
makes a 2048-token vocabulary on Tiny Shakespeare take seconds instead of hours.

Both tokenizers share one small interface: `.encode(str) -> list[int]`, `.decode(ids) -> str`,
`.vocab_size`, `.to_dict()` (JSON-able, stored inside checkpoints), `save(path)` / `load_tokenizer(path)`.
"""
from __future__ import annotations

import base64
import heapq
import json
import os
from collections import Counter

import regex
import tiktoken
from tqdm.auto import tqdm

# GPT-2's pre-tokenization pattern (contractions, letters, numbers, other symbols, whitespace).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

MAX_VOCAB = 65536   # token files are uint16


# ----------------------------------------------------------------------------------------------
# byte-level BPE


class BPETokenizer:
    """Byte-level BPE served by `tiktoken.Encoding`; token id == rank == creation order."""

    kind = "bpe"

    def __init__(self, token_bytes: list[bytes], pat_str: str = GPT2_PATTERN, name: str = "mmf-bpe"):
        if token_bytes[:256] != [bytes([b]) for b in range(256)]:
            raise ValueError("a byte-level BPE vocabulary must start with the 256 single bytes in order")
        if len(set(token_bytes)) != len(token_bytes):
            raise ValueError("BPE token byte strings must be unique")
        if len(token_bytes) > MAX_VOCAB:
            raise ValueError(f"vocab size {len(token_bytes)} exceeds {MAX_VOCAB} (uint16 token files)")
        self.token_bytes = list(token_bytes)
        self.pat_str = pat_str
        self.encoding = tiktoken.Encoding(
            name, pat_str=pat_str, mergeable_ranks={b: i for i, b in enumerate(token_bytes)},
            special_tokens={})

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        # invalid UTF-8 (possible in sampled ids, never in encoded text) becomes U+FFFD
        return self.encoding.decode([int(i) for i in ids], errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pat_str": self.pat_str,
                "tokens": [base64.b64encode(b).decode("ascii") for b in self.token_bytes]}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        return cls([base64.b64decode(t) for t in d["tokens"]], pat_str=d["pat_str"])

    def save(self, path: str) -> None:
        save_tokenizer(self, path)


def _pairs(word: tuple[int, ...]):
    return zip(word, word[1:])


def _merge_word(word: tuple[int, ...], a: int, b: int, new: int) -> tuple[int, ...]:
    """Replace every non-overlapping (a, b), left to right, by `new`."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(text: str, vocab_size: int, pat_str: str = GPT2_PATTERN,
              progress: bool = True) -> BPETokenizer:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes + merges) from `text`.

    Deterministic: ties in pair frequency go to the pair with the smaller token ids.
    Stops early (smaller vocabulary) if no pair occurs twice any more.
    """
    if not isinstance(vocab_size, int) or not 256 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be an int in (256, {MAX_VOCAB}], got {vocab_size!r} "
                         "(the project uses 512-4096)")
    if not text:
        raise ValueError("cannot train a tokenizer on empty text")

    # ---- words and their counts (pre-tokenization keeps merges inside words)
    chunk_counts = Counter(regex.findall(pat_str, text))
    words = [tuple(chunk.encode("utf-8")) for chunk in chunk_counts]     # list of token-id tuples
    freqs = list(chunk_counts.values())

    # ---- pair statistics: count (weighted by word frequency) and the words that contain each pair
    pair_count: Counter = Counter()
    pair_words: dict[tuple[int, int], set[int]] = {}
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in _pairs(word):
            pair_count[pair] += f
            pair_words.setdefault(pair, set()).add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]                # lazy max-heap
    heapq.heapify(heap)

    token_bytes = [bytes([b]) for b in range(256)]
    id_of = {b: i for i, b in enumerate(token_bytes)}
    bar = tqdm(total=vocab_size - 256, desc="BPE merges", disable=not progress)
    while len(token_bytes) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:                              # stale heap entry
            continue
        if -neg < 2:
            break                                                         # nothing left worth merging
        a, b = pair
        merged = token_bytes[a] + token_bytes[b]
        new = id_of.get(merged)
        if new is None:                                                   # a genuinely new token
            new = len(token_bytes)
            token_bytes.append(merged)
            id_of[merged] = new
            bar.update(1)
        # rewrite only the words that contain the pair, patching the pair counts they touch
        changed = set()
        for w in sorted(pair_words.pop(pair, ())):
            old = words[w]
            new_word = _merge_word(old, a, b, new)
            if new_word == old:
                continue                                                  # stale membership
            f = freqs[w]
            for p in _pairs(old):
                pair_count[p] -= f
                changed.add(p)
            for p in _pairs(new_word):
                pair_count[p] += f
                pair_words.setdefault(p, set()).add(w)
                changed.add(p)
            words[w] = new_word
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, p))
            elif c <= 0:
                pair_count.pop(p, None)
    bar.close()
    return BPETokenizer(token_bytes, pat_str=pat_str)


# ----------------------------------------------------------------------------------------------
# character level


class CharTokenizer:
    """One token per Unicode character seen in the training text (sorted, so deterministic)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        if len(chars) > MAX_VOCAB:
            raise ValueError(f"{len(chars)} characters exceed {MAX_VOCAB} (uint16 token files)")
        self.chars = list(chars)
        self._id = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this character-level vocabulary "
                             f"({self.vocab_size} chars); use a BPE tokenizer for open text") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        return cls(list(d["chars"]))

    def save(self, path: str) -> None:
        save_tokenizer(self, path)


# ----------------------------------------------------------------------------------------------
# building, saving and loading

_KINDS = {"bpe": BPETokenizer, "char": CharTokenizer}


def build_tokenizer(kind: str, text: str, vocab_size: int = 512, progress: bool = True):
    """`kind` is "bpe" (trained to vocab_size) or "char" (vocab_size is ignored)."""
    if kind == "bpe":
        return train_bpe(text, vocab_size, progress=progress)
    if kind == "char":
        return CharTokenizer.from_text(text)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {sorted(_KINDS)}")


def tokenizer_from_dict(d: dict):
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _KINDS:
        raise ValueError(f"not a tokenizer description (kind={kind!r}); expected one of {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(d)


def save_tokenizer(tok, path: str) -> None:
    """JSON file, written atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(tok.to_dict(), f)
    os.replace(tmp, path)


def load_tokenizer(path: str):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot load tokenizer from {path!r}: {e}") from None
    return tokenizer_from_dict(d)
