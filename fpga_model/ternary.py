"""The DRAM encoding of ternary weights: 2 bits per weight, 4 weights per byte.

    code 0b00 ->  0        code 0b01 -> +1        code 0b11 -> -1        code 0b10 -> invalid
(-1 is the 2-bit two's complement of 1, so sign-extending a code gives the weight.) Weight k of a byte
sits in bits [2k+1:2k] (little-endian within the byte). Matrices are stored row-major ([out, in] like
the state dict) and every row is padded with zero codes to a whole DRAM access (`row_bytes`), so one
row is a whole number of beats whatever the interface width. The per-tensor scale beta (E3) is not
here: it is a float32 in the matrix header (see dram.py).

Why 2 bits: 8-bit accesses then carry 4 weights each, and Table 5's cycle counts fit this packing
(docs/accelerator.md; fpga_model/paper.py shows the arithmetic). A 5-trits-per-byte code (3^5 = 243)
would be 20% denser but needs a base-3 decoder in front of the adders.
"""
import numpy as np

WEIGHTS_PER_BYTE = 4
_CODE_OF = {0: 0b00, 1: 0b01, -1: 0b11}


def row_bytes(cols, access_bytes):
    """Bytes one row of `cols` ternary weights occupies: 2-bit codes padded to whole accesses."""
    raw = -(-cols // WEIGHTS_PER_BYTE)                       # ceil(cols / 4)
    return -(-raw // access_bytes) * access_bytes


def pack(Wt, access_bytes=1):
    """Wt (rows, cols) int in {-1,0,1} -> packed uint8 (rows, row_bytes)."""
    Wt = np.asarray(Wt)
    if Wt.ndim != 2:
        raise ValueError(f"ternary pack needs a 2-D [out, in] matrix, got shape {Wt.shape}")
    if not np.isin(Wt, (-1, 0, 1)).all():
        raise ValueError("ternary pack got weights outside {-1, 0, 1}; quantize with mmf.layers.quant.weight_quant_int first")
    rows, cols = Wt.shape
    nbytes = row_bytes(cols, access_bytes)
    codes = np.zeros((rows, nbytes * WEIGHTS_PER_BYTE), np.uint8)     # padding codes are 0 (weight 0)
    codes[:, :cols] = (Wt.astype(np.int16) & 0b11).astype(np.uint8)   # 1 -> 01, -1 -> 11, 0 -> 00
    codes = codes.reshape(rows, nbytes, WEIGHTS_PER_BYTE)              # (rows, bytes, 4)
    shifts = np.arange(WEIGHTS_PER_BYTE, dtype=np.uint8) * 2
    return np.bitwise_or.reduce(codes << shifts, axis=2).astype(np.uint8)   # (rows, bytes)


def unpack(packed, cols):
    """packed uint8 (rows, row_bytes) -> Wt int8 (rows, cols). Refuses the invalid code 0b10."""
    packed = np.asarray(packed, dtype=np.uint8)
    shifts = np.arange(WEIGHTS_PER_BYTE, dtype=np.uint8) * 2
    codes = (packed[:, :, None] >> shifts) & 0b11                      # (rows, bytes, 4)
    codes = codes.reshape(packed.shape[0], -1)[:, :cols]               # (rows, cols)
    if (codes == 0b10).any():
        raise ValueError("ternary unpack found the invalid code 0b10: the DRAM image is corrupt")
    return np.where(codes == 0b11, -1, codes).astype(np.int8)
