"""kernels_numba.budget: the GEMV's instructions counted in its machine code, and the core's clock."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from kernels_numba import budget, simd

# a made-up listing: a loop of 2 lookups, a block of 9 lookups that never jumps back to itself, then a
# loop of 4 lookups followed (no label between) by what runs once after it
LISTING = """
.LBB0_1:
\tvpshufb\t%ymm1, %ymm2, %ymm3
\tvpshufb\t%ymm1, %ymm4, %ymm5
\tdecq\t%rax
\tjne\t.LBB0_1
.LBB0_2:
""" + "\tvpshufb\t%ymm1, %ymm2, %ymm3\n" * 9 + """\tjmp\t.LBB0_1
\t.p2align\t4
.LBB0_3:
\tvmovdqu\t(%r10,%rbp), %ymm4
\tvbroadcasti128\t-32(%r11,%rbp,2), %ymm9
\tvpand\t%ymm5, %ymm4, %ymm6
\tvpsrlw\t$4, %ymm4, %ymm4
\tvpshufb\t%ymm6, %ymm9, %ymm12
\tvpshufb\t%ymm4, %ymm9, %ymm6
\tvpshufb\t%ymm6, %ymm9, %ymm7
\tvpshufb\t%ymm4, %ymm9, %ymm8
\tvpaddb\t%ymm2, %ymm12, %ymm2
\tvmovdqu\t%ymm2, 64(%rsp)
\tvpaddw\t%ymm2, %ymm3, %ymm3
\taddq\t$64, %rbp
\tcmpq\t%r12, %r13
\tjne\t.LBB0_3
\tvmovdqu\t528(%rsp), %ymm13
\ttestb\t$1, %cl
"""


def test_hot_loop_is_the_self_loop_with_the_most_lookups():
    loop = budget.hot_loop(LISTING)
    assert [op for op, _ in loop].count("vpshufb") == 4             # not the 9 of the block that jumps away
    assert loop[0] == ("vmovdqu", "(%r10,%rbp), %ymm4") and loop[-1] == ("jne", ".LBB0_3")   # stops at its jump


def test_hot_loop_refuses_code_without_a_lookup_loop():
    with pytest.raises(ValueError, match="no self-looping block"):
        budget.hot_loop(LISTING.replace("jne\t.LBB0_3", "jne\t.LBB0_2").replace("jne\t.LBB0_1", "jne\t.LBB0_2"))


def test_classify_sorts_instructions_by_role():
    counts = budget.classify(budget.hot_loop(LISTING))
    assert counts == {"lookups": 4, "byte adds": 1, "code split": 2, "table loads": 1, "spills": 1,
                      "other loads": 1, "other vector": 1, "scalar": 3}


def test_report_divides_the_counts_by_the_measured_times():
    gemv = {"lookups": 32, "byte adds": 32, "code split": 24, "table loads": 16, "other loads": 10,
            "spills": 0, "other vector": 0, "scalar": 8}
    tokens = {**gemv, "code split": 6}                               # the split shared by four tokens
    rates = {1: (1e11, 1.2e11), 2: (1.5e11, 2e11)}                  # weights per second: median, best
    lines = budget.report(rates, {1: (gemv, 512), 4: (tokens, 512)}, 3.2e9, weights_per_token=3e8)
    alu = 32 + 32 + 24 + budget.WIDENING_PER_1024                    # 100 on the vector pipes
    alu4 = 32 + 32 + 6 + budget.WIDENING_PER_1024                    # 82
    cycles = 1024 / 1e11 * 3.2e9                                     # 32.8 cycles per 1024 weights
    text = "\n".join(lines)
    assert f"{alu:g} on the vector pipes" in text and f"{alu4:g} on the vector pipes" in text
    assert f"issues {alu4 / alu:.2f}x the GEMV's instructions" in text
    assert f"run at most {alu / alu4:.2f}x batch 1's tokens per second" in text
    assert f"{cycles:.1f} cycles per 1024 weights, {alu / cycles:.2f} vector instructions per cycle" in text
    assert "= 1.50x one thread" in text
    assert f"{3e8 / 1.5e11 * 1e3:.2f} ms of products -> at most {1.5e11 / 3e8:.0f} tok/s" in text


def test_widening_is_three_instructions_per_byte_sum_vector():
    # a GEMV call holds low- and high-nibble byte sums for PAIR_BLOCKS blocks of 32 rows and widens them every
    # NIBBLE_BYTE_GROUPS groups: 8 groups x 2 weights x 64 rows = 1024 weights per widening of 4 vectors
    assert budget.WIDENING_PER_1024 == 3 * 2 * simd.PAIR_BLOCKS * 1024 // (
        simd.NIBBLE_BYTE_GROUPS * 2 * simd.NIBBLE_ROWS * simd.PAIR_BLOCKS)


def test_clock_is_a_plausible_frequency():
    # the chain is three dependent one-cycle operations a round: folded away by the compiler, it would
    # read tens of GHz; a machine this code runs on clocks between 0.5 and 6 GHz
    assert 0.5e9 < budget.clock_hz(n=2_000_000, repeats=3) < 6e9


def test_core_rate_times_one_and_two_threads():
    rates = budget.core_rate(reps=50, rounds=2)
    assert set(rates) == ({1, 2} if numba.config.NUMBA_NUM_THREADS >= 2 else {1})
    for median, best in rates.values():
        assert 0 < median <= best < np.inf


@pytest.mark.skipif(not simd.AVX2, reason="version 8's GEMV is AVX2 code")
def test_version_8_gemv_hot_loop_budget():
    # what README and notebook 04 say the GEMV costs, from its compiled machine code: per 1024 weights 32
    # VPSHUFB (two per 32 rows x 2 weights) and 32 VPADDB, 24 instructions to split the codes (an AND,
    # a shift and an AND per 32 bytes), nothing else on the vector pipes, and no spill to the stack
    per_1024, weights = budget.loop_budget()
    assert weights % 128 == 0
    assert per_1024["lookups"] == 32 and per_1024["byte adds"] == 32 and per_1024["code split"] == 24
    assert per_1024["other vector"] == 0 and per_1024["spills"] == 0
    assert per_1024["table loads"] == 16                             # each broadcast serves PAIR_BLOCKS blocks


@pytest.mark.skipif(not simd.AVX2, reason="version 8's kernels are AVX2 code")
def test_version_8_many_token_kernel_shares_only_the_split():
    # the four-token kernel loads and splits a vector of codes once for NIBBLE_TOKENS tokens (6 instead of
    # 24 per 1024 weight-tokens), but every token keeps its own 32 lookups and 32 adds
    per_1024, weights = budget.loop_budget(simd.NIBBLE_TOKENS)
    assert weights % 128 == 0
    assert per_1024["lookups"] == 32 and per_1024["byte adds"] == 32
    assert per_1024["code split"] == 24 / simd.NIBBLE_TOKENS and per_1024["other vector"] == 0


def test_command_line_refuses_a_bad_round_count_in_one_line():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "kernels_numba.budget", "many"], cwd=repo, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "ROUNDS a whole number >= 1" in r.stderr and "'many'" in r.stderr


def test_weights_per_step_of_the_370m_shape():
    # 24 layers x (i, f, g, o: 4 x 1024^2; gate, up, down: 3 x 2816 x 1024) + the head 32000 x 1024
    assert budget.WEIGHTS_370M == 24 * (4 * 1024 * 1024 + 3 * 2816 * 1024) + 32000 * 1024 == 341_049_344
