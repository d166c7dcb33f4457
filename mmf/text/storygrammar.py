"""The embedded default corpus: a seeded probabilistic story grammar with a known entropy.

Why a grammar and not a downloaded text: the main job and the tests must run offline on a fresh
machine, and a corpus whose *exact* entropy we know lets us print the best achievable loss next to
the loss a model reaches ("you are 0.3 bits/byte above the floor", not just "the loss is 1.7").

The grammar is a probabilistic context-free grammar (PCFG) plus a few *story variables*:

    nonterminal  -> a list of weighted rules, each rule a sequence of items
    item         -> a terminal string ("went to "), a nonterminal name ("SENT"),
                    or a variable reference "@HERO.name"
    variable     -> drawn ONCE per story from a weighted list of records
                    ({"name": "Lily", "They": "She", ...}); every "@HERO.field" copies that field

So a model has two things to learn: the (memoryless) sentence structure, and *copying* the hero's
name, pronoun and pet from earlier in the story — the part a recurrent state has to carry.

Exact entropy (why it is exact). The grammar is unambiguous: a story's text determines its
derivation (tests/test_data_storygrammar.py parses samples back and counts derivations). Then
H(text) = H(derivation) = sum of the entropies of the choices made, and by linearity of expectation

    H(story) = sum_X E[#expansions of X] * H(rules of X) + sum_v H(records of v)      (bits)
    E[bytes] = sum_X E[#expansions of X] * sum_r p_r * bytes(r)                      (bytes)

where E[#expansions] solves the linear system c = e_start + M^T c (M[X,Y] = expected number of Y in
one expansion of X), and a variable reference contributes the expected byte length of its field.
Stories are drawn i.i.d., so the corpus's entropy rate is H(story) / E[bytes] bits per byte
(renewal-reward theorem): no model, whatever its context, can do better in expectation.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# the default grammar (all text ASCII, so bytes == characters)

# Variables: drawn once per story. Fields are referenced as "@VAR.field".
DEFAULT_VARIABLES: dict[str, list[tuple[float, dict[str, str]]]] = {
    "HERO": [
        (3.0, {"name": "Lily", "kind": "girl", "They": "She", "their": "her"}),
        (3.0, {"name": "Tom", "kind": "boy", "They": "He", "their": "his"}),
        (2.0, {"name": "Mia", "kind": "girl", "They": "She", "their": "her"}),
        (2.0, {"name": "Ben", "kind": "boy", "They": "He", "their": "his"}),
        (1.0, {"name": "Sara", "kind": "girl", "They": "She", "their": "her"}),
        (1.0, {"name": "Max", "kind": "boy", "They": "He", "their": "his"}),
    ],
    "PET": [
        (2.0, {"kind": "dog", "name": "Spot"}),
        (2.0, {"kind": "cat", "name": "Kitty"}),
        (1.0, {"kind": "bird", "name": "Pip"}),
        (1.0, {"kind": "frog", "name": "Hop"}),
    ],
    "PLACE": [
        (2.0, {"in": "in a small house", "to": "the park", "the": "the big tree"}),
        (1.0, {"in": "by the sea", "to": "the beach", "the": "the blue water"}),
        (1.0, {"in": "near a forest", "to": "the woods", "the": "the tall trees"}),
    ],
}

# Nonterminals: name -> [(weight, [items])]. "STORY" is the start symbol.
DEFAULT_RULES: dict[str, list[tuple[float, list[str]]]] = {
    "STORY": [
        (2.0, ["Once upon a time, there was a ", "AGE", " ", "@HERO.kind", " named ", "@HERO.name",
               ". ", "@HERO.They", " lived ", "@PLACE.in", " with ", "@HERO.their", " ",
               "@PET.kind", ", ", "@PET.name", ". ", "BODY"]),
        (1.0, ["One ", "DAY", ", ", "@HERO.name", " and ", "@HERO.their", " ", "@PET.kind", " ",
               "@PET.name", " went to ", "@PLACE.to", ". ", "BODY"]),
    ],
    "AGE": [(2.0, ["little"]), (1.0, ["young"]), (1.0, ["brave"]), (1.0, ["happy"])],
    "DAY": [(2.0, ["sunny day"]), (1.0, ["rainy day"]), (1.0, ["morning"])],
    # a geometric number of middle sentences (mean 2), then an ending
    "BODY": [(2.0, ["SENT", "BODY"]), (1.0, ["END"])],
    "SENT": [
        (3.0, ["@HERO.They", " saw ", "THING", " ", "WHERE", ". "]),
        (2.0, ["@PET.name", " ", "PETACT", ". "]),
        (2.0, ["Then ", "@HERO.name", " ", "ACT", ". "]),
        (1.0, ["@HERO.They", " said, \"", "SAY", "\" "]),
    ],
    "THING": [(2.0, ["a red ball"]), (1.0, ["a big box"]), (1.0, ["a shiny stone"]),
              (1.0, ["a little bug"])],
    "WHERE": [(2.0, ["under a tree"]), (1.0, ["on the grass"]), (1.0, ["near ", "@PLACE.the"])],
    "PETACT": [(2.0, ["ran fast"]), (1.0, ["jumped up and down"]), (1.0, ["sat down"]),
               (1.0, ["was very happy"])],
    "ACT": [(2.0, ["ran to ", "@PLACE.the"]), (1.0, ["played with ", "@PET.name"]),
            (1.0, ["looked at the sky"]), (1.0, ["found a ", "FOOD"])],
    "FOOD": [(1.0, ["cake"]), (1.0, ["cookie"]), (1.0, ["big apple"])],
    "SAY": [(2.0, ["Look, ", "@PET.name", "!"]), (1.0, ["I love ", "@PLACE.to", "!"]),
            (1.0, ["Let us play!"])],
    "END": [
        (2.0, ["At night, ", "@HERO.name", " and ", "@PET.name", " went home. They were ", "FEEL",
               ".\n"]),
        (1.0, ["In the end, ", "@HERO.name", " was ", "FEEL", " and never forgot ", "@PLACE.the",
               ".\n"]),
    ],
    "FEEL": [(2.0, ["happy"]), (1.0, ["tired"]), (1.0, ["glad"])],
}


# ----------------------------------------------------------------------------------------------
# the grammar object


def _is_var(item: str) -> bool:
    return item.startswith("@")


@dataclass
class StoryGrammar:
    """A PCFG with once-per-story variables. Weights are normalised per nonterminal/variable."""

    rules: dict[str, list[tuple[float, list[str]]]]
    variables: dict[str, list[tuple[float, dict[str, str]]]]
    start: str = "STORY"

    def __post_init__(self):
        if self.start not in self.rules:
            raise ValueError(f"start symbol {self.start!r} has no rules")
        for name, alts in list(self.rules.items()) + list(self.variables.items()):
            if not alts or any(w <= 0 for w, _ in alts):
                raise ValueError(f"{name!r} needs at least one alternative, all weights > 0")
        for name, alts in self.rules.items():
            for _, items in alts:
                for item in items:
                    if _is_var(item):
                        var, _, field = item[1:].partition(".")
                        records = self.variables.get(var)
                        if records is None or any(field not in rec for _, rec in records):
                            raise ValueError(f"rule of {name!r} references {item!r}, which is not "
                                             f"a field of every record of variable {var!r}")
        self._names = list(self.rules)                      # nonterminals, fixed order
        self._index = {n: k for k, n in enumerate(self._names)}
        self._probs = {n: np.array([w for w, _ in a], dtype=np.float64) / sum(w for w, _ in a)
                       for n, a in list(self.rules.items()) + list(self.variables.items())}

    def is_nonterminal(self, item: str) -> bool:
        return item in self.rules

    # ---- sampling ------------------------------------------------------------------------------

    def sample_story(self, rng: np.random.Generator) -> tuple[str, float]:
        """Draw one story. Returns (text, information content -log2 p(text) in bits)."""
        bits = 0.0
        values = {}
        for var, records in self.variables.items():          # drawn once per story
            k = rng.choice(len(records), p=self._probs[var])
            values[var] = records[k][1]
            bits -= math.log2(self._probs[var][k])
        out: list[str] = []
        stack = [self.start]                                 # explicit stack: BODY recursion is deep-ish
        while stack:
            item = stack.pop()
            if _is_var(item):
                var, _, field = item[1:].partition(".")
                out.append(values[var][field])
            elif item in self.rules:
                p = self._probs[item]
                k = rng.choice(len(p), p=p)
                bits -= math.log2(p[k])
                stack.extend(reversed(self.rules[item][k][1]))
            else:
                out.append(item)
        return "".join(out), bits

    def sample(self, n_stories: int, seed: int) -> tuple[list[str], list[float]]:
        """n_stories i.i.d. stories from a seeded generator: (texts, bits per story)."""
        rng = np.random.default_rng(seed)
        texts, bits = zip(*(self.sample_story(rng) for _ in range(n_stories)))
        return list(texts), list(bits)

    # ---- exact entropy -------------------------------------------------------------------------

    def expected_expansions(self) -> np.ndarray:
        """E[#times each nonterminal is expanded in one story], solving c = e_start + M^T c."""
        n = len(self._names)
        M = np.zeros((n, n))                                  # M[X, Y] = E[#Y in one expansion of X]
        for x, alts in self.rules.items():
            for p, (_, items) in zip(self._probs[x], alts):
                for item in items:
                    if item in self.rules:
                        M[self._index[x], self._index[item]] += p
        e = np.zeros(n)
        e[self._index[self.start]] = 1.0
        c = np.linalg.solve(np.eye(n) - M.T, e)
        if np.any(c < 0) or np.any(~np.isfinite(c)):
            raise ValueError("grammar is not consistent: stories would be infinitely long")
        return c

    def _field_bytes(self, var: str, field: str) -> float:
        return float(sum(p * len(rec[field].encode()) for p, (_, rec) in
                         zip(self._probs[var], self.variables[var])))

    def entropy_bits_per_story(self) -> float:
        """H(story) in bits, exact (see module docstring)."""
        c = self.expected_expansions()
        h = 0.0
        for x in self._names:
            p = self._probs[x]
            h += c[self._index[x]] * float(-(p * np.log2(p)).sum())
        for var in self.variables:
            p = self._probs[var]
            h += float(-(p * np.log2(p)).sum())
        return h

    def expected_bytes_per_story(self) -> float:
        """E[len(story) in UTF-8 bytes], exact."""
        c = self.expected_expansions()
        total = 0.0
        for x, alts in self.rules.items():
            for p, (_, items) in zip(self._probs[x], alts):
                nbytes = 0.0
                for item in items:
                    if _is_var(item):
                        var, _, field = item[1:].partition(".")
                        nbytes += self._field_bytes(var, field)
                    elif item not in self.rules:
                        nbytes += len(item.encode())
                total += c[self._index[x]] * p * nbytes
        return total

    def entropy_bits_per_byte(self) -> float:
        """The corpus's entropy rate: the lowest achievable expected loss, in bits per byte."""
        return self.entropy_bits_per_story() / self.expected_bytes_per_story()

    # ---- parsing (used by the tests to prove the text determines its derivation) ---------------

    def count_derivations(self, text: str) -> int:
        """Number of (variable values, derivation) pairs that produce exactly `text`.

        1 for every sampled story means the grammar is unambiguous on it, so -log2 p(derivation)
        is -log2 p(text) and the entropy formulas above are exact. Memoised top-down parse over
        byte positions; every combination of variable values is tried.
        """
        candidates = [[(var, rec) for _, rec in records] for var, records in self.variables.items()]
        total = 0
        for assignment in itertools.product(*candidates):
            total += _count_parses(self, text, dict(assignment))
        return total


def _count_parses(g: StoryGrammar, text: str, values: dict) -> int:
    """Count derivations of the whole text from g.start with fixed variable values."""
    memo: dict[tuple[str, int], dict[int, int]] = {}

    def seq(items: list[str], pos: int) -> dict[int, int]:
        # end position -> number of ways the item sequence spans text[pos:end]
        ends = {pos: 1}
        for item in items:
            nxt: dict[int, int] = {}
            for p0, n0 in ends.items():
                for p1, n1 in sym(item, p0).items():
                    nxt[p1] = nxt.get(p1, 0) + n0 * n1
            ends = nxt
            if not ends:
                break
        return ends

    def sym(item: str, pos: int) -> dict[int, int]:
        if _is_var(item):
            var, _, field = item[1:].partition(".")
            s = values[var][field]
            return {pos + len(s): 1} if text.startswith(s, pos) else {}
        if item not in g.rules:
            return {pos + len(item): 1} if text.startswith(item, pos) else {}
        key = (item, pos)
        if key not in memo:
            out: dict[int, int] = {}
            for _, items in g.rules[item]:
                for p1, n1 in seq(items, pos).items():
                    out[p1] = out.get(p1, 0) + n1
            memo[key] = out
        return memo[key]

    return sym(g.start, 0).get(len(text), 0)


def default_grammar() -> StoryGrammar:
    return StoryGrammar(DEFAULT_RULES, DEFAULT_VARIABLES)


# ----------------------------------------------------------------------------------------------
# the corpus


@dataclass
class StoryCorpus:
    """Generated text plus the exact numbers needed to report a loss floor."""

    text: str                        # stories concatenated (each ends with "\n")
    story_bits: list[float]          # -log2 p(story) for each story, in order
    story_ends: list[int]            # character offset just after each story
    entropy_bits_per_byte: float     # the grammar's exact entropy rate (expected floor)

    def empirical_bits_per_byte(self, start: int = 0, end: int | None = None) -> float:
        """-log2 p(text[start:end]) / bytes, over the whole stories inside that span.

        This is the true model's loss on exactly this text: the floor for *this* validation set.
        """
        end = len(self.text) if end is None else end
        bits, nbytes, prev = 0.0, 0, 0
        for b, e in zip(self.story_bits, self.story_ends):
            if prev >= start and e <= end:
                bits += b
                nbytes += len(self.text[prev:e].encode())
            prev = e
        if nbytes == 0:
            raise ValueError(f"no whole story inside [{start}, {end})")
        return bits / nbytes


def generate_story_corpus(n_bytes: int, seed: int = 1337,
                          grammar: StoryGrammar | None = None) -> StoryCorpus:
    """Stories from a seeded generator until the text has at least n_bytes bytes."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    grammar = grammar or default_grammar()
    rng = np.random.default_rng(seed)
    parts, bits, ends, total = [], [], [], 0
    while total < n_bytes:
        text, b = grammar.sample_story(rng)
        parts.append(text)
        bits.append(b)
        total += len(text.encode())
        ends.append((ends[-1] if ends else 0) + len(text))  # character offsets
    return StoryCorpus("".join(parts), bits, ends, grammar.entropy_bits_per_byte())
