"""The fuzzing targets of tests/test_fuzz.py (hypothesis). Each target is run in its own
interpreter (`python tests/fuzz_targets.py NAME`), so a segfault or an abort is a failed test rather
than the end of pytest. Property everywhere: a documented exception (ValueError, TypeError and their
subclasses) or a correct, finite result; never a crash, a hang or a non-finite output.

Deterministic for CI: derandomize=True (examples derived from the test itself, no random seed, no
example database)."""
import dataclasses
import os
import sys
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

def fuzz(examples):
    return settings(derandomize=True, database=None, deadline=None, print_blob=False, max_examples=examples,
                    report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck))
DOCUMENTED = (ValueError, TypeError)

# ---------------------------------------------------------------- values of every kind

ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(allow_nan=True),
                       st.text(max_size=3), st.lists(st.integers(-3, 3), max_size=3))
DTYPES = st.sampled_from([np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64, np.bool_])
SMALL_SHAPE = st.lists(st.integers(0, 80), min_size=0, max_size=3).map(tuple)


def arrays(draw, dtype=None, shape=None):
    dtype = dtype or draw(DTYPES)
    shape = shape if shape is not None else draw(SMALL_SHAPE)
    n = int(np.prod(shape)) if shape else 1
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (int(info.min), int(info.max)) if info is not None else (-1e6, 1e6)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if info is not None:
        vals = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64 if lo < 0 else np.uint64)
    else:
        vals = rng.uniform(lo, hi, n)
    return np.asarray(vals).astype(dtype).reshape(shape)


# ---------------------------------------------------------------- packed matrices and products

@st.composite
def packed_inputs(draw):
    """Planes that are valid, valid then damaged in one place, or arbitrary; and an activation array."""
    import kernels_numba as kn
    out, n_in = draw(st.integers(1, 20)), draw(st.integers(1, 200))
    w = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-1, 2, (out, n_in)).astype(np.int8)
    p = kn.pack_ternary(w)
    nz, ng, off, shape = p.nonzero.copy(), p.negative.copy(), p.offset.copy(), (out, n_in)
    damage = draw(st.sampled_from(["none", "cols", "rows", "blocks", "bit", "offset", "shape", "dtype", "junk"]))
    if damage == "cols":
        shape = (out, draw(st.integers(-5, 2000)))
    elif damage == "rows":
        shape = (draw(st.integers(-2, 50)), n_in)
    elif damage == "blocks":
        k = draw(st.integers(0, nz.shape[1] + 3))
        nz, ng = np.zeros((out, k), np.uint64), np.zeros((out, k), np.uint64)
    elif damage == "bit":
        r, b, bit = draw(st.integers(0, out - 1)), draw(st.integers(0, nz.shape[1] - 1)), draw(st.integers(0, 63))
        plane = draw(st.sampled_from([nz, ng]))
        plane[r, b] ^= np.uint64(1) << np.uint64(bit)
    elif damage == "offset":
        off[draw(st.integers(0, out - 1))] += draw(st.integers(-1000, 1000))
    elif damage == "shape":
        shape = draw(st.one_of(ANY_SCALAR, st.tuples(st.integers(-3, 30), st.integers(-3, 300))))
    elif damage == "dtype":
        nz = nz.astype(draw(DTYPES))
    elif damage == "junk":
        nz = arrays(draw, shape=draw(SMALL_SHAPE))
    x = draw(st.one_of(st.just(None), st.builds(lambda: None).map(lambda _: None)))
    xshape = draw(st.sampled_from(["vec", "mat", "other"]))
    if xshape == "vec":
        x = arrays(draw, dtype=draw(st.sampled_from([np.int8, np.int8, np.int16])), shape=(draw(st.sampled_from([n_in, n_in + 1])),))
    elif xshape == "mat":
        x = arrays(draw, dtype=draw(st.sampled_from([np.int8, np.int8, np.float32])),
                   shape=(draw(st.integers(0, 40)), draw(st.sampled_from([n_in, n_in - 1]))))
    else:
        x = draw(st.one_of(ANY_SCALAR, st.builds(lambda: None)))
    return w, (nz, ng, off, shape, draw(st.sampled_from([1.0, 0.5, float("nan")]))), x


@fuzz(400)
@given(packed_inputs())
def packed_products(case):
    import kernels_numba as kn
    w, (nz, ng, off, shape, scale), x = case
    try:
        p = kn.PackedTernary(nz, ng, off, shape, scale)
    except DOCUMENTED:
        return
    ref = kn.unpack_ternary(p).astype(np.int64)                      # what the planes hold
    for fn, want_ndim in ((kn.ternary_matvec, 1), (kn.ternary_matmul, 2)):
        try:
            got = fn(p, x)
        except DOCUMENTED:
            continue
        assert isinstance(x, np.ndarray) and x.dtype == np.int8 and x.ndim == want_ndim
        want = (x.astype(np.int64) @ ref.T) if want_ndim == 2 else ref @ x.astype(np.int64)
        assert got.dtype == np.int32 and np.array_equal(got, want), "product differs from the reference"


@fuzz(150)
@given(st.data())
def engine_entries(data):
    import kernels_numba as kn
    import mmf
    engine = ENGINE[0]
    V, L, D = engine.config.vocab_size, engine.config.num_layers, engine.config.hidden_size
    what = data.draw(st.sampled_from(["step", "generate", "prefill", "new_state"]))
    B = data.draw(st.integers(0, 5))
    ids_dtype = data.draw(DTYPES)
    ids = data.draw(st.builds(lambda: None)) if False else None
    try:
        if what == "new_state":
            st_ = engine.new_state(data.draw(ANY_SCALAR | st.integers(-3, 5)))
            assert st_.shape[1:] == (L, D)
            return
        if what == "step":
            tokens = np.random.default_rng(data.draw(st.integers(0, 99))).integers(
                data.draw(st.integers(-3, V)), data.draw(st.integers(V - 2, V + 3)), B).astype(ids_dtype)
            sshape = data.draw(st.sampled_from([(B, L, D), (B, L, D), (1, L, D), (B, 5000, D), (B, L), (B, D, L)]))
            state = np.zeros(sshape, data.draw(st.sampled_from([np.float32, np.float32, np.float64])))
            logits = engine.step(tokens, state)
            assert logits.shape == (B, V) and np.isfinite(logits).all()
            assert np.isfinite(state).all()
            return
        T = data.draw(st.integers(0, 4))
        ids = np.random.default_rng(data.draw(st.integers(0, 99))).integers(
            data.draw(st.integers(-2, V)), data.draw(st.integers(V - 1, V + 2)), (B, T)).astype(ids_dtype)
        if what == "prefill":
            logits, state = engine.prefill(ids)
            assert np.isfinite(logits).all() and logits.shape == (B, V)
        else:
            n = data.draw(st.one_of(st.integers(-2, 4), ANY_SCALAR))
            opts = dict(temperature=data.draw(st.one_of(st.floats(-1, 3), ANY_SCALAR)),
                        top_k=data.draw(st.one_of(st.none(), st.integers(-1, V + 2), ANY_SCALAR)),
                        top_p=data.draw(st.one_of(st.none(), st.floats(-0.5, 1.5), ANY_SCALAR)), seed=0)
            out = engine.generate(ids, n, **opts)
            assert out.shape == (B, T + n) and out.min() >= 0 and out.max() < V
    except DOCUMENTED:
        pass


ENGINE = []


# ---------------------------------------------------------------- options of the NumPy model

@fuzz(200)
@given(st.data())
def generate_options(data):
    from mmf.models.generate import generate
    model = MODEL[0]
    V = model.config.vocab_size
    ids = data.draw(st.one_of(st.lists(st.integers(-2, V + 2), max_size=4).map(np.array),
                              st.builds(lambda: None), ANY_SCALAR))
    n = data.draw(st.one_of(st.integers(-2, 4), ANY_SCALAR))
    opts = dict(temperature=data.draw(st.one_of(st.floats(-1, 3), ANY_SCALAR)),
                top_k=data.draw(st.one_of(st.none(), st.integers(-1, V + 2), ANY_SCALAR)),
                top_p=data.draw(st.one_of(st.none(), st.floats(-0.5, 1.5), ANY_SCALAR)), seed=0)
    try:
        out = generate(model, ids, n, **opts)
    except DOCUMENTED:
        return
    assert out.ndim == 1 and out.shape[0] == len(ids) + n and out.min() >= 0 and out.max() < V


MODEL = []


@fuzz(300)
@given(st.dictionaries(st.sampled_from(["lr", "beta1", "beta2", "weight_decay", "grad_clip", "max_steps", "stop_at",
                                        "warmup_steps", "batch_size", "block_size", "sample_temperature",
                                        "sample_top_k", "sample_tokens", "val_fraction", "backend", "vocab_size",
                                        "checkpoint_interval", "hidden_size", "eval_windows", "min_lr_ratio"]),
                       ANY_SCALAR | st.floats(-2, 2) | st.integers(-3, 400), max_size=4))
def train_config_values(overrides):
    """Whatever the values, TrainConfig accepts them only if the schedule and the sampler can use them."""
    from mmf.models.generate import _check_options
    from mmf.training.trainer import TrainConfig, lr_at, weight_decay_at
    try:
        cfg = TrainConfig(**overrides)
    except DOCUMENTED:
        return
    for s in (0, cfg.max_steps // 2, cfg.max_steps - 1):
        assert np.isfinite(lr_at(s, cfg)) and lr_at(s, cfg) >= 0 and np.isfinite(weight_decay_at(s, cfg))
        assert lr_at(s, cfg) * weight_decay_at(s, cfg) < 1.0
    _check_options(cfg.sample_tokens, cfg.sample_temperature, cfg.sample_top_k or None, None)


# ---------------------------------------------------------------- assembler programs

LINES = st.sampled_from([
    ".entry block", ".entry", ".entry block extra", ".bogus x", "; comment", "", "LDV r0, @@x", "LDV r0, @@0x40",
    "LDV r0, @@0x41", "LDV r0, @@999999999999", "LDV r99, @w", "NORM r1, r0", "NORM r1", "MUL r1, r1, r2",
    "SUB r3, #1.0, r1", "SUB r3, #nan, r1", "SUB r3, #1e99, r1", "SUB r3, #1.0, #2.0", "QUANT r4, r1",
    "TMATMUL r5, r4, @w", "TMATMUL r5, r4, @nope", "SV r5, @@0x0", "FOO r1", "LDV r-1, @w", "LDV r0,, @w",
    "ldv R0, @@X", "SV r5, @-64", "\x00", "LDV r0, @0x" + "f" * 40])


@fuzz(400)
@given(st.lists(st.one_of(LINES, st.text(max_size=12)), max_size=12), st.integers(-1, 20))
def assembler_programs(lines, rom_depth):
    from fpga_model.assembler import assemble
    from fpga_model.isa import decode
    try:
        p = assemble("\n".join(lines), {"w": 0, "g": 64}, {"x": 0}, region_bytes=4096, capacity=1 << 20,
                     rom_depth=rom_depth)
    except DOCUMENTED:
        return
    assert len(p.rom) <= rom_depth and all(decode(int(w)) is not None for w in p.rom)


# ---------------------------------------------------------------- checkpoint bytes

@fuzz(300)
@given(st.sampled_from(["truncate", "flip", "extend", "splice"]), st.integers(0, 10**9), st.binary(min_size=1, max_size=64))
def checkpoint_bytes(how, where, junk):
    from mmf.training.checkpoint import load_checkpoint
    good = CHECKPOINT[0]
    k = where % len(good)
    data = {"truncate": good[:k], "flip": good[:k] + bytes([good[k] ^ (1 + where % 255)]) + good[k + 1:],
            "extend": good + junk, "splice": good[:k] + junk + good[k + len(junk):]}[how]
    path = os.path.join(CHECKPOINT[1], "fuzzed.ckpt")
    with open(path, "wb") as f:
        f.write(data)
    try:
        model = load_checkpoint(path).build_model()
    except DOCUMENTED:
        return
    assert all(np.isfinite(v).all() for v in model.params.values())


CHECKPOINT = []


def _setup(name):
    import mmf
    cfg = mmf.MMfreeConfig(vocab_size=24, hidden_size=16, num_layers=1, intermediate_size=32)
    if name == "engine_entries":
        import kernels_numba as kn
        ENGINE.append(kn.Engine(mmf.MMfreeLM(cfg, seed=0)))
    if name == "generate_options":
        MODEL.append(mmf.MMfreeLM(cfg, seed=0))
    if name == "checkpoint_bytes":
        from mmf.models.registry import config_to_dict
        from mmf.training.checkpoint import save_checkpoint
        d = tempfile.mkdtemp(prefix="mmf-fuzz-")
        path = os.path.join(d, "good.ckpt")
        model = mmf.MMfreeLM(cfg, seed=0)
        save_checkpoint(path, params=model.params, model_config=config_to_dict(cfg), step=1)
        CHECKPOINT.extend([open(path, "rb").read(), d])


TARGETS = ["packed_products", "engine_entries", "generate_options", "train_config_values",
           "assembler_programs", "checkpoint_bytes"]

if __name__ == "__main__":
    for name in sys.argv[1:]:
        _setup(name)
        globals()[name]()
        print(f"{name}: ok")
