"""The 2-bit ternary DRAM code: exact byte values, round trip, padding, refusal of the invalid code."""
import numpy as np
import pytest

from fpga_model import ternary


def test_exact_bytes_of_a_known_row():
    # weights w0..w3 = +1, -1, 0, +1 -> codes 01, 11, 00, 01 at bits [1:0], [3:2], [5:4], [7:6]
    # byte = 0b01_00_11_01 = 0x4D
    packed = ternary.pack(np.array([[1, -1, 0, 1]]))
    assert packed.tolist() == [[0x4D]]
    # five weights need two bytes; the pad codes are zero weights
    packed = ternary.pack(np.array([[-1, -1, -1, -1, 1]]))
    assert packed.tolist() == [[0xFF, 0x01]]


def test_rows_are_padded_to_whole_accesses():
    W = np.ones((3, 10), np.int8)
    assert ternary.row_bytes(10, 1) == 3 and ternary.row_bytes(10, 64) == 64
    assert ternary.pack(W, access_bytes=64).shape == (3, 64)


def test_roundtrip_random_matrix():
    rng = np.random.default_rng(0)
    W = rng.integers(-1, 2, size=(17, 45)).astype(np.int8)
    for access in (1, 8, 64):
        assert np.array_equal(ternary.unpack(ternary.pack(W, access), 45), W)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="outside"):
        ternary.pack(np.array([[2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        ternary.pack(np.array([1, 0]))
    with pytest.raises(ValueError, match="invalid code"):
        ternary.unpack(np.array([[0b10]], np.uint8), 4)
