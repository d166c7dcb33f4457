"""The modelled DRAM image: where the compiler puts every weight matrix and vector, and what the
accelerator reads back.

Every object starts with a 16-byte header that the hardware reads before the payload:
    byte 0      kind (1 = float32 vector, 2 = ternary matrix)
    bytes 4-7   rows (uint32; a vector's length)
    bytes 8-11  cols (uint32; 1 for a vector)
    bytes 12-15 beta (float32; the matrix's E3 scale, 0 for a vector)
followed by the payload: float32 little-endian elements, or the 2-bit ternary rows of ternary.py.
Objects are aligned to 64 bytes (one 512-bit access), so an image serves both interface widths.

Address spaces: the shared region (absolute addresses: the residual-stream buffer, the head) and
one region per layer, all with the same layout; a block program addresses its layer's objects
relative to the base the host writes before launching it (so one ROM program serves every layer).
An image built without values (`values=False`) has the same layout and sizes: the timing model
needs only those.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import ternary

HEADER_BYTES = 16
ALIGN = 64
VECTOR, MATRIX = 1, 2
DEFAULT_CAPACITY = 8 << 30        # one DDR4 channel of the D5005: 8 GiB (the core attaches to one)


def _align(n):
    return -(-n // ALIGN) * ALIGN


@dataclass
class DramObject:
    name: str
    kind: int                       # VECTOR or MATRIX
    rows: int                       # vector length, or matrix rows (outputs)
    cols: int = 1                   # matrix cols (inputs)
    beta: float = 0.0               # E3 scale of a matrix
    access_bytes: int = 1           # matrix rows are padded to this many bytes (one interface access)
    data: Optional[np.ndarray] = None   # float vector, or packed uint8 (rows, row_bytes)
    offset: int = 0                 # byte address inside its region

    @property
    def payload_bytes(self):
        if self.kind == VECTOR:
            return 4 * self.rows
        return self.rows * ternary.row_bytes(self.cols, self.access_bytes)

    @property
    def nbytes(self):
        return HEADER_BYTES + self.payload_bytes

    def header(self):
        h = np.zeros(HEADER_BYTES, np.uint8)
        h[0] = self.kind
        h[4:8] = np.frombuffer(np.uint32(self.rows).tobytes(), np.uint8)
        h[8:12] = np.frombuffer(np.uint32(self.cols).tobytes(), np.uint8)
        h[12:16] = np.frombuffer(np.float32(self.beta).tobytes(), np.uint8)
        return h

    def weights(self):
        """The ternary matrix (rows, cols) int8, decoded from the packed payload."""
        return ternary.unpack(self.data, self.cols)


@dataclass
class Region:
    """A run of objects laid out back to back (64-byte aligned)."""
    name: str
    objects: dict = field(default_factory=dict)
    size: int = 0

    def add(self, obj: DramObject):
        if obj.name in self.objects:
            raise ValueError(f"DRAM region {self.name!r} already holds an object named {obj.name!r}")
        obj.offset = self.size
        self.objects[obj.name] = obj
        self.size = _align(self.size + obj.nbytes)
        return obj

    def at(self, offset):
        for obj in self.objects.values():
            if obj.offset == offset:
                return obj
        return None


class DramImage:
    """Shared region at absolute address 0, then `num_layers` per-layer regions of equal layout."""

    def __init__(self, shared: Region, layers: list, capacity=DEFAULT_CAPACITY):
        self.shared, self.layers, self.capacity = shared, layers, capacity
        self.layer_size = layers[0].size if layers else 0
        if any(r.size != self.layer_size for r in layers):
            raise ValueError("every layer region must have the same layout")
        self.layer_base0 = _align(shared.size)
        if self.total_bytes > capacity:
            raise ValueError(f"the DRAM image needs {self.total_bytes} bytes but the channel holds {capacity}")

    @property
    def has_values(self):
        regions = [self.shared] + list(self.layers)
        return any(o.data is not None for r in regions for o in r.objects.values())

    @property
    def total_bytes(self):
        return self.layer_base0 + len(self.layers) * self.layer_size

    def layer_base(self, l):
        return self.layer_base0 + l * self.layer_size

    def symbols(self):
        """Assembler symbols: (relative symbols of a layer region, absolute symbols of the shared region)."""
        rel = {name: o.offset for name, o in self.layers[0].objects.items()} if self.layers else {}
        ab = {name: o.offset for name, o in self.shared.objects.items()}
        return rel, ab

    def resolve(self, addr, absolute, layer):
        """The object at an instruction's address for a launch on `layer` (None if nothing starts there)."""
        if absolute:
            return self.shared.at(addr)
        if layer is None or not (0 <= layer < len(self.layers)):
            return None
        return self.layers[layer].at(addr)

    def to_bytes(self):
        """The whole image as one uint8 array (headers + payloads), for inspection of small models."""
        img = np.zeros(self.total_bytes, np.uint8)
        for base, region in [(0, self.shared)] + [(self.layer_base(l), r) for l, r in enumerate(self.layers)]:
            for o in region.objects.values():
                a = base + o.offset
                img[a:a + HEADER_BYTES] = o.header()
                if o.data is not None:
                    payload = (o.data.astype("<f4").view(np.uint8) if o.kind == VECTOR
                               else o.data.reshape(-1))
                    img[a + HEADER_BYTES:a + HEADER_BYTES + payload.size] = payload
        return img
