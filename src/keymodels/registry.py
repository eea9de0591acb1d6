"""The registry of named model configs: ``create_model(name, **overrides)`` builds any of them.

Each family (ViT, seq2seq) registers a config dataclass instance and the class that builds it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import InvalidInputError, reject_unknown_fields, unknown_name

_REGISTRY: dict[str, tuple[Any, Callable[[Any], nn.Module]]] = {}


def register_model(name: str, config: Any, builder: Callable[[Any], nn.Module]) -> None:
    """Register ``config`` (a dataclass instance) under ``name``; ``builder(config)`` builds it."""
    if name in _REGISTRY:
        raise InvalidInputError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = (config, builder)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"vit_*_patch16_224"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> Any:
    """The config registered as ``name``, with ``overrides`` applied (a new instance)."""
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY)
    config, _ = _REGISTRY[name]
    reject_unknown_fields(
        f"{name!r} config", overrides, (f.name for f in dataclasses.fields(config))
    )
    return dataclasses.replace(config, **overrides)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model registered as ``name``, e.g. ``create_model("vit_small_patch16_224", num_classes=10)``."""
    config = get_config(name, **overrides)
    return _REGISTRY[name][1](config)
