"""Issue 11, items 1 and 6 for the fast tier: the kernels cannot be driven out of bounds from the
public API, and NaN logits never become a token. The reproductions that used to crash the
interpreter (heap corruption, SIGSEGV) run in a subprocess (tests/isolated.py)."""
import dataclasses
import mmap
import os
import re

import numpy as np
import pytest

import kernels_numba as kn
import mmf
from isolated import assert_no_crash, run_python
from mmf.models.generate import NonFiniteLogitsError, generate

CFG = mmf.MMfreeConfig(vocab_size=40, hidden_size=32, num_layers=2, intermediate_size=64)


@pytest.fixture(scope="module")
def model():
    return mmf.MMfreeLM(CFG, seed=3)


@pytest.fixture(scope="module")
def engine(model):
    return kn.Engine(model)


# ---------------------------------------------------------------- item 1: PackedTernary

def test_the_inconsistent_packed_matrix_of_the_issue_is_refused_in_a_subprocess():
    proc = run_python("""
        import numpy as np, kernels_numba as kn
        p = kn.pack_ternary(np.ones((8, 70), np.int8))
        try:
            b = kn.PackedTernary(np.ascontiguousarray(p.nonzero[:, :1]), np.ascontiguousarray(p.negative[:, :1]),
                                 p.offset, (8, 70))
        except ValueError as e:
            print("refused:", e)
        else:
            print("accepted", kn.ternary_matvec(b, np.zeros(70, np.int8)))
    """)
    assert_no_crash(proc)
    assert "refused:" in proc.stdout and "nonzero must have shape (8, 2)" in proc.stdout, proc.stdout + proc.stderr


def _planes(w):
    p = kn.pack_ternary(w)
    return p.nonzero.copy(), p.negative.copy(), p.offset.copy()


def test_a_consistent_hand_made_packed_matrix_is_accepted_and_exact():
    """The negative control of the checks below: valid planes pass and multiply correctly."""
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (5, 70)).astype(np.int8)
    nz, ng, off = _planes(w)
    p = kn.PackedTernary(nz, ng, off, (5, 70), 0.5)
    x = rng.integers(-128, 128, 70).astype(np.int8)
    np.testing.assert_array_equal(kn.ternary_matvec(p, x), w.astype(np.int64) @ x)


@pytest.mark.parametrize("break_it, words", [
    (lambda nz, ng, off: (nz, ng, off.astype(np.int32)), "offset must be a numpy int64"),
    (lambda nz, ng, off: (nz.astype(np.int64), ng, off), "nonzero must be a numpy uint64"),
    (lambda nz, ng, off: (nz, ng[:4], off), r"negative must have shape \(5, 2\)"),
    (lambda nz, ng, off: (nz, ng, off[:4]), r"offset must have shape \(5,\)"),
    (lambda nz, ng, off: (nz, ng | np.uint64(1 << 63), off), "negative has bits where nonzero has none"),
    (lambda nz, ng, off: (nz | np.uint64(1 << 63), ng | np.uint64(1 << 63), off), "padding columns"),
    (lambda nz, ng, off: (nz, ng, off + 1), r"offset\[0\] = .* does not match"),
    (lambda nz, ng, off: ([list(r) for r in nz], ng, off), "nonzero must be a numpy uint64"),
])
def test_each_broken_invariant_is_named(break_it, words):
    w = np.random.default_rng(1).integers(-1, 2, (5, 70)).astype(np.int8)
    nz, ng, off = break_it(*_planes(w))
    with pytest.raises((ValueError, TypeError), match=words):
        kn.PackedTernary(nz, ng, off, (5, 70))


@pytest.mark.parametrize("shape, scale", [((5, 0), 1.0), ((5,), 1.0), ([5, 70], 1.0), ((5, 70.0), 1.0),
                                          ((5, 70), float("nan")), ((5, 70), "1")])
def test_bad_shape_or_scale(shape, scale):
    nz, ng, off = _planes(np.ones((5, 70), np.int8))
    with pytest.raises(ValueError):
        kn.PackedTernary(nz, ng, off, shape, scale)


def test_packed_matrices_are_immutable():
    nz, ng, off = _planes(np.ones((3, 70), np.int8))
    for p in (kn.pack_ternary(np.ones((3, 70), np.int8)), kn.PackedTernary(nz, ng, off, (3, 70))):
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.shape = (3, 6400)
        for a in (p.nonzero, p.negative, p.offset):
            with pytest.raises(ValueError, match="read-only"):
                a[0] = 0
            with pytest.raises(ValueError):
                a.setflags(write=True)                               # the base is read-only too
    nz[:] = 0                                                        # the caller's arrays were copied
    assert kn.ternary_matvec(p, np.ones(70, np.int8))[0] == 70


def test_large_packed_matrices_are_immutable_too_on_huge_pages():
    """From 2 MiB on the planes live in a 2 MiB-aligned huge-page mapping (packing.huge_page_empty):
    the same read-only guarantees, the same integers, and (Linux) an aligned start."""
    w = np.random.default_rng(0).integers(-1, 2, (4096, 4096)).astype(np.int8)   # 2 MiB per plane
    p = kn.pack_ternary(w)
    for a in (p.nonzero, p.negative):
        if hasattr(mmap, "MADV_HUGEPAGE"):
            assert a.ctypes.data % (2 << 20) == 0
        with pytest.raises(ValueError, match="read-only"):
            a[0, 0] = 0
        with pytest.raises(ValueError):
            a.setflags(write=True)
    x = np.random.default_rng(1).integers(-128, 128, 4096).astype(np.int8)
    assert np.array_equal(kn.ternary_matvec(p, x), (w.astype(np.int64) @ x).astype(np.int32))


def test_public_products_check_their_activations():
    p = kn.pack_ternary(np.ones((3, 70), np.int8))
    for bad, exc in ((np.ones(69, np.int8), ValueError), (np.ones(70, np.int16), TypeError),
                     (np.ones((1, 70), np.int8), ValueError), ([1] * 70, TypeError)):
        with pytest.raises(exc):
            kn.ternary_matvec(p, bad)
    with pytest.raises(ValueError):
        kn.ternary_matmul(p, np.ones((2, 71), np.int8))
    with pytest.raises(TypeError, match="pack_ternary"):
        kn.ternary_matmul((p.nonzero, p.negative), np.ones((2, 70), np.int8))


# ---------------------------------------------------------------- item 1: Engine entries

ENGINE_CASES = [
    ("e.step(np.array([10**9]), e.new_state(1))", r"ids in \[1000000000"),
    ("e.step(np.array([-1]), e.new_state(1))", r"ids in \[-1"),
    ("e.step(np.array([1]), np.zeros((1, 5000, 32), np.float32))", r"shape \(B, L, D\) = \(1, 2, 32\)"),
    ("e.step(np.array([1, 2]), e.new_state(1))", r"\(2, 2, 32\) for 2 token"),
    ("e.step(np.array([1]), e.new_state(2))", r"\(1, 2, 32\) for 1 token"),
    ("e.step(np.array([1]), np.zeros((1, 2, 32)))", "float32"),
    ("e.step(np.array([1]), np.zeros((1, 32, 2), np.float32).transpose(0, 2, 1))", "C-contiguous"),
    ("e.step(np.array([1]), np.frombuffer(bytes(257), np.uint8)[1:].view(np.float32).reshape(1, 2, 32))",
     "aligned"),
    ("e.step(np.array([1.0]), e.new_state(1))", "integer"),
    ("e.step(np.array([], np.int64), e.new_state(1))", "B >= 1"),
    ("e.new_state(0)", "batch must be an int >= 1"),
    ("e.prefill(np.array([[1, 40]]))", r"\[1, 40\]"),
    ("e.generate(np.zeros((0, 3), np.int64), 2)", "B, T >= 1"),
]


def test_engine_entries_refuse_what_would_crash_or_return_garbage():
    """The issue's SIGSEGVs (an id of 10**9, a state of (1, 5000, D)) and garbage (a batch mismatch),
    all in one fresh interpreter: a crash fails the test instead of ending pytest."""
    lines = ["import numpy as np, mmf, kernels_numba as kn",
             "e = kn.Engine(mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=40, hidden_size=32, num_layers=2, "
             "intermediate_size=64)))"]
    for k, (call, _) in enumerate(ENGINE_CASES):
        lines += ["try:", f"    {call}", "except (ValueError, TypeError) as err:",
                  f"    print('case {k} refused:', err, flush=True)", "else:",
                  f"    print('case {k} accepted', flush=True)"]
    proc = run_python("\n".join(lines))
    assert_no_crash(proc)
    out = proc.stdout.splitlines()
    assert len(out) == len(ENGINE_CASES), proc.stdout + proc.stderr
    for k, (call, words) in enumerate(ENGINE_CASES):
        assert out[k].startswith(f"case {k} refused:") and re.search(words, out[k]), (call, out[k])


def test_engine_refuses_an_unquantized_model():
    model = mmf.MMfreeLM(CFG, seed=3, quantize=False)
    with pytest.raises(ValueError, match="weights='float'"):
        kn.Engine(model)


# ---------------------------------------------------------------- item 6: NaN never becomes a token

def _nan_model():
    """Finite parameters whose forward overflows into NaN logits (a huge final-norm gain)."""
    m = mmf.MMfreeLM(CFG, seed=3)
    m.params["model.norm.weight"][:] = 3e38
    return m


def test_generate_refuses_nan_logits():
    m = _nan_model()
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        generate(m, np.array([1, 2]), 3, temperature=0)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLogitsError):
        generate(m, np.array([1, 2]), 3, temperature=0.8, top_k=5)
    state = [np.full((1, CFG.hidden_size), np.nan, np.float32) for _ in range(CFG.num_layers)]
    logits, _ = mmf.MMfreeLM(CFG, seed=3).forward(np.array([[1]]), state=state, return_state=True)
    from mmf.models.generate import sample_next
    with pytest.raises(NonFiniteLogitsError):                        # a NaN state, too
        sample_next(logits[:, -1], 0.0, None, None, np.random.default_rng(0))


def test_generate_with_finite_logits_still_works(model):
    """Negative control: the check does not fire on a healthy model."""
    out = generate(model, np.array([1, 2]), 3, temperature=0)
    assert out.shape == (5,) and (out < CFG.vocab_size).all()


def test_engine_refuses_non_finite_params_state_and_logits(model):
    nan = mmf.MMfreeLM(CFG, seed=3)
    nan.params["model.norm.weight"][0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        kn.Engine(nan)
    nan.params["model.norm.weight"][0] = 1.0
    nan.params["model.layers.1.mlp.down_proj.weight"][2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        kn.Engine(nan)
    engine = kn.Engine(_nan_model())                                 # finite params, overflow inside
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLogitsError):
        engine.generate(np.array([1, 2]), 3)                         # prefill (GEMM path)
    with np.errstate(all="ignore"):
        assert np.isnan(engine.step(np.array([1]), engine.new_state(1))).all()   # step (GEMV path)
        assert np.isnan(engine.prefill_stepwise(np.array([[1, 2]]))[0]).all()
    healthy = kn.Engine(model)
    state = healthy.new_state(1)
    assert np.isfinite(healthy.step(np.array([1]), state)).all()     # negative control
    state[0, 1, 3] = np.inf
    with pytest.raises(ValueError, match="state holds NaN/inf"):
        healthy.step(np.array([1]), state)


def test_accelerator_refuses_nan_logits():
    from fpga_model.accelerator import Accelerator
    from fpga_model.hardware import Hardware
    small = mmf.MMfreeConfig(vocab_size=16, hidden_size=16, num_layers=1, intermediate_size=32)
    m = mmf.MMfreeLM(small, seed=0)
    m.params["model.norm.weight"][:] = 3e38
    acc = Accelerator.from_model(m, Hardware())
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLogitsError):
        acc.generate([1, 2], 2)


# ---------------------------------------------------------------- item 7: no litter from the engine

def test_the_mapped_embedding_leaves_no_file_even_after_kill_9(tmp_path):
    """The file behind embedding='mmap' is unlinked as soon as it is open: a process killed while
    decoding leaves nothing in the temporary directory."""
    proc = run_python("""
        import os, signal, numpy as np, mmf, kernels_numba as kn
        e = kn.Engine(mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=40, hidden_size=32, num_layers=1,
                                                    intermediate_size=64)), embedding="mmap")
        e.step(np.array([3]), e.new_state(1))
        print("files while running:", sorted(os.listdir(os.environ["TMPDIR"])), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """, env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == -9, proc.stderr
    assert "files while running: []" in proc.stdout
    assert os.listdir(tmp_path) == []


def test_one_compiled_step_for_every_embedding_kind(model):
    """Numba's disk cache of `_step` (which calls a parallel kernel) crashed the interpreter (SIGSEGV)
    once it held two specializations, e.g. a float32 engine run after an mmap one: the step now
    takes the gathered embedding rows, so every engine uses the same single specialization."""
    from kernels_numba.engine import _step
    for embedding in ("float32", "mmap", "int8"):
        engine = kn.Engine(model, embedding=embedding)
        engine.step(np.array([1, 2]), engine.new_state(2))
    assert len(_step.signatures) == 1, _step.signatures
    for embedding in ("mmap", "float32", "int8"):                    # fresh processes read that cache
        proc = run_python(f"""
            import numpy as np, mmf, kernels_numba as kn
            e = kn.Engine(mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=40, hidden_size=32, num_layers=2,
                                                        intermediate_size=64), seed=3), embedding={embedding!r})
            print("ok", np.isfinite(e.step(np.array([1]), e.new_state(1))).all())
        """)
        assert_no_crash(proc)
        assert "ok True" in proc.stdout, proc.stderr
