"""The embedded story grammar: exact entropy (checked against brute force and closed forms),
unambiguity (a story's text determines its derivation), determinism."""
import math

import numpy as np
import pytest

from mmf.text.storygrammar import StoryGrammar, default_grammar, generate_story_corpus

# ----------------------------------------------------------------------------------------------
# an independent brute-force enumerator for finite grammars


def enumerate_texts(g: StoryGrammar) -> dict[str, float]:
    """{text: probability}, summing over every variable assignment and derivation (finite grammars only)."""
    import itertools

    def expand(items, values):                       # -> list of (text, prob)
        out = [("", 1.0)]
        for item in items:
            if item.startswith("@"):
                var, field = item[1:].split(".")
                alts = [(values[var][field], 1.0)]
            elif item in g.rules:
                total = sum(w for w, _ in g.rules[item])
                alts = [(t, w / total * p) for w, r in g.rules[item] for t, p in expand(r, values)]
            else:
                alts = [(item, 1.0)]
            out = [(a + b, p * q) for a, p in out for b, q in alts]
        return out

    texts: dict[str, float] = {}
    var_alts = [[(var, rec, w / sum(x for x, _ in recs)) for w, rec in recs] for var, recs in g.variables.items()]
    for combo in itertools.product(*var_alts):
        values = {var: rec for var, rec, _ in combo}
        pv = math.prod(p for _, _, p in combo)
        for text, p in expand([g.start], values):
            texts[text] = texts.get(text, 0.0) + pv * p
    return texts


SMALL_RULES = {
    "S": [(1.0, ["@X.name", " has a ", "ADJ", " ", "@X.pet", ". ", "END"]),
          (3.0, ["The ", "ADJ", " ", "@X.pet", " likes ", "@X.name", ".", "END"])],
    "ADJ": [(1.0, ["red"]), (2.0, ["big"]), (1.0, ["tiny"])],
    "END": [(1.0, ["\n"]), (1.0, [" Yes!\n"])],
}
SMALL_VARS = {"X": [(1.0, {"name": "Al", "pet": "cat"}), (2.0, {"name": "Bo", "pet": "dog"})]}


def test_entropy_and_length_equal_brute_force_on_a_finite_grammar():
    g = StoryGrammar(SMALL_RULES, SMALL_VARS, start="S")
    texts = enumerate_texts(g)
    assert math.isclose(sum(texts.values()), 1.0)
    h = -sum(p * math.log2(p) for p in texts.values())
    mean_len = sum(p * len(t.encode()) for t, p in texts.items())
    assert math.isclose(g.entropy_bits_per_story(), h, rel_tol=1e-12)
    assert math.isclose(g.expected_bytes_per_story(), mean_len, rel_tol=1e-12)
    assert all(g.count_derivations(t) == 1 for t in texts)


def test_ambiguous_grammar_is_detected_negative_control():
    # two derivations of "big dog": the derivation entropy then overstates the text entropy
    rules = {"S": [(1.0, ["big ", "N"]), (1.0, ["B", "dog"])], "N": [(1.0, ["dog"]), (1.0, ["cat"])],
             "B": [(1.0, ["big "])]}
    g = StoryGrammar(rules, {}, start="S")
    texts = enumerate_texts(g)
    h_text = -sum(p * math.log2(p) for p in texts.values())
    assert g.count_derivations("big dog") == 2
    assert g.entropy_bits_per_story() > h_text + 0.1


def test_recursive_grammar_matches_closed_form():
    # A -> "a" A (p) | "b" (1-p): H = h2(p) / (1-p) bits, E[len] = 1 / (1-p) bytes
    p = 0.7
    g = StoryGrammar({"A": [(p, ["a", "A"]), (1 - p, ["b"])]}, {}, start="A")
    h2 = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert math.isclose(g.entropy_bits_per_story(), h2 / (1 - p), rel_tol=1e-12)
    assert math.isclose(g.expected_bytes_per_story(), 1 / (1 - p), rel_tol=1e-12)


def test_default_grammar_is_unambiguous_on_samples():
    g = default_grammar()
    texts, _ = g.sample(40, seed=5)
    assert [g.count_derivations(t) for t in texts] == [1] * 40


def test_sample_information_content_matches_expected_entropy():
    g = default_grammar()
    texts, bits = g.sample(3000, seed=11)
    bits, lens = np.array(bits), np.array([len(t.encode()) for t in texts])
    se_bits, se_len = bits.std() / math.sqrt(len(bits)), lens.std() / math.sqrt(len(lens))
    assert abs(bits.mean() - g.entropy_bits_per_story()) < 4 * se_bits
    assert abs(lens.mean() - g.expected_bytes_per_story()) < 4 * se_len


def test_sampled_bits_are_minus_log2_of_the_text_probability():
    g = StoryGrammar(SMALL_RULES, SMALL_VARS, start="S")
    texts = enumerate_texts(g)
    for text, b in zip(*g.sample(30, seed=2)):
        assert math.isclose(b, -math.log2(texts[text]), rel_tol=1e-12)


def test_corpus_is_deterministic_and_reports_its_floor():
    a = generate_story_corpus(20_000, seed=3)
    b = generate_story_corpus(20_000, seed=3)
    c = generate_story_corpus(20_000, seed=4)
    assert a.text == b.text and a.text != c.text
    assert len(a.text) >= 20_000 and a.text.endswith("\n")
    assert a.story_ends[-1] == len(a.text)
    assert 0.0 < a.entropy_bits_per_byte < 1.0
    # the empirical floor of a span is the bits of its stories over their bytes
    assert math.isclose(a.empirical_bits_per_byte(), sum(a.story_bits) / len(a.text.encode()))


def test_bad_grammars_are_refused():
    with pytest.raises(ValueError, match="@X.nope"):
        StoryGrammar({"S": [(1.0, ["@X.nope"])]}, SMALL_VARS, start="S")
    with pytest.raises(ValueError, match="start symbol"):
        StoryGrammar({"S": [(1.0, ["a"])]}, {}, start="T")
    with pytest.raises(ValueError, match="infinitely long"):
        StoryGrammar({"S": [(1.0, ["S", "S"])]}, {}, start="S").entropy_bits_per_story()
    with pytest.raises(ValueError, match="positive"):
        generate_story_corpus(0)
