"""mmf.experiments.decode_cost: the carried state's bytes against context length (constant for MMfree,
2 L (n+1) D floats for the Transformer's KV cache after one more token), timings present, bad input."""
import numpy as np

from mmf.experiments import baselines, decode_cost


def test_state_bytes_by_hand_and_timings():
    size = dict(vocab_size=40, hidden_size=16, num_layers=2)
    rows = decode_cost.measure((3, 9), size, repeats=2, engine=False)
    by = {(r["model"], r["context"]): r for r in rows}
    D, L, f32 = 16, 2, 4
    for n in (3, 9):
        assert by[("MMfree, float, NumPy", n)]["state_bytes"] == L * D * f32                     # h per layer
        assert by[("Transformer++, float, NumPy, KV cache", n)]["state_bytes"] == 2 * L * (n + 1) * D * f32
    for r in rows:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert "| MMfree, float, NumPy | 9 |" in decode_cost.table(rows)


def test_prefill_in_chunks_equals_one_forward(monkeypatch):
    """The chunked prefill carries the state exactly: the last logits equal one full forward's."""
    monkeypatch.setattr(decode_cost, "PREFILL_CHUNK", 4)
    size = dict(vocab_size=40, hidden_size=16, num_layers=2)
    for dec in decode_cost.build_decoders(size, 32, engine=False):
        ids = np.random.default_rng(0).integers(0, 40, (1, 11))
        dec.prefill(ids[:, :10])
        logits, _ = dec.model.forward(ids[:, 10:], state=dec.state, return_state=True)
        full = dec.model.forward(ids)
        np.testing.assert_allclose(logits[0, -1], full[0, -1], rtol=1e-4, atol=1e-5)


def test_bad_input(capsys):
    assert decode_cost.main(["--contexts=0,8"]) == 2
    assert "contexts and repeats must be positive" in capsys.readouterr().err
    assert decode_cost.main(["--speed=fast"]) == 2
    assert "unknown argument '--speed=fast'" in capsys.readouterr().err


def test_study_variants_have_equal_non_embedding_parameters():
    """The comparison's premise: every variant within 5% of MMfree ternary (printed by --counts)."""
    counts = baselines.parameter_counts(list(baselines.VARIANTS))
    ref = counts["mmfree-ternary"][1]
    assert 1.5e6 < ref < 2.5e6
    for v, (_, ne) in counts.items():
        assert abs(ne - ref) / ref < 0.05, (v, ne, ref)
