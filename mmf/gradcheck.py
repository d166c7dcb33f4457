"""Finite-difference gradient checks (docs/equations.md, "Numerics"): float64, quantization off, centred differences,
relative error, every input and every parameter tensor of every layer (the MatMul-free model's and the
Transformer++ baseline's, docs/attention.md).

    rel_error(a, b) = ||a - b|| / (||a|| + ||b||)      (a norm-wise relative error: one number per
                                                         tensor, robust to entries that are ~0)

Each layer is checked through a scalar L = sum(out * dout) with a random upstream dout, so the
analytic gradient is the layer's backward applied to dout. `python -m mmf.gradcheck` prints the
report of every layer and exits non-zero if any tensor fails.
"""
import sys

import numpy as np

TOLERANCE = 1e-6


def rel_error(a, b):
    num = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if den == 0 else float(num / den)


def numerical_gradient(f, x, h=1e-5):
    """Centred differences of the scalar f() w.r.t. every entry of x (changed in place, then restored)."""
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64 inputs, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        f_plus = f()
        flat[k] = old - h
        f_minus = f()
        flat[k] = old
        gflat[k] = (f_plus - f_minus) / (2 * h)
    return grad


def check_gradients(f, tensors, analytic, h=1e-5):
    """Compare analytic gradients with finite differences for every named tensor.

    f: scalar function of the current values of `tensors` (a dict of float64 arrays it reads);
    analytic: dict with the same names. Returns {name: relative error}."""
    missing = set(tensors) - set(analytic)
    if missing:
        raise ValueError(f"no analytic gradient for {sorted(missing)}")
    return {name: rel_error(analytic[name], numerical_gradient(f, x, h)) for name, x in tensors.items()}


# ----------------------------------------------------------------------------
# The layers, each set up small with a fixed seed (quantization off, float64)

def _layer_cases(rng):
    from mmf.layers import bitlinear, glu, loss, mlgru, recurrence, rmsnorm
    from mmf.models import block
    from mmf.backend import NumpyBackend

    B, T, D, I = 2, 3, 5, 4
    ops = NumpyBackend(weights="float", fused=True)
    r = lambda *s: rng.standard_normal(s)

    def case_rmsnorm():
        t = {"x": r(B, T, D), "g": 1 + 0.1 * r(D)}
        dout = r(B, T, D)
        f = lambda: float(np.sum(rmsnorm.rmsnorm_forward(t["x"], t["g"], 1e-6)[0] * dout))
        _, c = rmsnorm.rmsnorm_forward(t["x"], t["g"], 1e-6)
        dx, dg = rmsnorm.rmsnorm_backward(dout, c)
        return f, t, {"x": dx, "g": dg}

    def case_output_norm():                  # OneBit's parameter-free LayerNorm on a projection's output
        from mmf.layers import output_norm
        t = {"x": r(B, T, I)}
        dout = r(B, T, I)
        f = lambda: float(np.sum(output_norm.output_norm_forward(t["x"])[0] * dout))
        dx = output_norm.output_norm_backward(dout, output_norm.output_norm_forward(t["x"])[1])
        return f, t, {"x": dx}

    def case_bitlinear(fused):
        def make():
            t = {"x": r(B, T, D), "W": 0.3 * r(I, D), "g": 1 + 0.1 * r(D)}
            dout = r(B, T, I)
            fwd = lambda: bitlinear.bitlinear_forward(t["x"], t["W"], t["g"], weights="float", fused=fused)
            f = lambda: float(np.sum(fwd()[0] * dout))
            dx, dW, dg = bitlinear.bitlinear_backward(dout, fwd()[1])
            return f, t, {"x": dx, "W": dW, "g": dg}
        return make

    def case_scan():
        t = {"f": rng.uniform(0.1, 0.9, (B, T, D)), "i": r(B, T, D), "h0": r(B, D)}
        dout = r(B, T, D)
        f = lambda: float(np.sum(recurrence.scan_forward(t["f"], t["i"], t["h0"]) * dout))
        h = recurrence.scan_forward(t["f"], t["i"], t["h0"])
        df, di, dh0 = recurrence.scan_backward(dout, t["f"], h, t["h0"])
        return f, t, {"f": df, "i": di, "h0": dh0}

    def mlgru_params():
        p = {}
        for proj in mlgru.PROJECTIONS:
            p[proj + ".weight"] = 0.4 * r(D, D)
            p[proj + ".norm.weight"] = 1 + 0.1 * r(D)
        p["g_norm.weight"] = 1 + 0.1 * r(D)
        return p

    def case_mlgru(with_lb, gate="official", fused=True):
        gate_ops = ops if fused else NumpyBackend(quantize=False, fused=False)

        def make():
            t = {"xn": r(B, T, D), "h0": r(B, D), **mlgru_params()}
            if with_lb:
                t["lb"] = rng.uniform(0.1, 0.6, D)
            dout, dh_last = r(B, T, D), r(B, D)
            p = lambda: {k: v for k, v in t.items() if k not in ("xn", "h0", "lb")}
            fwd = lambda: mlgru.mlgru_scan_forward(t["xn"], p(), t.get("lb"), t["h0"], 1e-6, gate_ops, gate)
            # the loss also reads the final state, so the carried-state gradient path is checked too
            f = lambda: float(np.sum(fwd()[0] * dout) + np.sum(fwd()[1][:, -1] * dh_last))
            dxn, dp, dlb, dh0 = mlgru.mlgru_scan_backward(dout, fwd()[2], dh_last=dh_last, ops=gate_ops)
            an = {"xn": dxn, "h0": dh0, **dp}
            if with_lb:
                an["lb"] = dlb
            return f, t, an
        return make

    def case_lower_bounds():
        t = {"P": r(3, D)}
        dout = r(3, D)
        f = lambda: float(np.sum(mlgru.lower_bounds_forward(t["P"])[0] * dout))
        return f, t, {"P": mlgru.lower_bounds_backward(dout, mlgru.lower_bounds_forward(t["P"])[1])}

    def case_glu():
        t = {"xn": r(B, T, D), "gate_proj.weight": 0.4 * r(2 * I, D), "gate_proj.norm.weight": 1 + 0.1 * r(D),
             "down_proj.weight": 0.4 * r(D, I), "down_proj.norm.weight": 1 + 0.1 * r(I)}
        dout = r(B, T, D)
        p = lambda: {k: v for k, v in t.items() if k != "xn"}
        f = lambda: float(np.sum(glu.glu_forward(t["xn"], p(), ops)[0] * dout))
        dxn, dp = glu.glu_backward(dout, glu.glu_forward(t["xn"], p(), ops)[1], ops)
        return f, t, {"xn": dxn, **dp}

    def case_block():
        t = {"x": r(B, T, D), "attn_norm.weight": 1 + 0.1 * r(D), "mlp_norm.weight": 1 + 0.1 * r(D),
             **{"attn." + k: v for k, v in mlgru_params().items()},
             "mlp.gate_proj.weight": 0.4 * r(2 * I, D), "mlp.gate_proj.norm.weight": 1 + 0.1 * r(D),
             "mlp.down_proj.weight": 0.4 * r(D, I), "mlp.down_proj.norm.weight": 1 + 0.1 * r(I)}
        lb, h0, dout = rng.uniform(0.1, 0.6, D), r(B, D), r(B, T, D)
        p = lambda: {k: v for k, v in t.items() if k != "x"}
        f = lambda: float(np.sum(block.block_forward(t["x"], p(), lb, h0, 1e-6, ops)[0] * dout))
        dx, dp, _ = block.block_backward(dout, block.block_forward(t["x"], p(), lb, h0, 1e-6, ops)[2], ops)
        return f, t, {"x": dx, **dp}

    def case_cross_entropy():
        t = {"logits": r(B, T, 7)}
        targets = rng.integers(0, 7, (B, T))
        f = lambda: loss.cross_entropy_forward(t["logits"], targets)[0]
        return f, t, {"logits": loss.cross_entropy_backward(loss.cross_entropy_forward(t["logits"], targets)[1])}

    return {
        "E1 rmsnorm": case_rmsnorm,
        "E4/E5 bitlinear (caching)": case_bitlinear(False),
        "E4/E5 bitlinear (fused)": case_bitlinear(True),
        "E6 recurrence scan": case_scan,
        "E6 mlgru (layer 0)": case_mlgru(False),
        "E6 mlgru (lower-bounded)": case_mlgru(True),
        "E6 mlgru (paper output gate, fused)": case_mlgru(True, "paper", fused=True),
        "E6 mlgru (paper output gate, caching)": case_mlgru(True, "paper", fused=False),
        "E7 lower bounds": case_lower_bounds,
        "E8 glu": case_glu,
        "E9 block": case_block,
        "E11 cross-entropy": case_cross_entropy,
        "OneBit output LayerNorm (no parameters)": case_output_norm,
        **_transformer_layer_cases(rng),
    }


def _transformer_layer_cases(rng):
    """RoPE, attention (plain and BitLinear projections, with a KV-cache past), SwiGLU, the Llama block."""
    from mmf.backend import NumpyBackend
    from mmf.layers import attention, rope, swiglu
    from mmf.models import transformer_block

    B, T, D, H, I, S_past = 2, 3, 8, 2, 6, 2
    hd = D // H
    ops = NumpyBackend(weights="float", fused=True)
    r = lambda *s: rng.standard_normal(s)

    def projections(names, shapes, bitlinear, prefix=""):
        p = {}
        for name in names:
            p[prefix + name + ".weight"] = 0.4 * r(*shapes[name])
            if bitlinear:
                p[prefix + name + ".norm.weight"] = 1 + 0.1 * r(shapes[name][1])
        return p

    attn_shapes = {name: (D, D) for name in attention.PROJECTIONS}
    mlp_shapes = {"gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I)}

    def case_rope():
        cos, sin = rope.rope_tables(np.arange(5, 5 + T), hd, 10000.0)   # positions as after a 5-token past
        t = {"x": r(B, H, T, hd)}
        dout = r(B, H, T, hd)
        f = lambda: float(np.sum(rope.rope_forward(t["x"], cos, sin)[0] * dout))
        return f, t, {"x": rope.rope_backward(dout, rope.rope_forward(t["x"], cos, sin)[1])}

    def case_attention(bitlinear, past, ternary_qk=False):
        def make():
            t = {"xn": r(B, T, D), **projections(attention.PROJECTIONS, attn_shapes, bitlinear)}
            if past:
                t["past K"], t["past V"] = r(B, H, S_past, hd), r(B, H, S_past, hd)
            dout = r(B, T, D)
            p = lambda: {k: v for k, v in t.items() if k.endswith("weight")}
            kv = lambda: (t["past K"], t["past V"]) if past else None
            fwd = lambda: attention.attention_forward(t["xn"], p(), H, kv(), 10000.0, ternary_qk, ops)
            f = lambda: float(np.sum(fwd()[0] * dout))
            dxn, dp, dK, dV = attention.attention_backward(dout, fwd()[2], ops)
            an = {"xn": dxn, **dp}
            if past:
                an["past K"], an["past V"] = dK, dV
            return f, t, an
        return make

    def case_swiglu(bitlinear):
        def make():
            t = {"xn": r(B, T, D), **projections(swiglu.PROJECTIONS, mlp_shapes, bitlinear)}
            dout = r(B, T, D)
            p = lambda: {k: v for k, v in t.items() if k != "xn"}
            f = lambda: float(np.sum(swiglu.swiglu_forward(t["xn"], p(), ops)[0] * dout))
            dxn, dp = swiglu.swiglu_backward(dout, swiglu.swiglu_forward(t["xn"], p(), ops)[1], ops)
            return f, t, {"xn": dxn, **dp}
        return make

    def case_block():
        t = {"x": r(B, T, D), "input_layernorm.weight": 1 + 0.1 * r(D),
             "post_attention_layernorm.weight": 1 + 0.1 * r(D),
             **projections(attention.PROJECTIONS, attn_shapes, False, "self_attn."),
             **projections(swiglu.PROJECTIONS, mlp_shapes, False, "mlp.")}
        dout = r(B, T, D)
        p = lambda: {k: v for k, v in t.items() if k != "x"}
        fwd = lambda: transformer_block.transformer_block_forward(t["x"], p(), H, None, 1e-6, 10000.0, False, ops)
        f = lambda: float(np.sum(fwd()[0] * dout))
        dx, dp, _, _ = transformer_block.transformer_block_backward(dout, fwd()[2], ops)
        return f, t, {"x": dx, **dp}

    return {
        "RoPE": case_rope,
        "attention (linear projections)": case_attention(False, False),
        "attention (linear projections, KV-cache past)": case_attention(False, True),
        "attention (BitLinear projections, KV-cache past)": case_attention(True, True),
        "SwiGLU (linear projections)": case_swiglu(False),
        "SwiGLU (BitLinear projections)": case_swiglu(True),
        "Transformer++ block": case_block,
    }


def model_case(seed=0, output_gate="official", projection_output_norm=False):
    """E10: every parameter tensor of a 2-layer float64 model with quantization off. With
    projection_output_norm, OneBit's parameter-free LayerNorm ends every block projection (a wider
    model then: normalising 4 or 6 features makes the loss curved enough that centred differences
    with h=1e-5 carry ~1e-6 of truncation error)."""
    from mmf.models.config import MMfreeConfig
    from mmf.models.mmfree import MMfreeLM
    D, I = (8, 8) if projection_output_norm else (6, 4)
    cfg = MMfreeConfig(vocab_size=11, hidden_size=D, num_layers=2, intermediate_size=I,
                       output_gate=output_gate, weights="float", projection_output_norm=projection_output_norm)
    model = MMfreeLM(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():          # move away from the symmetric init (gains = 1, P = 0)
        p += 0.1 * rng.standard_normal(p.shape)
    ids, targets = rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4))
    f = lambda: model.loss_and_grads(ids, targets)[0]
    return f, model.params, model.loss_and_grads(ids, targets)[1]


# ----------------------------------------------------------------------------
# RWKV-4 (mmf/layers/wkv.py, mmf/layers/rwkv4_mixing.py, mmf/models/rwkv4.py)

def rwkv4_layer_cases(rng):
    from mmf.backend import NumpyBackend
    from mmf.layers import layernorm, rwkv4_mixing, wkv

    B, T, D, F = 2, 4, 5, 7
    ops = NumpyBackend(weights="float", fused=True)
    r = lambda *s: rng.standard_normal(s)

    def case_layernorm():
        t = {"x": r(B, T, D), "g": 1 + 0.1 * r(D), "b": 0.1 * r(D)}
        dout = r(B, T, D)
        fwd = lambda: layernorm.layernorm_forward(t["x"], t["g"], t["b"], 1e-5)
        f = lambda: float(np.sum(fwd()[0] * dout))
        dx, dg, db = layernorm.layernorm_backward(dout, fwd()[1])
        return f, t, {"x": dx, "g": dg, "b": db}

    def state_loss(state, dstate):
        return sum(float(np.sum(s * d)) for s, d in zip(state, dstate))

    def wkv_case(k, v, w, u, state0):
        """The loss reads every output and the final state (a, b, p), so the carried-state paths are checked."""
        def make():
            t = {"k": k, "v": v, "w": w, "u": u, "a0": state0[0], "b0": state0[1], "p0": state0[2]}
            dout = r(*k.shape)
            dstate = tuple(r(k.shape[0], k.shape[2]) for _ in range(3))
            fwd = lambda: wkv.wkv_scan_forward(t["k"], t["v"], t["w"], t["u"], (t["a0"], t["b0"], t["p0"]))
            def f():
                y, state, _ = fwd()
                return float(np.sum(y * dout)) + state_loss(state, dstate)
            dk, dv, dw, du, (da0, db0, dp0) = wkv.wkv_scan_backward(dout, fwd()[2], dstate)
            return f, t, {"k": dk, "v": dv, "w": dw, "u": du, "a0": da0, "b0": db0, "p0": dp0}
        return make

    carried = (r(B, D), rng.uniform(0.5, 2.0, (B, D)), r(B, D))           # a past with finite max exponent
    # long and extreme: w = -e^2 (a strong decay) over 120 tokens and keys up to ~300: every e^{-w t} and
    # e^{k} of the naive form overflows float64 (e^{887}, e^{300+40}), the stable form stays finite
    Tl = 120
    long_case = (300 * rng.uniform(-1, 1, (1, Tl, 2)), r(1, Tl, 2), -np.exp(np.array([2.0, 0.5])),
                 np.array([40.0, -3.0]), wkv.wkv_initial_state(1, 2, np.float64))

    def mixing_params(names, shapes):
        p = {}
        for name in names:
            p[name + ".weight"] = 0.4 * r(*shapes[name])
            p[name + ".norm.weight"] = 1 + 0.1 * r(shapes[name][1])
        return p

    def case_time_mixing():
        t = {"xn": r(B, T, D), "shift0": r(B, D), "a0": carried[0], "b0": carried[1], "p0": carried[2],
             "time_decay": 0.5 * r(D), "time_first": 0.5 * r(D), "time_mix_k": rng.uniform(0, 1, D),
             "time_mix_v": rng.uniform(0, 1, D), "time_mix_r": rng.uniform(0, 1, D),
             **mixing_params(rwkv4_mixing.TIME_MIX_PROJECTIONS, {n: (D, D) for n in rwkv4_mixing.TIME_MIX_PROJECTIONS})}
        dout, dshift, dwkv = r(B, T, D), r(B, D), tuple(r(B, D) for _ in range(3))
        state_names = ("xn", "shift0", "a0", "b0", "p0")
        p = lambda: {k: v for k, v in t.items() if k not in state_names}
        fwd = lambda: rwkv4_mixing.time_mixing_forward(t["xn"], p(), t["shift0"], (t["a0"], t["b0"], t["p0"]), ops)
        def f():
            out, (shift, wkv_state), _ = fwd()
            return float(np.sum(out * dout)) + float(np.sum(shift * dshift)) + state_loss(wkv_state, dwkv)
        dxn, dp, (dshift0, (da0, db0, dp0)) = rwkv4_mixing.time_mixing_backward(dout, fwd()[2], (dshift, dwkv), ops)
        return f, t, {"xn": dxn, "shift0": dshift0, "a0": da0, "b0": db0, "p0": dp0, **dp}

    def case_channel_mixing():
        shapes = {"key": (F, D), "receptance": (D, D), "value": (D, F)}
        t = {"xn": r(B, T, D), "shift0": r(B, D), "time_mix_k": rng.uniform(0, 1, D),
             "time_mix_r": rng.uniform(0, 1, D), **mixing_params(rwkv4_mixing.CHANNEL_MIX_PROJECTIONS, shapes)}
        dout, dshift = r(B, T, D), r(B, D)
        p = lambda: {k: v for k, v in t.items() if k not in ("xn", "shift0")}
        fwd = lambda: rwkv4_mixing.channel_mixing_forward(t["xn"], p(), t["shift0"], ops)
        def f():
            out, shift, _ = fwd()
            return float(np.sum(out * dout)) + float(np.sum(shift * dshift))
        dxn, dp, dshift0 = rwkv4_mixing.channel_mixing_backward(dout, fwd()[2], dshift, ops)
        return f, t, {"xn": dxn, "shift0": dshift0, **dp}

    return {
        "RWKV-4 layernorm": case_layernorm,
        "RWKV-4 WKV scan (carried state)": wkv_case(r(B, T, D), r(B, T, D), -np.exp(0.5 * r(D)), 0.5 * r(D), carried),
        "RWKV-4 WKV scan (T=120, naive form overflows)": wkv_case(*long_case),
        "RWKV-4 time mixing": case_time_mixing,
        "RWKV-4 channel mixing": case_channel_mixing,
    }


def rwkv4_model_case(seed=0):
    """Every parameter tensor of a 2-layer float64 RWKV-4 with quantization off."""
    from mmf.layers.loss import cross_entropy_forward
    from mmf.models.rwkv4 import RWKV4Config, RWKV4LM
    cfg = RWKV4Config(vocab_size=11, hidden_size=6, num_layers=2, intermediate_size=8, weights="float")
    model = RWKV4LM(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():          # move away from the structured init (gains 1, biases 0)
        p += 0.1 * rng.standard_normal(p.shape)
    ids, targets = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    f = lambda: cross_entropy_forward(model.forward(ids), targets)[0]      # the loss, without a backward
    return f, model.params, model.loss_and_grads(ids, targets)[1]


def run_rwkv4(seed=0):
    """{(layer, tensor): relative error} for the RWKV-4 layers and the whole RWKV-4 model."""
    rng = np.random.default_rng(seed)
    results = {}
    for layer, make in rwkv4_layer_cases(rng).items():
        for tensor, err in check_gradients(*make()).items():
            results[(layer, tensor)] = err
    for tensor, err in check_gradients(*rwkv4_model_case(seed)).items():
        results[("RWKV-4 model (2 layers)", tensor)] = err
    return results


def transformer_model_case(weights="float", seed=0, projection_output_norm=False):
    """Every parameter tensor of a 2-layer float64 TransformerLM with its quantizers off: weights='float'
    is the Transformer++ (plain projections); 'ternary' checks the BitNet layout (a BitLinear with its own
    norm per projection) with the quantizers off."""
    from mmf.layers.loss import cross_entropy_forward
    from mmf.models.transformer import TransformerLM
    from mmf.models.transformer_config import TransformerConfig
    cfg = TransformerConfig(vocab_size=11, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=6,
                            weights=weights, projection_output_norm=projection_output_norm)
    model = TransformerLM(cfg, seed=seed, dtype=np.float64, quantize=False)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():          # move away from the symmetric init (gains = 1)
        p += 0.1 * rng.standard_normal(p.shape)
    ids, targets = rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4))
    f = lambda: cross_entropy_forward(model.forward(ids), targets)[0]
    return f, model.params, model.loss_and_grads(ids, targets)[1]


def run_all(seed=0):
    """{(layer, tensor): relative error} for every layer and the whole models."""
    rng = np.random.default_rng(seed)
    results = {}
    for layer, make in _layer_cases(rng).items():
        for tensor, err in check_gradients(*make()).items():
            results[(layer, tensor)] = err
    for tensor, err in check_gradients(*model_case(seed)).items():
        results[("E10 model (2 layers)", tensor)] = err
    for tensor, err in check_gradients(*model_case(seed, output_gate="paper")).items():
        results[("E10 model (2 layers, paper output gate)", tensor)] = err
    for tensor, err in check_gradients(*transformer_model_case("float", seed)).items():
        results[("Transformer++ model (2 layers)", tensor)] = err
    for tensor, err in check_gradients(*transformer_model_case("ternary", seed)).items():
        results[("BitNet b1.58 layout, quantizers off (2 layers)", tensor)] = err
    for tensor, err in check_gradients(*model_case(seed, projection_output_norm=True)).items():
        results[("E10 model, OneBit output LayerNorm on every projection (2 layers)", tensor)] = err
    for tensor, err in check_gradients(*transformer_model_case("float", seed, True)).items():
        results[("Transformer++ model, OneBit output LayerNorm on every projection (2 layers)", tensor)] = err
    return results


def main():
    results = {**run_all(), **run_rwkv4()}
    width = max(len(t) for _, t in results)
    print(f"finite-difference gradient check: float64, quantization off, centred h=1e-5, "
          f"pass if relative error < {TOLERANCE:g}\n")
    worst = {}
    for (layer, tensor), err in results.items():
        worst[layer] = max(worst.get(layer, 0.0), err)
    current = None
    for (layer, tensor), err in results.items():
        if layer != current:
            print(f"{layer}   (worst {worst[layer]:.2e})")
            current = layer
        print(f"    {tensor:<{width}}  {err:.2e}  {'ok' if err < TOLERANCE else 'FAIL'}")
    failed = [k for k, e in results.items() if not e < TOLERANCE]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
