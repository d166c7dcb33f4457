"""Engine: a model packed once, decoded with carried state by the add/subtract kernels. Its greedy
tokens equal model.generate's for a trained model; its logits are the model's to float32 rounding;
it keeps a fraction of the float32 bytes; bad input is refused."""
import sys

import numpy as np
import pytest

import mmf
from kernels_numba import Engine, simd
from mmf.training.adamw import AdamW

CFG = dict(vocab_size=48, hidden_size=64, num_layers=2, intermediate_size=128)
# the products' kernel versions: 3 (SWAR, any CPU), 4 (AVX-512BW), 5 (AVX-512 VPOPCNTDQ) on the bit
# planes, 8 (AVX2 VPSHUFB) on the pairs layout; the IR of 4, 5 and 8 compiles on any CPU too (slowly
# where the instructions are missing), so all run everywhere
VERSIONS = [5, 4, 3, 8]


def engine_running(model, version):
    """An engine whose steps run `version` (its layout: the pairs for version 8, else the planes)."""
    engine = Engine(model, layout="pairs" if version == 8 else "planes")
    engine.version = engine.version_tokens = version
    return engine


@pytest.fixture(scope="module")
def trained():
    """A model trained (numba backend, a few hundred milliseconds) on a periodic sequence, so that its
    greedy continuation is a confident pattern rather than near-tied random logits."""
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG), seed=0, backend="numba")
    opt = AdamW(model.params, lr=3e-3)
    pattern = np.array([3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32])
    seq = np.tile(pattern, 8)[None, :].repeat(4, axis=0)             # (4, 96)
    for step in range(40):
        loss, grads = model.loss_and_grads(seq[:, :-1], seq[:, 1:])
        opt.step(grads)
    model.final_loss = loss
    return model


def test_training_worked(trained):
    assert trained.final_loss < 1.0                                  # ln(48) = 3.9 at the start


def test_greedy_generation_equals_model_generate(trained):
    engine = Engine(trained)
    prompt = np.array([[3, 14, 15], [26, 5, 35]])
    got = engine.generate(prompt, 24, temperature=0.0)
    want = trained.generate(prompt, 24, temperature=0)
    assert got.shape == (2, 27)
    assert np.array_equal(got, want)
    assert len(set(got[0, 3:].tolist())) > 3                         # a real continuation, not a constant


@pytest.mark.parametrize("version", VERSIONS)
def test_prefill_and_steps_match_full_forward_logits(trained, version):
    # float32 rounding differs between the integer and the float product (~1e-7); the bound leaves room
    # for one int8 code landing on the other side of a rounding tie (~1e-4..1e-3), nothing more.
    # version 3 is the portable GEMV that CPUs without AVX-512BW get.
    engine = engine_running(trained, version)
    ids = np.array([[1, 2, 3, 40, 5, 6, 7]])
    logits, state = engine.prefill(ids[:, :4])
    ref = trained.forward(ids)                                       # (1, 7, V)
    assert np.abs(logits - ref[:, 3]).max() < 1e-3 * np.abs(ref).max()
    for t in range(4, 7):
        logits = engine.step(ids[:, t], state)
        assert np.abs(logits - ref[:, t]).max() < 1e-3 * np.abs(ref).max()


def test_every_gemv_version_gives_identical_logits(trained):
    ids = np.array([[3, 14, 15, 9, 26]])
    out = {}
    for version in VERSIONS:
        engine = engine_running(trained, version)
        logits, state = engine.prefill(ids)
        out[version] = [logits] + [engine.step(np.array([t]), state) for t in (5, 35, 8)]
    for v in VERSIONS[1:]:
        for a, b in zip(out[VERSIONS[0]], out[v]):
            np.testing.assert_array_equal(a, b)                      # the same integers, the same floats


def test_the_engine_runs_the_best_versions_this_cpu_has(trained):
    # (one token, several tokens, long prompts): the measured choice per instruction set
    # (products.BEST's and engine.LOOKUP_FROM's comments)
    want = ((5, 5, 6, "planes") if simd.POPCNT else (4, 4, 6, "planes") if simd.AVAILABLE
            else (8, 8, 8, "pairs") if simd.AVX2 else (3, 3, None, "planes"))
    engine = Engine(trained)
    assert (engine.version, engine.version_tokens, engine.lookup_from and engine.lookup_version, engine.layout) == want


def test_a_batch_step_with_the_default_versions_equals_each_sequence_alone(trained):
    # a batch and one sequence may run different kernels (with AVX-512BW alone: 4 and 4; version 8 has
    # a GEMV of its own): still the same integers
    engine = Engine(trained)
    ids = np.array([[3, 14, 15], [26, 5, 35], [8, 9, 7]])
    logits, state = engine.prefill(ids)
    alone = [engine.prefill(ids[b:b + 1]) for b in range(3)]
    logits = engine.step(np.array([5, 6, 7]), state)
    for b in range(3):
        np.testing.assert_array_equal(logits[b], engine.step(np.array([[5, 6, 7][b]]), alone[b][1])[0])
        np.testing.assert_array_equal(state[b], alone[b][1][0])


@pytest.mark.parametrize("version", VERSIONS)
def test_a_batch_step_equals_each_sequence_alone(trained, version):
    # B = 5 sequences share each weight read (a GEMM over tokens, padded to the kernel's 4-token
    # groups); every sequence's logits and state must be those of decoding it alone (a GEMV)
    engine = engine_running(trained, version)
    ids = np.array([[3, 14, 15], [26, 5, 35], [8, 9, 7], [9, 32, 3], [1, 2, 4]])
    logits, state = engine.prefill(ids)
    alone = [engine.prefill(ids[b:b + 1]) for b in range(5)]
    for tok in ([5, 6, 7, 8, 9], [10, 3, 1, 2, 47]):
        logits = engine.step(np.array(tok), state)
        for b in range(5):
            one = engine.step(np.array([tok[b]]), alone[b][1])
            np.testing.assert_array_equal(logits[b], one[0])
            np.testing.assert_array_equal(state[b], alone[b][1][0])


def test_untrained_model_without_lower_bounds_matches_forward():
    model = mmf.MMfreeLM(mmf.MMfreeConfig(**CFG, use_lower_bound=False), seed=5)
    engine = Engine(model)
    ids = np.array([[4, 8, 15, 16, 23, 42]])
    ref = model.forward(ids)[:, -1]
    assert np.abs(engine.prefill(ids)[0] - ref).max() < 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize("layout", ["planes", "pairs"])
def test_a_wrong_engine_is_detected(trained, layout):
    # negative control: an engine whose head has every nonzero weight's sign flipped (its negative
    # plane, or the negative bits 2, 3, 6, 7 of each byte of codes) no longer matches the model
    engine = Engine(trained, layout=layout)
    if layout == "planes":
        engine.head_ng[:] = ~engine.head_ng & engine.head_nz
    else:
        engine.head_codes ^= (engine.head_codes & 0b00110011) << 2
    ids = np.array([[3, 14, 15]])
    ref = trained.forward(ids)[:, -1]
    assert np.abs(engine.prefill(ids)[0] - ref).max() > 1e-2 * np.abs(ref).max()


def test_resident_memory_small():
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=64, hidden_size=256, num_layers=2), seed=0)
    float_bytes = model.num_params() * 4
    engine = Engine(model, embedding="int8")
    assert engine.nbytes < 0.12 * float_bytes
    assert engine.emb.dtype == np.int8


def test_mmap_embedding_is_exact(trained):
    prompt = np.array([[3, 14, 15], [26, 5, 35]])
    mapped = Engine(trained, embedding="mmap")
    assert not mapped.emb.flags.writeable
    np.testing.assert_array_equal(mapped.generate(prompt, 16), Engine(trained).generate(prompt, 16))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_mmap_embedding_keeps_only_touched_rows_resident():
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=512, hidden_size=1024, num_layers=1,
                                          intermediate_size=64), seed=0)
    engine = Engine(model, embedding="mmap")                         # rows of 4 KiB: one page each
    table = engine.emb.nbytes                                        # 2 MiB
    rest = engine.nbytes                                             # nothing of the table touched yet
    state = engine.new_state(1)
    for tok in (7, 300, 511):
        engine.step(np.array([tok]), state)
    assert engine.nbytes - rest <= 3 * 2 * 4096                      # 3 rows (a row may straddle 2 pages)
    float(engine.emb.sum())                                          # negative control: touch every row
    assert engine.nbytes - rest > 0.9 * table


def test_bad_input(trained):
    with pytest.raises(TypeError):
        Engine("not a model")
    with pytest.raises(ValueError):
        Engine(trained, embedding="float16")
    engine = Engine(trained)
    with pytest.raises(ValueError):
        engine.generate(np.array([[1, 2, 99]]), 3)                   # id outside the vocabulary
    with pytest.raises(ValueError):
        engine.generate(np.array([[1.0, 2.0]]), 3)                   # float ids
    with pytest.raises(ValueError):
        engine.generate(np.array([[1, 2]]), -1)


def test_gemm_prefill_equals_stepwise_prefill(trained):
    engine = Engine(trained)
    ids = np.random.default_rng(0).integers(0, CFG["vocab_size"], (3, 40))   # 120 rows: token-vectorized GEMM
    logits, state = engine.prefill(ids)
    logits_s, state_s = engine.prefill_stepwise(ids)
    assert state.shape == (3, CFG["num_layers"], CFG["hidden_size"])
    assert np.abs(logits - logits_s).max() < 1e-3 * np.abs(logits_s).max()
    assert np.abs(state - state_s).max() < 1e-3 * np.abs(state_s).max()
    assert np.abs(logits - trained.forward(ids)[:, -1]).max() < 1e-3 * np.abs(logits_s).max()


@pytest.mark.parametrize("lookup_version", [6, 7])
def test_lookup_prefill_gives_the_same_logits_and_state(trained, lookup_version):
    # versions 6 and 7 (lookup tables) compute the same integers as versions 4 and 5, so a prefill
    # through them is bit-identical; lookup_from = 1 forces one on a short prompt, None turns it off
    ids = np.random.default_rng(1).integers(0, CFG["vocab_size"], (3, 25))
    engine = Engine(trained, layout="planes")
    engine.lookup_version = lookup_version
    engine.lookup_from = None
    logits, state = engine.prefill(ids)
    engine.lookup_from = 1
    logits6, state6 = engine.prefill(ids)
    np.testing.assert_array_equal(logits6, logits)
    np.testing.assert_array_equal(state6, state)
    engine.step(np.array([1, 2, 3]), state6)                         # the state decodes on


def test_engine_from_pretrained_decodes_the_exported_models_greedy_tokens(trained, tmp_path):
    from test_interop_engine import check_engine_from_pretrained
    trained.save_pretrained(str(tmp_path), dtype="bfloat16")     # as the released models are stored
    got = check_engine_from_pretrained(str(tmp_path))
    assert len(set(got[0, 3:].tolist())) > 3                         # a real continuation, not a constant


@pytest.mark.parametrize("version", VERSIONS)
def test_gemv_row_groups_split_where_a_segment_ends(version):
    # one launch serves segments of rows that read different inputs (the i/f/g projections); version 5
    # takes ROWS rows per task, so with 6-row segments some groups straddle two inputs and must split;
    # version 8 pads each segment to whole row blocks and must find each block's rows and input
    from kernels_numba.engine import _product_segments
    from kernels_numba.packing import pack_ternary
    from kernels_numba.products import TOKENS, activation_bytes, matmul_v0
    rng = np.random.default_rng(3)
    W = rng.integers(-1, 2, (18, 100)).astype(np.int8)
    X = rng.integers(-128, 128, (3, 100)).astype(np.int8)           # one input per 6-row segment
    p = pack_ternary(W)
    u = np.stack([activation_bytes(X[k:k + 1], p.n_blocks, TOKENS) for k in range(3)])   # (3, TOKENS, 64 NB)
    if version == 3:                                                 # version 3 reads the bytes as its words
        from kernels_numba.products import activation_words
        u = np.stack([np.pad(activation_words(X[k:k + 1], p.n_blocks).reshape(1, -1).view(np.uint8),
                             ((0, TOKENS - 1), (0, 0))) for k in range(3)])
    codes = np.empty((0, 0, 16), np.uint8)
    if version == 8:                                                 # its codes: each 6-row segment padded on
        from kernels_numba.products import pack_pairs                # its own; its bytes: q's own bits
        codes = np.concatenate([pack_pairs(pack_ternary(W[6 * k:6 * k + 6])).codes for k in range(3)])
        u ^= 128
    acc = np.zeros((1, 18), np.int32)
    _product_segments(p.nonzero, p.negative, codes, 6, p.offset, u, 6, 1, version, acc)
    want = np.concatenate([matmul_v0(W[6 * k:6 * k + 6], X[k:k + 1])[0] for k in range(3)])
    np.testing.assert_array_equal(acc[0], want)


def test_the_two_layouts_decode_bit_for_bit_alike():
    # the planes (versions 3-7) and the pairs (version 8) hold the same weights and compute the same
    # integers: prefill, one sequence, a batch and generation agree to the last bit, here with widths
    # that are no multiple of the 32-row blocks version 8 pads each segment to (48, 80, 50 rows)
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=50, hidden_size=48, num_layers=2, intermediate_size=80), seed=3)
    planes, pairs = Engine(model, layout="planes"), Engine(model, layout="pairs")
    assert pairs.p_nz.size == 0 and planes.p_codes.size == 0         # one copy of the weights each
    ids = np.random.default_rng(2).integers(0, 50, (5, 9))
    (la, sa), (lb, sb) = planes.prefill(ids), pairs.prefill(ids)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(sa, sb)
    for tok in ([1, 2, 3, 4, 49], [7, 7, 0, 48, 5]):
        np.testing.assert_array_equal(planes.step(np.array(tok), sa), pairs.step(np.array(tok), sb))
        np.testing.assert_array_equal(planes.step(np.array(tok[:1]), sa[:1].copy()),
                                      pairs.step(np.array(tok[:1]), sb[:1].copy()))
    np.testing.assert_array_equal(planes.generate(ids[:2], 6), pairs.generate(ids[:2], 6))
    ref = model.forward(ids)[:, -1]
    assert np.abs(lb - ref).max() < 1e-3 * np.abs(ref).max()


def test_the_pairs_layout_keeps_two_bits_per_weight():
    model = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=64, hidden_size=256, num_layers=2), seed=0)
    planes, pairs = Engine(model, layout="planes"), Engine(model, layout="pairs")
    assert abs(pairs.nbytes - planes.nbytes) < 0.02 * planes.nbytes


def test_versions_of_the_other_layout_are_refused(trained):
    with pytest.raises(ValueError, match="layout must be one of"):
        Engine(trained, layout="bytes")
    pairs, planes = Engine(trained, layout="pairs"), Engine(trained, layout="planes")
    state = pairs.new_state(1)
    pairs.version = 5                                                # would read the planes it does not hold
    with pytest.raises(ValueError, match="layout 'pairs' runs step versions"):
        pairs.step(np.array([1]), state)
    planes.lookup_version = 8
    with pytest.raises(ValueError, match="layout 'planes'"):
        planes.prefill(np.array([[1, 2, 3]]))
