"""Compute accounting (mmf/experiments/flops.py) and energy per token (energy.py) against hand counts."""
import pytest

import mmf
from mmf.experiments.energy import DRAM_PJ_PER_BYTE, energy_per_token, fpga_energy_per_token
from mmf.experiments.flops import inference_ops, matmul_params, training_compute

# a tiny config counted by hand: V=10, D=4, L=1, I=6
V, D, I = 10, 4, 6


def test_mmfree_training_flops_equal_a_hand_count():
    cfg = mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1, intermediate_size=I)
    # i, f, g, o: 4 x (4x4) = 64; GLU gate_proj (2I x D) = 48, down_proj (D x I) = 24; LM head 10x4 = 40
    assert matmul_params(cfg) == {"float": 0, "ternary": 64 + 48 + 24 + 40, "binary": 0}
    c = training_compute(cfg, tokens=100, context=8)
    assert c.n_matmul == 176
    assert c.flops == 6 * 176 * 100 and c.flops_attention == 0
    # ternary: per entry and token 1 int add (forward), 2 float adds and 1 float multiply (backward)
    assert (c.int_add, c.float_add, c.float_mul) == (176 * 100, 2 * 176 * 100, 176 * 100)
    f = training_compute(mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1, intermediate_size=I,
                                          weights="float"), 100, 8)
    assert f.flops == c.flops and (f.int_add, f.float_add, f.float_mul) == (0, 3 * 176 * 100, 3 * 176 * 100)


def test_transformer_training_flops_with_attention_equal_a_hand_count():
    cfg = mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=I)
    # q, k, v, o: 64; gate, up (I x D) 24 + 24, down (D x I) 24; LM head 40
    assert matmul_params(cfg)["float"] == 64 + 72 + 40
    T = 3
    # a 3-token sequence has 1 + 2 + 3 = 6 causal pairs; Q K^T and P V: 6 x D multiply-adds each = 48;
    # forward 96 FLOPs per sequence, training 3x = 288 per sequence = 96 per token
    c = training_compute(cfg, tokens=3, context=T)
    assert c.flops_attention == 288
    assert c.flops == 6 * 176 * 3 + 288
    assert c.float_mul == c.float_add == 3 * 176 * 3 + 144 and c.int_add == 0


def test_bitnet_keeps_a_float_lm_head_and_ternary_qk_moves_forward_qk_to_additions():
    b158 = mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=I,
                                 weights="ternary")
    assert matmul_params(b158) == {"float": 40, "ternary": 136, "binary": 0}
    qk = mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=I,
                               ternary_qk=True)
    c, plain = training_compute(qk, 3, 3), training_compute(
        mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=I), 3, 3)
    assert c.flops == plain.flops                       # the headline counts every operation alike
    assert c.int_add == 24 and c.float_mul == plain.float_mul - 24   # forward Q K^T: 6 pairs x D = 24


def test_rwkv4_training_and_inference_counts_equal_a_hand_count():
    cfg = mmf.RWKV4Config(vocab_size=V, hidden_size=D, num_layers=1, intermediate_size=16)
    # time mixing: key, value, receptance, output 4 x (4x4) = 64; channel mixing: key (16x4) = 64,
    # value (4x16) = 64, receptance (4x4) = 16; head 10x4 = 40, ternary like the rest; the embedding is a lookup
    assert matmul_params(cfg) == {"float": 0, "ternary": 64 + 144 + 40, "binary": 0}
    c = training_compute(cfg, tokens=10, context=8)
    assert c.flops == 6 * 248 * 10 and c.flops_attention == 0
    ops = inference_ops(cfg, context=5)
    assert ops.int_add == 248
    # two token-shift inputs and the WKV numerator, denominator and maximum, read and written, fp16
    assert ops.state_bytes == 2 * 5 * D * 2


def test_inference_ops_and_energy_equal_a_hand_count():
    cfg = mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1, intermediate_size=I)
    ops = inference_ops(cfg, context=5)
    assert (ops.int_add, ops.float_mul, ops.float_add) == (176, 0, 0)
    assert ops.weight_bytes == 176 * 2 / 8 + D * 2          # 2-bit codes + one fp16 embedding row
    assert ops.state_bytes == 2 * 1 * D * 2                 # h read and written, fp16
    e = energy_per_token(cfg, 5)
    assert e["arith_j_fp16"] == pytest.approx(176 * 0.03e-12)
    assert e["memory_j_low"] == pytest.approx((44 + 8 + 16) * DRAM_PJ_PER_BYTE[0] * 1e-12)
    t = mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, intermediate_size=I)
    to = inference_ops(t, context=5)
    # float products 176 + Q K^T and P V against 5 keys: 2 x 5 x D = 40 multiply-adds
    assert to.float_mul == to.float_add == 176 + 40 and to.int_add == 0
    assert to.state_bytes == 2 * 1 * D * 5 * 2              # K and V of 5 tokens, fp16
    et = energy_per_token(t, 5)
    assert et["arith_j_fp16"] == pytest.approx(216 * (0.4 + 1.1) * 1e-12)
    assert et["arith_j_fp32"] == pytest.approx(216 * (0.9 + 3.7) * 1e-12)


def test_fpga_energy_applies_to_ternary_mmfree_only():
    assert fpga_energy_per_token(mmf.TransformerConfig(vocab_size=V, hidden_size=D, num_layers=1, num_heads=2)) is None
    assert fpga_energy_per_token(mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1, weights="float")) is None
    j = fpga_energy_per_token(mmf.MMfreeConfig(vocab_size=64, hidden_size=64, num_layers=1))
    assert 0 < j < 1


def test_bad_input():
    cfg = mmf.MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=1)
    with pytest.raises(ValueError, match="context"):
        training_compute(cfg, 10, 0)
    with pytest.raises(ValueError, match="context"):
        inference_ops(cfg, 0)

    class Other:                                            # an architecture without an accounting rule
        arch = "rwkv9"
    with pytest.raises(ValueError, match="MATMUL_TABLES"):
        matmul_params(Other())
