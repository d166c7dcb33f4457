"""safetensors files, the weight format of Hugging Face checkpoints: read one tensor at a time through a
memory map, written atomically, sharded with an index above a size limit.

A .safetensors file is

    8 bytes      N, the header's length (little-endian unsigned 64-bit)
    N bytes      a JSON object {tensor name: {"dtype": "BF16", "shape": [rows, cols],
                 "data_offsets": [begin, end]}, ..., "__metadata__": {"format": "pt"}}
    the rest     every tensor's raw little-endian bytes; offsets count from the end of the header,
                 the tensors tile this region exactly, with no gap and no overlap.

Reading: `SafetensorsFile` checks the whole header before any tensor is touched (so a truncated or
corrupt file is refused at once, with the file's name and the reason), then maps the file into memory:
`view(name)` is a read-only array over the file's pages (nothing copied; the kernel reads the pages
when they are touched and may drop them again, they are not anonymous memory) and `read(name, dtype)`
makes one owned copy widened to float32/float64. BF16 is widened exactly (every bfloat16 is a float32
with 16 zero low bits). A directory (`CheckpointDir`) is either one model.safetensors or shards named
by model.safetensors.index.json.

Writing: through the `safetensors` library (what the official package's loader reads), to a temporary
name renamed over the target (atomic); BF16 by round-to-nearest-even of the float32 values (ml_dtypes).
"""
from __future__ import annotations

import json
import mmap
import os
import re
from math import prod

import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}                  # the dtypes a released checkpoint may hold
MAX_HEADER_BYTES = 100 * 2**20                              # the safetensors library's own limit
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9                         # transformers 4.x's default "5GB"


class SafetensorsError(ValueError):
    """A weights file or directory that cannot be read (the message names the file and the reason)."""


def numpy_dtype(code: str) -> np.dtype:
    """safetensors dtype code -> NumPy dtype (BF16 through ml_dtypes, imported only when needed)."""
    if code == "F32":
        return np.dtype("<f4")
    if code == "F16":
        return np.dtype("<f2")
    if code == "BF16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    raise KeyError(code)


# ----------------------------------------------------------------------------------------------
# reading one file


class SafetensorsFile:
    """One .safetensors file: its header validated on opening, its tensors mapped on demand."""

    def __init__(self, path: str):
        self.path = str(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise self._error(f"truncated: {size} bytes, shorter than the 8-byte header length")
                n = int.from_bytes(head, "little")
                if n > size - 8:
                    raise self._error(f"truncated or corrupt: the header claims {n} bytes but only "
                                      f"{size - 8} follow the length field")
                if n > MAX_HEADER_BYTES:
                    raise self._error(f"corrupt: a {n}-byte header (more than {MAX_HEADER_BYTES})")
                raw = f.read(n)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such weights file") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._error(f"corrupt header: not JSON ({e})") from None
        if not isinstance(header, dict):
            raise self._error(f"corrupt header: a JSON {type(header).__name__}, not an object")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (isinstance(metadata, dict) and
                                         all(isinstance(v, str) for v in metadata.values())):
            raise self._error("corrupt header: __metadata__ must map strings to strings")
        self.metadata = metadata or {}
        self._data_start, self._data_size = 8 + n, size - 8 - n
        self._entries = {name: self._check_entry(name, e) for name, e in header.items()}
        self._check_tiling()
        self._map = None

    def _error(self, reason):
        return SafetensorsError(f"{self.path}: {reason}")

    def _check_entry(self, name, e):
        """(dtype code, shape, begin, end) of one header entry, or an error saying what is wrong."""
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise self._error(f"corrupt header: tensor {name!r} lacks dtype, shape or data_offsets")
        code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if code not in ITEMSIZE:
            raise self._error(f"tensor {name!r} has dtype {code!r}; mmf reads {sorted(ITEMSIZE)} "
                              f"(convert the checkpoint to one of them)")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise self._error(f"corrupt header: tensor {name!r} has shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and
                0 <= offsets[0] <= offsets[1]):
            raise self._error(f"corrupt header: tensor {name!r} has data_offsets {offsets!r}")
        nbytes = prod(shape) * ITEMSIZE[code]
        if offsets[1] - offsets[0] != nbytes:
            raise self._error(f"corrupt header: tensor {name!r} is {code} {shape} = {nbytes} bytes, but its "
                              f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
        return code, tuple(shape), offsets[0], offsets[1]

    def _check_tiling(self):
        """The tensors must tile the data region exactly: a truncated file ends before the last one."""
        position = 0
        for name, (_, _, begin, end) in sorted(self._entries.items(), key=lambda kv: kv[1][2:]):
            if begin != position:
                raise self._error(f"corrupt header: tensor {name!r} starts at byte {begin} of the data, "
                                  f"expected {position} (tensors must not overlap or leave gaps)")
            position = end
        if position > self._data_size:
            last = max(self._entries, key=lambda k: self._entries[k][3])
            raise self._error(f"truncated: tensor {last!r} ends at data byte {position} but the file holds "
                              f"only {self._data_size} bytes of data")
        if position < self._data_size:
            raise self._error(f"corrupt: {self._data_size - position} bytes after the last tensor "
                              f"(the header does not describe them)")

    # ------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Tensor names in the order their bytes lie in the file."""
        return sorted(self._entries, key=lambda k: self._entries[k][2])

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name) -> tuple:
        return self._entry(name)[1]

    def dtype_code(self, name) -> str:
        return self._entry(name)[0]

    def nbytes(self, name) -> int:
        _, _, begin, end = self._entry(name)
        return end - begin

    def _entry(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    def view(self, name) -> np.ndarray:
        """A read-only array over the file's bytes of `name` (no copy; BF16 as ml_dtypes.bfloat16)."""
        code, shape, begin, end = self._entry(name)
        if end == begin:
            return np.empty(shape, numpy_dtype(code))
        if self._map is None:
            with open(self.path, "rb") as f:                        # the mapping outlives the descriptor
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if len(self._map) != self._data_start + self._data_size:
                raise self._error("the file changed size after its header was read")
        return np.frombuffer(self._map, numpy_dtype(code), count=prod(shape),
                             offset=self._data_start + begin).reshape(shape)

    def read(self, name, dtype=np.float32) -> np.ndarray:
        """An owned copy of `name` in `dtype` (float32 or float64): every stored value exactly, since
        F16 and BF16 values are all representable in float32."""
        return np.array(self.view(name), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# reading a directory


class CheckpointDir:
    """The weights of a model directory: model.safetensors, or the shards listed (tensor -> file) in
    model.safetensors.index.json. `view` / `read` / `shape` find each tensor's file."""

    def __init__(self, directory: str):
        self.directory = str(directory)
        index_path = os.path.join(self.directory, INDEX_FILE)
        single_path = os.path.join(self.directory, SINGLE_FILE)
        if os.path.isfile(single_path):                             # transformers' order of preference too
            f = SafetensorsFile(single_path)
            self._file_of = {name: f for name in f.names()}
        elif os.path.isfile(index_path):
            self._file_of = self._read_index(index_path)
        else:
            present = sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else None
            if present is None:
                raise FileNotFoundError(f"{self.directory}: no such directory")
            hint = (" (PyTorch .bin weights: convert them to safetensors first)"
                    if any(p.endswith(".bin") for p in present) else "")
            raise FileNotFoundError(f"{self.directory}: neither {SINGLE_FILE} nor {INDEX_FILE} is here{hint}; "
                                    f"it holds {present[:8]}")

    def _read_index(self, index_path):
        try:
            with open(index_path) as f:
                index = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{index_path}: corrupt index, not JSON ({e})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or \
                not all(isinstance(v, str) for v in weight_map.values()):
            raise SafetensorsError(f"{index_path}: corrupt index: no 'weight_map' of tensor name -> shard file")
        shards = {}
        for name, shard in weight_map.items():
            if shard not in shards:
                path = os.path.join(self.directory, shard)
                if os.path.basename(shard) != shard or not os.path.isfile(path):
                    raise SafetensorsError(f"{index_path}: names shard {shard!r} (for tensor {name!r}), but "
                                           f"{path} does not exist")
                shards[shard] = SafetensorsFile(path)
            if name not in shards[shard]:
                raise SafetensorsError(f"{index_path}: says tensor {name!r} is in {shard}, but that file "
                                       f"does not hold it")
        for shard, f in shards.items():
            for name in f.names():
                if weight_map.get(name) != shard:
                    raise SafetensorsError(f"{f.path}: holds tensor {name!r}, which {INDEX_FILE} does not "
                                           f"assign to this shard")
        return {name: shards[shard] for name, shard in weight_map.items()}

    def names(self) -> list[str]:
        return list(self._file_of)

    def file_of(self, name) -> SafetensorsFile:
        try:
            return self._file_of[name]
        except KeyError:
            raise KeyError(f"{self.directory}: no tensor {name!r}") from None

    def shape(self, name):
        return self.file_of(name).shape(name)

    def view(self, name):
        return self.file_of(name).view(name)

    def read(self, name, dtype=np.float32):
        return self.file_of(name).read(name, dtype)

    def storage_dtypes(self) -> set:
        return {f.dtype_code(n) for n, f in self._file_of.items()}

    def check_tensors(self, expected: dict) -> None:
        """Every expected {name: shape} present with that shape, and nothing else; else an error naming
        the tensor (and its file)."""
        missing = [n for n in expected if n not in self._file_of]
        if missing:
            raise SafetensorsError(f"{self.directory}: tensor {missing[0]!r} is missing"
                                   + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                   + "; the config.json does not match these weights")
        extra = [n for n in self._file_of if n not in expected]
        if extra:
            raise SafetensorsError(f"{self.file_of(extra[0]).path}: unexpected tensor {extra[0]!r}"
                                   + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                                   + "; this model (as its config.json describes it) has no such parameter")
        for name, shape in expected.items():
            got = self.shape(name)
            if tuple(got) != tuple(shape):
                raise SafetensorsError(f"{self.file_of(name).path}: tensor {name!r} has shape {list(got)}, but "
                                       f"the config.json needs {list(shape)}")


# ----------------------------------------------------------------------------------------------
# writing


def bfloat16_rne(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 by round-to-nearest-even (ml_dtypes' conversion; tests check it bit by bit)."""
    import ml_dtypes
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


def to_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    """A float array as stored on disk: 'float32' (float64 rounded to nearest), or 'bfloat16' (rounded
    from the float32 value, so that BF16 export equals round-to-nearest-even of the float32 weights)."""
    if dtype == "float32":
        return np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "bfloat16":
        return np.ascontiguousarray(bfloat16_rne(a))
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")


def write_file(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """Write {name: array} as one .safetensors file, atomically (temporary name + rename)."""
    from safetensors.numpy import save_file
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_dir(directory: str, tensors: dict, dtype: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list:
    """Write {name: float array} into `directory` as model.safetensors or, above max_shard_bytes, as
    model-0000k-of-0000n.safetensors shards plus model.safetensors.index.json. Tensors are converted to
    `dtype` one shard at a time. Returns the files written. Files of the other layout left by an earlier
    export are removed, so the directory never holds two disagreeing copies."""
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be a positive int, got {max_shard_bytes!r}")
    itemsize = {"float32": 4, "bfloat16": 2}.get(dtype)
    if itemsize is None:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    os.makedirs(directory, exist_ok=True)
    shards, size = [[]], 0                                          # names per shard, in order
    for name, a in tensors.items():
        nbytes = a.size * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    stale = [f for f in os.listdir(directory) if f in (SINGLE_FILE, INDEX_FILE) or SHARD_PATTERN.match(f)]
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for f in stale:
        if f not in names:
            os.remove(os.path.join(directory, f))
    for file, shard in zip(names, shards):
        write_file(os.path.join(directory, file), {n: to_storage(tensors[n], dtype) for n in shard})
    if len(shards) > 1:
        total = sum(tensors[n].size for n in tensors) * itemsize
        _write_json(os.path.join(directory, INDEX_FILE),
                    {"metadata": {"total_size": total},
                     "weight_map": {n: file for file, shard in zip(names, shards) for n in shard}})
        names.append(INDEX_FILE)
    return names
