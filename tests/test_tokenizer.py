"""Tokenizers: exact round trips on both corpora, determinism, the incremental BPE trainer against a
naive one, save/load, and clear errors."""
import os

import pytest
import regex

from mmf.text.storygrammar import generate_story_corpus
from mmf.text.tokenizer import (GPT2_PATTERN, BPETokenizer, CharTokenizer, build_tokenizer, load_tokenizer,
                           tokenizer_from_dict, train_bpe)

TS_PATH = os.environ.get("MMF_TINYSHAKESPEARE") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")
needs_ts = pytest.mark.skipif(not os.path.isfile(TS_PATH), reason="Tiny Shakespeare not on this machine")

STORIES = generate_story_corpus(30_000, seed=7).text
UNICODE = "Ünïcödé — naïve café, 東京 🙂\n\ttabs  and   spaces\r\n123 4567 it's we'll"


def naive_bpe(text: str, vocab_size: int) -> list[bytes]:
    """Reference trainer: recount every pair from scratch before each merge (slow, obviously right)."""
    from collections import Counter
    counts = Counter(regex.findall(GPT2_PATTERN, text))
    words = {tuple(w.encode()): c for w, c in counts.items()}
    vocab = [bytes([b]) for b in range(256)]
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))        # most frequent, then smallest ids
        if pairs[best] < 2:
            break
        merged = vocab[best[0]] + vocab[best[1]]
        new = vocab.index(merged) if merged in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(merged)
        nxt = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nxt[tuple(out)] = nxt.get(tuple(out), 0) + c
        words = nxt
    return vocab


def test_incremental_trainer_equals_naive_trainer():
    text = STORIES[:8000] + UNICODE * 3
    assert train_bpe(text, 400, progress=False).token_bytes == naive_bpe(text, 400)


def test_naive_comparison_can_fail_negative_control():
    # a different corpus (one frequent extra word) must give a different vocabulary
    text = STORIES[:8000]
    assert train_bpe(text, 300, progress=False).token_bytes != naive_bpe(text + " qxqx" * 300, 300)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_round_trip_on_stories(kind):
    tok = build_tokenizer(kind, STORIES, 512, progress=False)
    ids = tok.encode(STORIES)
    assert tok.decode(ids) == STORIES
    assert max(ids) < tok.vocab_size
    if kind == "bpe":
        assert len(ids) < len(STORIES) / 3                  # merges compress the repetitive stories


def test_bpe_round_trip_on_unseen_unicode_text():
    tok = train_bpe(STORIES, 600, progress=False)
    assert tok.decode(tok.encode(UNICODE)) == UNICODE       # byte fallback: any text encodes


def test_training_is_deterministic():
    a = train_bpe(STORIES, 700, progress=False)
    b = train_bpe(STORIES, 700, progress=False)
    assert a.token_bytes == b.token_bytes
    assert a.encode(STORIES[:2000]) == b.encode(STORIES[:2000])


@needs_ts
def test_round_trip_and_size_on_tiny_shakespeare():
    with open(TS_PATH, encoding="utf-8") as f:
        text = f.read()
    tok = train_bpe(text, 2048, progress=False)
    assert tok.vocab_size == 2048
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(text) / len(ids) > 2.5                        # ~2.9 chars per token at 2048
    char = CharTokenizer.from_text(text)
    assert char.vocab_size == 65 and char.decode(char.encode(text)) == text


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_save_load_round_trip(tmp_path, kind):
    tok = build_tokenizer(kind, STORIES, 520, progress=False)
    path = str(tmp_path / "tok.json")
    tok.save(path)
    back = load_tokenizer(path)
    assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
    assert back.encode(STORIES[:3000]) == tok.encode(STORIES[:3000])
    assert tokenizer_from_dict(tok.to_dict()).to_dict() == tok.to_dict()


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(STORIES, 256)
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(STORIES, 70_000)
    with pytest.raises(ValueError, match="empty"):
        train_bpe("", 512)
    with pytest.raises(ValueError, match="not in this character-level vocabulary"):
        CharTokenizer.from_text("abc").encode("abd")
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        build_tokenizer("word", STORIES)
    with pytest.raises(ValueError, match="256 single bytes"):
        BPETokenizer([b"a", b"b"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(str(bad))
    bad.write_text('{"kind": "sentencepiece"}')
    with pytest.raises(ValueError, match="kind"):
        load_tokenizer(str(bad))
