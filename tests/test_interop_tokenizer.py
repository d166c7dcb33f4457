"""tokenizer.json both ways: mmf's BPE exported so that the `tokenizers` library encodes text to the same
ids; a released-style (Llama/Mistral SentencePiece BPE with byte fallback) tokenizer read with BOS
decided by tokenizer_config.json or the post-processor, never generation_config.json."""
import json
import sys

import pytest

from mmf.interop.hf_tokenizer import byte_level_alphabet, load_hf_tokenizer, save_hf_tokenizer
from mmf.text.storygrammar import generate_story_corpus
from mmf.text.tokenizer import CharTokenizer, train_bpe

import tokenizers   # a dev requirement (requirements-dev.txt); optional for users of mmf

TEST_TEXT = ("The cat's tail -- isn't it 42 metres?\n\n  Twice\tindented;  ROMEO: 'Tis café, naïve 🙂!\r\n"
             "numbers 1234567 and    spaces   \n")


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(generate_story_corpus(20_000, seed=3).text + " ROMEO: 'Tis but a scratch, 123.", 400, progress=False)


def test_byte_level_alphabet_is_gpt2s():
    table = byte_level_alphabet()
    assert len(set(table)) == 256 and table[ord("A")] == "A" and table[ord(" ")] == "\u0120"   # 'Ġ'
    assert table[0] == "\u0100" and table[ord("\n")] == "\u010a" and table[0xAD] == "\u0143"


def test_exported_bpe_encodes_to_mmf_ids(bpe, tmp_path):
    save_hf_tokenizer(bpe, str(tmp_path))
    lib = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))     # the library alone
    assert lib.get_vocab_size() == bpe.vocab_size
    for text in (TEST_TEXT, generate_story_corpus(3000, seed=11).text, "", "a", "  \n\n\n"):
        want = bpe.encode(text)
        assert lib.encode(text).ids == want
        assert lib.decode(want) == text
    assert len(bpe.encode(TEST_TEXT)) < len(TEST_TEXT.encode())            # merges happened
    hf = load_hf_tokenizer(str(tmp_path))                                   # and through mmf's reader
    assert hf.add_bos is False and hf.encode(TEST_TEXT) == bpe.encode(TEST_TEXT)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is False and config["bos_token"] is None


def test_whole_token_pieces_win_as_in_tiktoken(tmp_path):
    # vocab where merging by rank from bytes would stop at "a" "bc" "d", but "abcd" is a token: tiktoken
    # (and so mmf) takes a piece that is itself a token whole
    from mmf.text.tokenizer import BPETokenizer
    tok = BPETokenizer([bytes([b]) for b in range(256)] + [b"bc", b"ab", b"cd", b"abcd"])
    assert tok.encode("abcd") == [259]
    save_hf_tokenizer(tok, str(tmp_path))
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("abcd").ids == [259]


def test_exported_char_tokenizer(tmp_path):
    tok = CharTokenizer.from_text("hello world\n!")
    save_hf_tokenizer(tok, str(tmp_path))
    lib = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert lib.encode("low hello!\n").ids == tok.encode("low hello!\n")


# ----------------------------------------------------------------------------------------------
# a released-style tokenizer


def llama_style(directory, template=True, tokenizer_config=None, generation_config=None):
    """A small SentencePiece-style BPE with byte fallback, built the way the Mistral tokenizer.json is:
    '▁' for spaces, <0xNN> byte tokens, <s> (id 1) in the post-processor template."""
    from tokenizers import decoders, models, normalizers, processors
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in ["▁", "t", "h", "e", "c", "a", "▁t", "he", "▁the", "at", "▁c", "▁cat"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("a", "t"), ("▁", "c"), ("▁c", "at")]
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    if template:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(directory / "tokenizer.json"))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if generation_config is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation_config))
    return vocab


def test_released_style_tokenizer_with_byte_fallback(tmp_path):
    vocab = llama_style(tmp_path)
    tok = load_hf_tokenizer(str(tmp_path))
    ids = tok.encode("the cat é")
    assert ids[:3] == [1, vocab["▁the"], vocab["▁cat"]]                    # BOS from the template
    assert ids[3:] == [vocab["▁"], 3 + 0xC3, 3 + 0xA9]                     # é as its two UTF-8 bytes
    assert tok.decode(ids) == "the cat é"
    assert tok.bos_rule.startswith("tokenizer.json")


@pytest.mark.parametrize("template, config, want_bos", [
    (True, {"add_bos_token": False, "bos_token": "<s>"}, False),    # tokenizer_config.json wins
    (False, {"add_bos_token": True, "bos_token": {"content": "<s>", "lstrip": False}}, True),
    (True, None, True),                                             # no config: the template decides
    (False, None, False),
    (False, {"bos_token": "<s>"}, False),                           # no add_bos_token: the template
])
def test_bos_comes_from_the_tokenizer_never_generation_config(tmp_path, template, config, want_bos):
    llama_style(tmp_path, template=template, tokenizer_config=config,
                generation_config={"bos_token_id": 1, "add_bos_token": not want_bos})
    tok = load_hf_tokenizer(str(tmp_path))
    assert (tok.encode("the")[0] == 1) is want_bos and tok.add_bos is want_bos


def test_add_bos_with_an_unknown_bos_token_is_refused(tmp_path):
    llama_style(tmp_path, tokenizer_config={"add_bos_token": True, "bos_token": "<bos>"})
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: add_bos_token is true but its bos_token '<bos>'"):
        load_hf_tokenizer(str(tmp_path))


def test_clear_messages_for_missing_files_and_missing_library(tmp_path, monkeypatch):
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json .*download tokenizer.json"):
        load_hf_tokenizer(str(tmp_path))
    llama_style(tmp_path)
    monkeypatch.setitem(sys.modules, "tokenizers", None)                   # as if not installed
    with pytest.raises(ImportError, match="optional package `tokenizers` .*pip install tokenizers"):
        load_hf_tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="tokenizer.json: not a tokenizer"):
        load_hf_tokenizer(str(tmp_path))


def test_transformers_autotokenizer_loads_the_export(bpe, tmp_path):
    # what the README tells a GPU user to run after `python -m mmf.export`
    from transformers import AutoTokenizer
    save_hf_tokenizer(bpe, str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok(TEST_TEXT)["input_ids"] == bpe.encode(TEST_TEXT)     # no BOS added
    assert tok.decode(bpe.encode(TEST_TEXT)) == TEST_TEXT
