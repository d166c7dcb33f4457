"""Post-training compression (mmf/compression, python -m mmf.compress): each method's defining
property on a case that fails when the method is broken, the distillation's gradients and falling
loss, calibration Hessians, the compressed model through the normal paths, bad input refused."""
import dataclasses

import numpy as np
import pytest

import mmf
from mmf.compression import billm, calibration, common, distill, onebit, rtn
from mmf.compression.evaluation import validation_loss
from mmf.gradcheck import TOLERANCE, check_gradients
from mmf.layers.quant import weight_quant, weight_quant_binary

CFG = dict(vocab_size=40, hidden_size=16, num_layers=2, intermediate_size=32)


@pytest.fixture
def W():
    """A bell-shaped weight matrix with a few large ("salient") columns, like trained projections."""
    rng = np.random.default_rng(0)
    W = rng.laplace(0, 0.05, (48, 64))
    W[:, [3, 17, 40]] *= 6
    return W


@pytest.fixture
def calib():
    """Correlated inputs X (n, K) and their Hessian."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1500, 64)) @ (np.eye(64) + 0.4 * rng.standard_normal((64, 64)))
    return X, 2 * X.T @ X / len(X)


def err(A, B):
    return float(np.sum((A - B) ** 2))


# ---------------------------------------------------------------------------------------------- RTN

def test_rtn_per_tensor_is_e3_and_e3b_and_per_channel_is_closer(W):
    np.testing.assert_array_equal(rtn.rtn_ternary(W, "tensor").W_hat, weight_quant(W))
    np.testing.assert_array_equal(rtn.rtn_binary(W, "tensor").W_hat, weight_quant_binary(W))
    for quant in (rtn.rtn_ternary, rtn.rtn_binary):
        t, c = quant(W, "tensor"), quant(W, "channel")
        assert err(W, c.W_hat) < err(W, t.W_hat)
        assert len(np.unique(np.abs(c.W_hat[5]))) <= 2                  # one scale per row (and 0)
        assert c.bits - t.bits == (W.shape[0] - 1) * common.SCALE_BITS
    assert rtn.rtn_binary(W).bits_per_weight == pytest.approx(1 + 16 / W.size)
    assert rtn.rtn_ternary(W).bits_per_weight == pytest.approx(np.log2(3) + 16 / W.size)


# ---------------------------------------------------------------------------------------------- BiLLM

def test_binarize_is_two_values_per_row(W):
    hat, alpha, mu = billm.binarize(W, np.ones((1, W.shape[1]), bool))
    for r in range(W.shape[0]):
        assert set(np.round(hat[r], 12)) == set(np.round([mu[r, 0] - alpha[r, 0], mu[r, 0] + alpha[r, 0]], 12))


def test_residual_binarization_beats_plain(W):
    m = np.ones((1, W.shape[1]), bool)
    plain = err(W, billm.binarize(W, m)[0])
    assert err(W, billm.residual_binarize(W, m)[0]) < 0.8 * plain


def test_searched_split_beats_a_single_scale(W):
    m = np.ones((1, W.shape[1]), bool)
    single = err(W, billm.binarize(W, m)[0])
    assert err(W, billm.split_binarize(W, m)[0]) < 0.8 * single


def test_salient_columns_are_the_hessian_heavy_ones(W):
    cols = billm.salient_columns(W, np.ones(W.shape[1]), max_salient=8)
    assert {3, 17, 40} <= set(np.flatnonzero(cols))


def test_obc_compensation_lowers_the_output_error_at_the_same_bits(W, calib):
    X, H = calib
    with_obc = billm.billm_quantize(W, H, block_size=32, max_salient=8)
    without = billm.billm_quantize(W, H, block_size=32, max_salient=8, compensate=False)
    assert with_obc.bits == without.bits
    out = lambda c: err(X @ W.T, X @ c.W_hat.T)
    assert out(with_obc) < 0.95 * out(without)
    assert out(without) < out(rtn.rtn_binary(W, "channel"))              # and the grid beats plain RTN
    p = with_obc.parts                                                  # every kind of storage counted
    assert p["signs"] == W.size and p["column_mask"] == W.shape[1]
    assert p["residual_signs"] + p["group_bitmap"] == W.size


# ---------------------------------------------------------------------------------------------- OneBit

def test_svid_svd_error_is_the_tail_of_the_spectrum_and_nmf_reaches_it(W):
    A = np.abs(W)
    sigma = np.linalg.svd(A, compute_uv=False)
    S, a, b = onebit.svid(W, "svd")
    assert (a >= 0).all() and (b >= 0).all() and set(np.unique(S)) == {-1.0, 1.0}
    assert err(A, np.outer(a, b)) == pytest.approx(np.sum(sigma[1:] ** 2), rel=1e-9)
    _, a_n, b_n = onebit.svid(W, "nmf")
    assert err(A, np.outer(a_n, b_n)) == pytest.approx(np.sum(sigma[1:] ** 2), rel=1e-3)
    assert err(W, S * np.outer(a, b)) == pytest.approx(err(A, np.outer(a, b)))   # signs are exact
    c = onebit.onebit_weight(W)
    assert c.bits == W.size + (W.shape[0] + W.shape[1]) * 16


def _tiny_float(seed=0, dtype=np.float32, cfg=CFG):
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**cfg, weights="float"), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in model.params.values():                       # away from the symmetric init
        p += (0.1 * rng.standard_normal(p.shape)).astype(dtype)
    return model


def _student(teacher, output_norm=False):
    results = onebit.compress_onebit(teacher)
    svid = {n: (c.info["a"], c.info["b"], common.sign(teacher.params[n].astype(np.float64)))
            for n, c in results.items()}
    model = mmf.MMfreeLM(dataclasses.replace(teacher.config, projection_output_norm=output_norm),
                         dtype=teacher.dtype)
    for k, v in teacher.params.items():
        model.params[k] = v.copy()
    return distill.OneBitStudent(model, svid)


@pytest.mark.parametrize("output_norm", [False, True])
def test_distillation_gradients_match_finite_differences(output_norm):
    """The student's gradients (scales a, b and every shared parameter) against finite differences, with
    and without OneBit's output LayerNorm (there the scales reach the loss only through the norm)."""
    size = dict(hidden_size=8, intermediate_size=8) if output_norm else dict(hidden_size=4, intermediate_size=4)
    teacher = _tiny_float(0, np.float64, dict(vocab_size=7, num_layers=2, **size))
    student = _student(teacher, output_norm)
    ids = np.random.default_rng(2).integers(0, 7, (1, 3))
    for p in student.params.values():                     # student differs from teacher everywhere
        if p.ndim == 1:
            p += 0.05
    logits_t, _, c_t = teacher._forward(ids, None)
    hidden_t = teacher.hidden_states(c_t)

    def f():                                              # the loss alone: forward only
        student.materialize()
        logits_s, _, c_s = student.model._forward(ids, None)
        return distill.kd_loss(logits_s, logits_t, student.model.hidden_states(c_s), hidden_t)[0]
    _, parts, grads = student.loss_and_grads(teacher, ids)
    assert parts["kl"] > 0 and parts["mse"] > 0
    smooth = {k: v for k, v in student.params.items() if not k.endswith(".latent")}   # Sign: STE, not a gradient
    errors = check_gradients(f, smooth, grads)
    assert max(errors.values()) < TOLERANCE, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    # negative control: dropping the hidden-state term's gradient must be caught
    student.materialize()
    logits_s, _, c_s = student.model._forward(ids, None)
    _, _, dlogits, _ = distill.kd_loss(logits_s, logits_t, student.model.hidden_states(c_s),
                                       teacher.hidden_states(c_t))
    wrong = student.chain(student.model._backward(dlogits, c_s, None))
    assert max(check_gradients(f, {"model.embeddings.weight": smooth["model.embeddings.weight"]},
                               wrong).values()) > 1e-3


def test_output_norm_is_a_parameter_free_layernorm_and_a_wrong_backward_is_caught():
    from mmf.layers.output_norm import OUTPUT_NORM_EPS, output_norm_backward, output_norm_forward
    rng = np.random.default_rng(7)
    x = 3.0 + 2.0 * rng.standard_normal((2, 3, 6))
    y, cache = output_norm_forward(x)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + OUTPUT_NORM_EPS)   # nn.LayerNorm
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)                                      # no affine
    dout = rng.standard_normal(x.shape)
    t = {"x": x}
    f = lambda: float(np.sum(output_norm_forward(t["x"])[0] * dout))
    assert check_gradients(f, t, {"x": output_norm_backward(dout, cache)})["x"] < TOLERANCE
    y_, rstd = cache                                      # negative control: the mean's path forgotten
    wrong = rstd * (dout - y_ * np.mean(dout * y_, axis=-1, keepdims=True))
    assert check_gradients(f, t, {"x": wrong})["x"] > 1e-3


def test_output_norm_config_needs_a_float_model():
    with pytest.raises(ValueError, match="projection_output_norm=True needs weights='float'"):
        mmf.MMfreeConfig(**CFG, weights="ternary", projection_output_norm=True)
    with pytest.raises(TypeError, match="projection_output_norm must be a bool"):
        mmf.MMfreeConfig(**CFG, weights="float", projection_output_norm=1)
    from mmf.models.transformer_config import TransformerConfig
    with pytest.raises(ValueError, match="projection_output_norm=True needs weights='float'"):
        TransformerConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, weights="binary",
                          projection_output_norm=True)


def test_latent_gradient_is_the_ste_of_the_materialised_weight():
    teacher = _tiny_float(0, np.float64)
    student = _student(teacher)
    ids = np.arange(10).reshape(2, 5)
    _, _, grads = student.loss_and_grads(teacher, ids)
    name = "model.layers.0.attn.i_proj.weight"
    a, b, V = (student.params[name + s] for s in (".row_scale", ".col_scale", ".latent"))
    logits_t, _, c_t = teacher._forward(ids, None)
    logits_s, _, c_s = student.model._forward(ids, None)
    _, _, dl, dh = distill.kd_loss(logits_s, logits_t, student.model.hidden_states(c_s), teacher.hidden_states(c_t))
    dW = student.model._backward(dl, c_s, dh)[name]
    np.testing.assert_allclose(grads[name + ".latent"], dW * np.outer(a, b) * (1.001 - np.tanh(V) ** 2))


def test_distillation_loss_falls():
    teacher = _tiny_float(0)
    student = _student(teacher)
    tokens = np.random.default_rng(3).integers(0, CFG["vocab_size"], 4000)
    probe = tokens[:64].reshape(2, 32)
    before = student.loss_and_grads(teacher, probe)[0]
    hist = distill.distill(teacher, student, tokens,
                           distill.DistillConfig(steps=40, batch_size=4, block_size=32, lr=3e-3, seed=0))
    after = student.loss_and_grads(teacher, probe)[0]
    assert after < 0.7 * before and np.mean(hist["loss"][-5:]) < np.mean(hist["loss"][:5])
    signs = student.params["model.layers.0.mlp.gate_proj.weight.latent"]
    W_hat = student.model.params["model.layers.0.mlp.gate_proj.weight"]
    a, b = (student.params["model.layers.0.mlp.gate_proj.weight" + s] for s in (".row_scale", ".col_scale"))
    np.testing.assert_allclose(W_hat, common.sign(signs) * np.outer(a, b), rtol=1e-6)   # still 1 bit + scales


# ---------------------------------------------------------------------------------------------- calibration

def test_recorded_hessian_is_2xtx_over_n_of_the_layer_input():
    model = _tiny_float(0, np.float64)
    ids = np.random.default_rng(4).integers(0, CFG["vocab_size"], (3, 7))
    name = "model.layers.0.attn.i_proj.weight"
    rec = calibration.record(model, [ids[:2], ids[2:]], [name])
    P = model.params
    rms = lambda x, g: x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * g
    X = rms(rms(P["model.embeddings.weight"][ids], P["model.layers.0.attn_norm.weight"]),
            P["model.layers.0.attn.i_proj.norm.weight"]).reshape(-1, CFG["hidden_size"])
    np.testing.assert_allclose(rec.hessians()[name], 2 * X.T @ X / len(X), rtol=1e-10)
    assert type(model.backend) is mmf.backend.NumpyBackend                # the model's own backend is back


def test_calibration_refuses_tokens_of_another_vocabulary():
    with pytest.raises(ValueError, match="vocabulary has 40 tokens"):
        calibration.calibration_batches(np.arange(500) % 300, 40, 4, 16)


# ---------------------------------------------------------------------------------------------- whole models

def test_ptq_methods_refuse_a_quantized_model():
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, weights="ternary"))
    for method in (lambda m: rtn.compress_rtn(m), lambda m: onebit.compress_onebit(m),
                   lambda m: billm.compress_billm(m, [np.zeros((1, 4), np.int64)])):
        with pytest.raises(ValueError, match="weights='ternary'.*already quantized"):
            method(model)


def test_billm_compresses_exactly_the_block_projections_in_place():
    model = _tiny_float(0)
    original = _clone(model)
    tokens = np.random.default_rng(5).integers(0, CFG["vocab_size"], 3000)
    batches = calibration.calibration_batches(tokens, CFG["vocab_size"], 8, 32)
    b = billm.compress_billm(model, batches, block_size=16, max_salient=4)
    assert set(b) == set(common.compressible_weights(model)) and len(b) == 6 * CFG["num_layers"]
    for k, v in model.params.items():                 # embedding, LM head, norms untouched; the rest replaced
        assert np.array_equal(v, original.params[k]) == (k not in b), k
        if k in b:
            np.testing.assert_array_equal(v, b[k].W_hat)
    assert np.isfinite(validation_loss(model, tokens, 32, max_windows=4))


def _clone(model):
    out = mmf.MMfreeLM(model.config, dtype=model.dtype)
    for k, v in model.params.items():
        out.params[k] = v.copy()
    return out


def test_the_float_transformer_is_compressed_and_distilled_the_same_way():
    from mmf.models.transformer import TransformerLM
    from mmf.models.transformer_config import TransformerConfig
    cfg = TransformerConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                            weights="float")
    teacher = TransformerLM(cfg, seed=0)
    rng = np.random.default_rng(0)
    for p in teacher.params.values():                     # away from the init, so there is something to learn
        p += (0.1 * rng.standard_normal(p.shape)).astype(p.dtype)
    names = common.compressible_weights(teacher)
    assert len(names) == 7 * 2 and all("_proj" in n for n in names)
    tokens = np.random.default_rng(6).integers(0, 40, 2000)
    batches = calibration.calibration_batches(tokens, 40, 4, 16)
    rec = calibration.record(teacher, batches, names)
    assert all(c == 4 * 16 for c in rec.count.values())               # every projection's input recorded
    results = onebit.compress_onebit(teacher)
    model = TransformerLM(cfg, seed=0)
    for k, v in teacher.params.items():
        model.params[k] = v.copy()
    student = distill.OneBitStudent(model, {n: (c.info["a"], c.info["b"], common.sign(teacher.params[n]))
                                            for n, c in results.items()})
    probe = tokens[:32].reshape(2, 16)
    before = student.loss_and_grads(teacher, probe)[0]
    distill.distill(teacher, student, tokens, distill.DistillConfig(steps=15, batch_size=2, block_size=16, lr=3e-3))
    assert student.loss_and_grads(teacher, probe)[0] < 0.9 * before
    assert np.isfinite(validation_loss(model, tokens, 16, max_windows=2, activations="int8"))
