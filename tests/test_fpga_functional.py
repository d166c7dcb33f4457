"""Functional equivalence: the program executed on the simulated accelerator gives the model's logits
(CPU integer path, E4 integer form; and MMfreeLM.forward, the float fake-quant path) and the same
greedy tokens, for random and trained small models. Tolerance: max |logit difference| <= 1e-5
(float32 rounding; measured ~1e-7). A corrupted DRAM image is the negative control."""
import numpy as np
import pytest

from mmf import MMfreeConfig, MMfreeLM
from mmf.training.adamw import AdamW
from mmf.layers.bitlinear import bitlinear_int_forward
from mmf.layers.quant import weight_quant_int

from fpga_model import Hardware
from fpga_model.accelerator import Accelerator
from fpga_model.cpu_reference import greedy_cpu, integer_model

ATOL = 1e-5
PROMPT = [1, 5, 9]


def random_model(seed, V=64, D=32, L=2):
    return MMfreeLM(MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=L), seed=seed)


@pytest.fixture(scope="module")
def trained_model():
    """A V=64, D=32, L=2 model trained for 60 AdamW steps to continue a fixed token pattern."""
    model = random_model(seed=3)
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 64, size=12)
    seq = np.tile(pattern, 6)                                          # a periodic sequence
    opt = AdamW(model.params, lr=1e-2)
    losses = []
    for step in range(60):
        starts = rng.integers(0, seq.size - 17, size=4)
        ids = np.stack([seq[s:s + 16] for s in starts])
        tgt = np.stack([seq[s + 1:s + 17] for s in starts])
        loss, grads = model.loss_and_grads(ids, tgt)
        opt.step(grads)
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]                                # it really learned something
    model.pattern = pattern
    return model


def test_one_bitlinear_equals_the_cpu_integer_form():
    # a 1-layer model's first projection, checked against mmf.layers.bitlinear.bitlinear_int_forward directly
    model = random_model(seed=5, L=1)
    acc = Accelerator.from_model(model)
    cfg = model.config
    from fpga_model.units import norm_value, quant_value, tmatmul_value
    x = np.random.default_rng(0).standard_normal(cfg.hidden_size).astype(np.float32)
    W = model.params["model.layers.0.attn.f_proj.weight"]
    g = model.params["model.layers.0.attn.f_proj.norm.weight"]
    Wt, beta = weight_quant_int(W)
    obj = acc.image.layers[0].objects["attn.f_proj.weight"]
    assert np.array_equal(obj.weights(), Wt) and np.float32(obj.beta) == np.float32(beta)
    q, s = quant_value(norm_value(x, 1e-6) * g)
    y = tmatmul_value(obj.weights(), q, s, obj.beta, np.dtype(np.float32))
    ref = bitlinear_int_forward(x[None], Wt, beta, g)[0]
    assert np.max(np.abs(y - ref)) <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_match_both_cpu_paths(seed):
    model = random_model(seed)
    ids = np.array([1, 5, 9, 3, 7, 7, 60, 0])
    fpga = Accelerator.from_model(model).logits(ids)                  # (T, V), token by token
    assert fpga.shape == (8, 64)
    assert np.max(np.abs(fpga - integer_model(model).forward(ids[None])[0])) <= ATOL
    assert np.max(np.abs(fpga - model.forward(ids[None])[0])) <= ATOL


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_32_greedy_tokens_equal_the_cpu_integer_path(seed):
    model = random_model(seed)
    ids, reports = Accelerator.from_model(model).generate(PROMPT, 32)
    assert ids == greedy_cpu(model, PROMPT, 32)
    assert len(ids) == 35 and len(reports) == 35 and all(r.cycles > 0 for r in reports)


def test_32_greedy_tokens_equal_mmf_forward_argmax_decoding():
    # seed 1: no exact logit ties on this path. (Seed 0 has one: two logits equal as integers times
    # the same scale; the float fake-quant path breaks the tie by rounding noise, the integer path
    # and the accelerator keep it; see cpu_reference.py.)
    model = random_model(seed=1)
    ids, _ = Accelerator.from_model(model).generate(PROMPT, 32)
    ref = model.generate(np.array([PROMPT]), 32, temperature=0)[0].tolist()
    assert ids == ref


def test_trained_model_same_tokens_and_logits(trained_model):
    prompt = [int(t) for t in trained_model.pattern[:4]]
    acc = Accelerator.from_model(trained_model)
    ids, _ = acc.generate(prompt, 32)
    assert ids == greedy_cpu(trained_model, prompt, 32)
    assert ids == trained_model.generate(np.array([prompt]), 32, temperature=0)[0].tolist()
    fpga = acc.logits(ids)
    assert np.max(np.abs(fpga - trained_model.forward(np.array([ids]))[0])) <= ATOL * max(1.0, np.abs(fpga).max())


def test_negative_control_corrupted_weight_is_detected():
    model = random_model(seed=1)
    acc = Accelerator.from_model(model)
    head = acc.image.shared.objects["lm_head.weight[0]"]
    head.data = head.data.copy()
    code = head.data[3, 0] & 0b11                                      # weight (3, 0)'s 2-bit code
    head.data[3, 0] = (head.data[3, 0] & ~np.uint8(0b11)) | (0b11 if code == 0b01 else 0b01)  # another valid weight
    ids = np.array([1, 5, 9])
    fpga = acc.logits(ids)
    assert np.max(np.abs(fpga - integer_model(model).forward(ids[None])[0])) > ATOL


def test_bad_inputs_are_refused():
    model = random_model(seed=1)
    acc = Accelerator.from_model(model)
    with pytest.raises(ValueError, match="token_id"):
        acc.step(64)
    with pytest.raises(ValueError, match="at least one token"):
        acc.generate([], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        acc.generate([1], -1)
    with pytest.raises(ValueError, match="epsilon"):
        Accelerator(MMfreeConfig(vocab_size=8, hidden_size=8, num_layers=1, rms_norm_eps=1e-5), None)
    with pytest.raises(ValueError, match="params lack"):
        Accelerator(model.config, {"model.norm.weight": np.ones(32, np.float32)})
    with pytest.raises(TypeError):
        Accelerator({"vocab_size": 8}, None)
    timing_only = Accelerator(model.config, None, Hardware())
    logits, report = timing_only.step()
    assert logits is None and report.cycles > 0
    with pytest.raises(ValueError, match="needs params"):
        timing_only.generate([1], 1)
