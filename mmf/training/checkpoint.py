"""Checkpoints: one file holding everything needed to sample from, or exactly resume, a run.

File layout: a zip archive (stored, not compressed) with two members

    header.json   {"magic", "format_version", "model_config", "train_config", "tokenizer", "step",
                   "rng_state", "scalars", "extra", "arrays": [{name, dtype, shape, offset, nbytes}],
                   "payload_sha256"}
    payload.bin   every array's raw little-endian bytes, one after another

"model_config" is `mmf.models.registry.config_to_dict(config)`: the architecture ("arch") and every
config field, including the weight format ("weights"). Format 1 (before architectures had names)
stored the MMfreeConfig fields alone; such files still load, as arch "mmfree" with ternary weights.

Arrays are the model parameters ("params/<state-dict name>") and the optimizer's arrays
("optimizer/m/<name>", ...); the optimizer's scalars (e.g. its step count t) and the data generator's
state (the "data position": batches are drawn from that generator) live in the header.

Safety: the file is written to a temporary name in the same directory and renamed over the target
(os.replace is atomic), so a crash mid-write never leaves a half-written checkpoint under the real
name. `load_checkpoint` refuses a file that is truncated (no zip directory), corrupt (zip CRC or our
sha256 of the payload disagree), of another format version, or not a checkpoint at all, and says which
file and why. Files are untrusted: compressed members, sizes the file cannot back, a header with
missing keys or wrong types, and array tables that disagree with the payload are refused before any
array is read (`_check_members`, `_check_header`); NaN/inf parameters are never saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from mmf.atomic import remove_stale_temp_files, temp_name

MAGIC = "mmf-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)        # format 1: no "arch"/"weights" in model_config (MMfree, ternary)


class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint (the message names the file and the reason)."""


# ----------------------------------------------------------------------------------------------
# nested dicts of arrays <-> flat names


def _flatten(tree: dict, prefix: str, arrays: dict, scalars: dict) -> None:
    """Arrays go to `arrays` under "prefix/key/...", JSON-able leaves to `scalars`."""
    for k, v in tree.items():
        name = f"{prefix}/{k}"
        if isinstance(v, dict):
            _flatten(v, name, arrays, scalars)
        elif isinstance(v, np.ndarray):
            arrays[name] = v
        elif isinstance(v, (np.integer, np.floating)):
            scalars[name] = v.item()
        else:
            scalars[name] = v


def _unflatten(flat: dict, prefix: str) -> dict:
    out: dict = {}
    for name, v in flat.items():
        if not name.startswith(prefix + "/"):
            continue
        *path, leaf = name[len(prefix) + 1:].split("/")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


# ----------------------------------------------------------------------------------------------
# saving


def save_checkpoint(path: str, *, params: dict, model_config: dict, optimizer_state: dict | None = None,
                    train_config: dict | None = None, tokenizer: dict | None = None, step: int = 0,
                    rng_state: dict | None = None, extra: dict | None = None) -> None:
    """Write one checkpoint file atomically.

    params          {state-dict name: array}        model_config  mmf.models.registry.config_to_dict(cfg)
    optimizer_state AdamW.state_dict() (nested dict of arrays and scalars)
    train_config    dataclasses.asdict(TrainConfig) tokenizer     tok.to_dict()
    step            optimizer steps done            rng_state     np.random.Generator.bit_generator.state
    extra           any JSON-able dict (e.g. the loss history so a resumed run keeps its curve)
    """
    _check_finite_params(path, params)
    remove_stale_temp_files(os.path.dirname(os.path.abspath(path)))   # leftovers of killed writers
    arrays: dict[str, np.ndarray] = {}
    scalars: dict = {}
    _flatten({"params": dict(params)}, "", arrays, scalars)
    if optimizer_state is not None:
        _flatten({"optimizer": optimizer_state}, "", arrays, scalars)
    arrays = {k.lstrip("/"): v for k, v in arrays.items()}
    scalars = {k.lstrip("/"): v for k, v in scalars.items()}

    entries, offset = [], 0
    digest = hashlib.sha256()
    tmp = temp_name(path)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            with zf.open("payload.bin", "w", force_zip64=True) as f:
                for name, a in arrays.items():
                    a = np.ascontiguousarray(a)
                    data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
                    f.write(data)
                    digest.update(data)
                    entries.append({"name": name, "dtype": a.dtype.str.replace(">", "<"),
                                    "shape": list(a.shape), "offset": offset, "nbytes": len(data)})
                    offset += len(data)
            header = {"magic": MAGIC, "format_version": FORMAT_VERSION, "model_config": model_config,
                      "train_config": train_config, "tokenizer": tokenizer, "step": int(step),
                      "rng_state": rng_state, "scalars": scalars, "extra": extra or {},
                      "arrays": entries, "payload_sha256": digest.hexdigest()}
            zf.writestr("header.json", json.dumps(header))
        with open(tmp, "rb+") as f:                       # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------
# loading


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    path: str
    model_config: dict
    params: dict                                      # {state-dict name: array}
    optimizer_state: dict | None
    train_config: dict | None
    tokenizer: dict | None
    step: int
    rng_state: dict | None
    extra: dict = field(default_factory=dict)

    @property
    def config(self):
        """The model config object (any registered architecture)."""
        from mmf.models.registry import config_from_dict
        try:
            return config_from_dict(self.model_config, where=f"{self.path}: model config")
        except (TypeError, ValueError) as e:
            raise CheckpointError(str(e)) from None

    @property
    def arch(self) -> str:
        return type(self.config).arch

    def build_model(self, backend: str = "numpy"):
        """The model this checkpoint holds (its architecture, weight format, dtype and parameters)."""
        from mmf.models.registry import build_model
        dtype = _params_dtype(self.path, self.params)
        model = build_model(self.config, dtype=dtype, backend=backend)
        missing = set(model.params) ^ set(self.params)
        if missing:
            raise CheckpointError(f"{self.path}: parameter names do not match the model config "
                                  f"(e.g. {sorted(missing)[:3]})")
        for k, v in self.params.items():
            if v.shape != model.params[k].shape:
                raise CheckpointError(f"{self.path}: parameter {k!r} has shape {v.shape}, but its model config "
                                      f"needs {model.params[k].shape}")
            model.params[k] = v
        return model

    def build_tokenizer(self):
        from mmf.text.tokenizer import tokenizer_from_dict
        if self.tokenizer is None:
            raise CheckpointError(f"{self.path}: this checkpoint holds no tokenizer")
        return tokenizer_from_dict(self.tokenizer)


def _params_dtype(path: str, params: dict):
    dtypes = {np.asarray(v).dtype for v in params.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise CheckpointError(f"{path}: parameters must all be float32 or all float64, got {sorted(map(str, dtypes))}")
    return next(iter(dtypes))


def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify a checkpoint; CheckpointError (a ValueError) names the file and the reason.
    The file is untrusted: its zip members, header and array table are checked before any array
    is read, so a small crafted file cannot demand gigabytes or fail with a bare KeyError."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path!r} is a directory; pass the checkpoint file in it "
                                f"(e.g. {os.path.join(path, 'ckpt.ckpt')!r})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if names != {"header.json", "payload.bin"} or len(zf.infolist()) != 2:
                raise CheckpointError(f"{path}: not an mmf checkpoint (zip members {sorted(names)})")
            _check_members(path, zf)
            header = json.loads(zf.read("header.json"))
            if not isinstance(header, dict) or header.get("magic") != MAGIC:
                raise CheckpointError(f"{path}: not an mmf checkpoint (no {MAGIC!r} magic in header)")
            version = header.get("format_version")
            if version not in READABLE_VERSIONS:
                raise CheckpointError(f"{path}: checkpoint format version {version!r}, but this code "
                                      f"reads versions {READABLE_VERSIONS}; re-create it with this version")
            _check_header(path, header, zf.getinfo("payload.bin").file_size)
            payload = zf.read("payload.bin")               # zipfile checks the member's CRC-32 here
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint file ({e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint header ({type(e).__name__}: {e})") from None
    except (EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise CheckpointError(f"{path}: truncated or unreadable checkpoint file ({e})") from None

    digest = hashlib.sha256(payload).hexdigest()
    if digest != header["payload_sha256"]:
        raise CheckpointError(f"{path}: corrupt checkpoint: payload sha256 {digest[:16]}... does not "
                              f"match the header's {header['payload_sha256'][:16]}...")
    arrays = {}
    for e in header["arrays"]:
        a = np.frombuffer(payload, dtype=np.dtype(e["dtype"]), count=int(np.prod(e["shape"], dtype=np.int64)),
                          offset=e["offset"])
        arrays[e["name"]] = a.reshape(e["shape"]).astype(a.dtype.newbyteorder("="))   # own, writable copy
    flat = {**arrays, **header["scalars"]}
    optimizer = _unflatten(flat, "optimizer") or None
    return Checkpoint(path=path, model_config=header["model_config"], params=_unflatten(flat, "params"),
                      optimizer_state=optimizer, train_config=header["train_config"],
                      tokenizer=header["tokenizer"], step=header["step"], rng_state=header["rng_state"],
                      extra=header.get("extra") or {})


# ----------------------------------------------------------------------------------------------
# validation of what is written and of what is read (files are untrusted)

MAX_HEADER_BYTES = 64 << 20                    # a header is a few KiB; refuse to inflate more
ARRAY_DTYPES = {"<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1"}
HEADER_FIELDS = {                              # key: allowed JSON types
    "magic": (str,), "format_version": (int,), "model_config": (dict,), "train_config": (dict, type(None)),
    "tokenizer": (dict, type(None)), "step": (int,), "rng_state": (dict, type(None)), "scalars": (dict,),
    "arrays": (list,), "payload_sha256": (str,)}


def _check_finite_params(path: str, params: dict) -> None:
    """A checkpoint never stores NaN/inf parameters: it would look loadable and sample garbage."""
    bad = [k for k, v in params.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
           and not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: refusing to save non-finite parameters ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); the run diverged")


def _check_members(path: str, zf: zipfile.ZipFile) -> None:
    """Stored (uncompressed) members no larger than the file itself: nothing can inflate."""
    size = os.path.getsize(path)
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: zip member {info.filename!r} is compressed (method "
                                  f"{info.compress_type}); mmf checkpoints store members uncompressed")
        if info.file_size != info.compress_size or info.file_size > size:
            raise CheckpointError(f"{path}: zip member {info.filename!r} claims {info.file_size:,} bytes "
                                  f"in a file of {size:,} bytes; truncated or crafted file")
    if zf.getinfo("header.json").file_size > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: header.json of {zf.getinfo('header.json').file_size:,} bytes is too large")


def _check_header(path: str, header: dict, payload_size: int) -> None:
    """Every key with its JSON type; every array entry consistent with its dtype, shape and the
    payload's real size (so reading it cannot run past the payload or allocate more than it holds)."""
    for key, types in HEADER_FIELDS.items():
        if key not in header:
            raise CheckpointError(f"{path}: corrupt header: key {key!r} is missing")
        if not isinstance(header[key], types) or isinstance(header[key], bool):
            raise CheckpointError(f"{path}: corrupt header: {key!r} is a {type(header[key]).__name__}, "
                                  f"expected {' or '.join(t.__name__ for t in types)}")
    if not isinstance(header.get("extra", {}), dict):
        raise CheckpointError(f"{path}: corrupt header: 'extra' must be a dict")
    if header["step"] < 0:
        raise CheckpointError(f"{path}: corrupt header: step {header['step']} < 0")
    end = 0
    names = set()
    for k, e in enumerate(header["arrays"]):
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise CheckpointError(f"{path}: corrupt header: array entry {k} must have exactly the keys "
                                  f"name, dtype, shape, offset, nbytes")
        name, dtype, shape = e["name"], e["dtype"], e["shape"]
        ints = [e["offset"], e["nbytes"], *(shape if isinstance(shape, list) else [None])]
        if (not isinstance(name, str) or not name.startswith(("params/", "optimizer/")) or name in names
                or dtype not in ARRAY_DTYPES or not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)):
            raise CheckpointError(f"{path}: corrupt header: array entry {k} ({str(name)[:60]!r}) has a bad "
                                  f"name, dtype, shape, offset or size")
        names.add(name)
        count = 1
        for v in shape:
            count *= v
        if count * np.dtype(dtype).itemsize != e["nbytes"] or e["offset"] != end:
            raise CheckpointError(f"{path}: corrupt header: array {name!r} of shape {shape} {dtype} does "
                                  f"not match its byte count {e['nbytes']} or offset {e['offset']}")
        end += e["nbytes"]
    if end != payload_size:
        raise CheckpointError(f"{path}: corrupt checkpoint: the arrays need {end:,} bytes but the payload "
                              f"holds {payload_size:,}")
    if set(header["scalars"]) and not all(isinstance(k, str) and k.startswith("optimizer/")
                                          for k in header["scalars"]):
        raise CheckpointError(f"{path}: corrupt header: scalars must be optimizer/... entries")
