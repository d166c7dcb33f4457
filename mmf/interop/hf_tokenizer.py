"""tokenizer.json both ways, through the optional `tokenizers` library (imported only in here).

Reading (`load_hf_tokenizer`): the released MatMul-free models use the Mistral tokenizer, a
SentencePiece-style BPE with byte fallback (a character outside the vocabulary becomes its UTF-8 bytes
<0x..>), stored as tokenizer.json. Whether a BOS token is put in front of every prompt is the
tokenizer's own setting: `add_bos_token` in tokenizer_config.json when that file says so, else the
post-processor in tokenizer.json (a template starting with a special token). generation_config.json
is never consulted: it names the ids generation stops at, not how prompts are encoded.

Writing (`save_hf_tokenizer`): mmf's byte-level BPE (mmf.text.tokenizer, served by tiktoken) becomes
a tokenizer.json the `tokenizers` library serves identically:
  * the pre-tokenizer splits with the same regular expression, then maps bytes to printable characters
    (GPT-2's byte-level alphabet, so every token is a string);
  * tiktoken merges the adjacent pair whose concatenation has the lowest rank (= token id), and a
    piece that is itself a token is taken whole. As a merge list: for every token t, in id order,
    every split t = a + b with both halves tokens (any of them may be the one the data produced),
    and `ignore_merges` for the whole-piece rule.
mmf's tokenizers have no special tokens, so no BOS is added and config.json writes null ids.
A character-level tokenizer becomes a merge-free BPE over its characters.
"""
from __future__ import annotations

import json
import os

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def require_tokenizers():
    """The `tokenizers` module, or an ImportError that says what to install and why."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("tokenizer.json files need the optional package `tokenizers` "
                          "(pip install tokenizers): it reads the released models' tokenizer and writes "
                          "mmf's for the official GPU code") from None
    return tokenizers


# ----------------------------------------------------------------------------------------------
# reading


class HFTokenizer:
    """A tokenizer.json behind mmf's tokenizer interface: encode(str) -> list[int], decode(ids) -> str,
    vocab_size. `add_bos` / `bos_id` say whether encode puts BOS first, and `bos_rule` where that came
    from."""

    kind = "hf"

    def __init__(self, tokenizer, add_bos: bool, bos_id, bos_rule: str, path: str):
        self.tokenizer, self.add_bos, self.bos_id, self.bos_rule, self.path = tokenizer, add_bos, bos_id, bos_rule, path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if self.add_bos else ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def _token_content(value):
    """A special token as tokenizer_config.json writes it: a string or {"content": string, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_bos(post_processor):
    """(bos token string, id) when the post-processor's single-sequence template starts with a special
    token, else None. Looks inside a Sequence of processors too."""
    if not isinstance(post_processor, dict):
        return None
    if post_processor.get("type") == "Sequence":
        for p in post_processor.get("processors", []):
            found = _template_bos(p)
            if found:
                return found
        return None
    if post_processor.get("type") != "TemplateProcessing":
        return None
    single = post_processor.get("single") or []
    first = single[0] if single else None
    if not (isinstance(first, dict) and "SpecialToken" in first):
        return None
    name = first["SpecialToken"].get("id")
    ids = (post_processor.get("special_tokens", {}).get(name) or {}).get("ids") or []
    return (name, ids[0]) if ids else None


def load_hf_tokenizer(directory: str) -> HFTokenizer:
    """The tokenizer of a model directory (tokenizer.json, plus tokenizer_config.json if present)."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
        other = " (it has tokenizer.model: download tokenizer.json too)" \
            if os.path.isfile(os.path.join(directory, "tokenizer.model")) else ""
        raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE}{other}")
    tokenizers = require_tokenizers()
    try:
        with open(path) as f:
            raw = json.load(f)
        tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:                                          # the library's errors do not name the file
        raise ValueError(f"{path}: not a tokenizer the `tokenizers` library can load ({e})") from None

    config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    config = {}
    if os.path.isfile(config_path):
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    template = _template_bos(raw.get("post_processor"))
    if isinstance(config.get("add_bos_token"), bool):
        add_bos, rule = config["add_bos_token"], f"{TOKENIZER_CONFIG_FILE}: add_bos_token"
        name = _token_content(config.get("bos_token")) or (template[0] if template else None)
        bos_id = tok.token_to_id(name) if name is not None else None
        if add_bos and bos_id is None:
            raise ValueError(f"{config_path}: add_bos_token is true but its bos_token {name!r} is not a "
                             f"token of {path}")
    elif template is not None:
        add_bos, rule = True, f"{TOKENIZER_FILE}: post_processor template"
        bos_id = template[1]
    else:
        add_bos, rule, bos_id = False, "neither file asks for a BOS token", None
    return HFTokenizer(tok, add_bos, bos_id, rule, path)


# ----------------------------------------------------------------------------------------------
# writing mmf's tokenizers


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table: the printable Latin-1 bytes stand for themselves; the
    other 68 bytes (controls, space, ...) take the characters U+0100, U+0101, ... in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table, extra = [], 0
    for b in range(256):
        if b in printable:
            table.append(chr(b))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


def _bpe_tokenizer(tok, tokenizers):
    """mmf.text.tokenizer.BPETokenizer -> tokenizers.Tokenizer with the same ids (module docstring)."""
    alphabet = byte_level_alphabet()
    as_str = lambda b: "".join(alphabet[x] for x in b)             # noqa: E731
    vocab = {as_str(b): i for i, b in enumerate(tok.token_bytes)}
    id_of = {b: i for i, b in enumerate(tok.token_bytes)}
    merges = []
    for b in tok.token_bytes[256:]:                                 # in rank order = merge priority
        for k in range(1, len(b)):
            if b[:k] in id_of and b[k:] in id_of:
                merges.append((as_str(b[:k]), as_str(b[k:])))
    model = tokenizers.models.BPE(vocab=vocab, merges=merges, ignore_merges=True)
    t = tokenizers.Tokenizer(model)
    t.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(tok.pat_str), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = tokenizers.decoders.ByteLevel()
    return t


def _char_tokenizer(tok, tokenizers):
    """mmf.text.tokenizer.CharTokenizer -> a BPE without merges: every character its own token."""
    return tokenizers.Tokenizer(tokenizers.models.BPE(vocab={c: i for i, c in enumerate(tok.chars)}, merges=[]))


def save_hf_tokenizer(tok, directory: str) -> list[str]:
    """Write mmf tokenizer `tok` as tokenizer.json + tokenizer_config.json in `directory` (atomically);
    returns the file names. The exported tokenizer has no special tokens (and adds no BOS)."""
    tokenizers = require_tokenizers()
    kind = getattr(tok, "kind", None)
    if kind == "bpe":
        t = _bpe_tokenizer(tok, tokenizers)
    elif kind == "char":
        t = _char_tokenizer(tok, tokenizers)
    else:
        raise TypeError(f"can export mmf's 'bpe' and 'char' tokenizers, got {type(tok).__name__}")
    path = os.path.join(directory, TOKENIZER_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    t.save(tmp)
    os.replace(tmp, path)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
              "bos_token": None, "eos_token": None, "pad_token": None, "unk_token": None,
              "clean_up_tokenization_spaces": False}
    config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    with open(config_path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(config_path + ".tmp", config_path)
    return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
