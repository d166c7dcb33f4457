"""Recurrent generation: greedy decoding with carried state equals argmax over full-sequence forward;
sampling options behave as specified; seeds reproduce; bad options are refused."""
import numpy as np
import pytest

from mmf import MMfreeConfig, MMfreeLM
from mmf.models.generate import generate, next_token_probs, sample_next


@pytest.fixture(scope="module")
def model():
    return MMfreeLM(MMfreeConfig(vocab_size=37, hidden_size=32, num_layers=2), seed=3)


def argmax_by_full_forward(model, ids, n):
    """The slow definition: re-run the whole sequence for every new token."""
    seq = ids.copy()
    for _ in range(n):
        nxt = model.forward(seq)[:, -1].argmax(axis=-1)                 # (B,)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq


def test_greedy_equals_full_forward_argmax_float_model():
    float_model = MMfreeLM(MMfreeConfig(vocab_size=37, hidden_size=32, num_layers=2), seed=3, quantize=False)
    prompt = np.array([[1, 5, 9, 2], [7, 7, 3, 30]])
    fast = generate(float_model, prompt, 25, temperature=0)
    assert fast.shape == (2, 29) and np.array_equal(fast[:, :4], prompt)
    assert np.array_equal(fast, argmax_by_full_forward(float_model, prompt, 25))
    assert len(set(fast[0, 4:].tolist())) > 1                           # not a degenerate constant


def test_greedy_is_full_forward_argmax_up_to_exact_ties_ternary_model(model):
    # Ternary weights and 8-bit activations make exactly tied logits common (integer sums times one
    # scale); float rounding then may pick either. So: every greedy token must be a maximiser of the
    # full-sequence logits at its position, and the two decodings agree until the first exact tie.
    prompt = np.array([[1, 5, 9, 2], [7, 7, 3, 30]])
    fast = generate(model, prompt, 25, temperature=0)
    full = model.forward(fast[:, :-1])                                  # (2, 28, V) teacher-forced
    chosen = np.take_along_axis(full[:, 3:], fast[:, 4:, None], axis=-1)[..., 0]   # (2, 25)
    assert np.all(full[:, 3:].max(axis=-1) - chosen <= 1e-4)
    slow = argmax_by_full_forward(model, prompt, 25)
    top2 = np.sort(full[:, 3:], axis=-1)[..., -2:]
    for b in range(2):
        ties = np.nonzero(top2[b, :, 1] - top2[b, :, 0] <= 1e-4)[0]
        upto = 4 + (ties[0] if len(ties) else 25)                       # tokens before the first tie
        assert upto > 8 and np.array_equal(fast[b, :upto], slow[b, :upto])
    # negative control: a token that is not a maximiser fails the check
    assert full[0, 9].max() - full[0, 9, full[0, 9].argmin()] > 1e-4


def test_carried_state_equals_full_forward_logits(model):
    ids = np.random.default_rng(0).integers(0, 37, (2, 12))
    full = model.forward(ids)                                           # (2, 12, 37)
    logits, state = model.forward(ids[:, :7], return_state=True)
    steps = [logits]
    for t in range(7, 12):
        logits, state = model.forward(ids[:, t:t + 1], state=state, return_state=True)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-4)


def test_model_generate_delegates(model):
    prompt = np.array([4, 8, 15])
    out = model.generate(prompt, 10, temperature=0.9, top_k=5, seed=1)
    assert out.shape == (13,)
    assert np.array_equal(out, generate(model, prompt, 10, temperature=0.9, top_k=5, seed=1))


def test_sampling_is_seeded(model):
    prompt = np.array([[1, 2, 3]])
    a = generate(model, prompt, 30, temperature=1.5, seed=7)
    b = generate(model, prompt, 30, temperature=1.5, seed=7)
    c = generate(model, prompt, 30, temperature=1.5, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    prompt = np.array([[3, 1, 4, 1, 5]])
    greedy = generate(model, prompt, 15, temperature=0)
    assert np.array_equal(generate(model, prompt, 15, temperature=2.0, top_k=1, seed=0), greedy)
    assert np.array_equal(generate(model, prompt, 15, temperature=2.0, top_p=1e-9, seed=0), greedy)


def test_next_token_probs_cuts():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    p = next_token_probs(logits, 1.0)
    np.testing.assert_allclose(p, [[0.5, 0.2, 0.15, 0.1, 0.05]])
    p = next_token_probs(logits, 1.0, top_k=2)
    np.testing.assert_allclose(p, [[5 / 7, 2 / 7, 0, 0, 0]])
    # top-p: the smallest most-likely set whose mass reaches p (0.5+0.2 = 0.7 >= 0.65)
    p = next_token_probs(logits, 1.0, top_p=0.65)
    np.testing.assert_allclose(p, [[5 / 7, 2 / 7, 0, 0, 0]])
    p = next_token_probs(logits, 1.0, top_p=0.71)
    np.testing.assert_allclose(p, [[0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0]])
    hot = next_token_probs(logits, 100.0)                                # high temperature -> flatter
    assert hot.max() - hot.min() < 0.01


def test_sample_frequencies_match_probabilities():
    logits = np.tile(np.log(np.array([0.6, 0.3, 0.1])), (20000, 1))    # 20000 independent rows
    draws = sample_next(logits, 1.0, None, None, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.015)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=0.0), "top_p"),
])
def test_bad_options_are_refused(model, kwargs, match):
    args = dict(max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(model, np.array([[1, 2]]), **args)


def test_empty_prompt_is_refused(model):
    with pytest.raises(ValueError, match="T >= 1"):
        generate(model, np.zeros((1, 0), dtype=np.int64), 3)
