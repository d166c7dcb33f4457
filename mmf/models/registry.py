"""The architectures mmf can build, by name: one place that maps a checkpoint's `arch` string to its
config and model classes, so every tool (training, sampling, the engine, the accelerator model)
reads a model the same way.

A config is stored as `{"arch": name, **dataclasses.asdict(config)}`; its `weights` field
('ternary', 'binary' or 'float') says how every BitLinear quantizes. `config_to_dict` and
`config_from_dict` are the only two functions that know this layout.
"""
from __future__ import annotations

import dataclasses

from mmf.models.config import MMfreeConfig
from mmf.models.mmfree import MMfreeLM
from mmf.models.transformer import TransformerLM
from mmf.models.transformer_config import TransformerConfig

# name -> (config class, model class); later architectures register themselves here
ARCHITECTURES: dict[str, tuple[type, type]] = {
    "mmfree": (MMfreeConfig, MMfreeLM),
    "transformer": (TransformerConfig, TransformerLM),
}


def register(config_cls, model_cls):
    """Add an architecture; its config class names it with the class attribute `arch`."""
    ARCHITECTURES[config_cls.arch] = (config_cls, model_cls)


def check_arch(arch, where: str = "") -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"{where + ': ' if where else ''}unknown architecture {arch!r}; "
                         f"known: {', '.join(sorted(ARCHITECTURES))}")
    return arch


def config_to_dict(config) -> dict:
    """{"arch": ..., every config field}: what checkpoints store."""
    return {"arch": type(config).arch, **dataclasses.asdict(config)}


def config_from_dict(d: dict, where: str = "model config"):
    """The config object for a stored dict. A dict without "arch" is a format-1 checkpoint's, which
    only ever held the MatMul-free LM with ternary weights (fields it lacks take their defaults)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict of config fields, got {type(d).__name__}")
    d = dict(d)
    arch = check_arch(d.pop("arch", "mmfree"), where)
    config_cls = ARCHITECTURES[arch][0]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: {config_cls.__name__} has no field(s) {unknown}; "
                         f"its fields are {sorted(known)}")
    try:
        return config_cls(**d)
    except TypeError as e:                                   # a missing required field
        raise ValueError(f"{where}: cannot build {config_cls.__name__}: {e}") from None


def build_model(config, **kwargs):
    """A fresh model of the config's architecture (kwargs: seed, dtype, backend, fused)."""
    for config_cls, model_cls in ARCHITECTURES.values():
        if type(config) is config_cls:
            return model_cls(config, **kwargs)
    raise TypeError(f"no registered architecture has config class {type(config).__name__}")


def require(model, tool: str, supported: set[tuple[str, str]]):
    """Refuse a model a tool cannot run, naming the (arch, weights) pair and what the tool supports."""
    pair = (type(model.config).arch, model.config.weights)
    if pair not in supported:
        ok = ", ".join(f"arch={a!r} weights={w!r}" for a, w in sorted(supported))
        raise ValueError(f"{tool} cannot run arch={pair[0]!r} weights={pair[1]!r}; it supports {ok} "
                         "(see the README's table of which tool runs which model)")
    return model
