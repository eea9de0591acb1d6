"""The keymodels model folder (config.json + model.safetensors) and writing weight files safely.

It imports no model, so that ``VisionTransformer.save_pretrained`` (``keymodels.vit``),
``ResNet.save_pretrained`` (``keymodels.cnn``), the hub and the converters all write through it
without importing each other. ``config.json``'s ``model_type`` names the family: a config class
may set its own (``ResNetConfig.model_type``); ViTs are ``keymodels_vit``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from .checkpoint import atomic_write, temp_beside
from .errors import InvalidInputError
from .layers import to_2tuple

if TYPE_CHECKING:
    from torch import nn

MODEL_TYPE = "keymodels_vit"  # a ViT's; other families' configs carry their own model_type
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def write_weights(
    path: str | os.PathLike, state: dict[str, Tensor], metadata: dict | None = None
) -> Path:
    """Atomically write ``state`` as ``.safetensors`` (or ``.pt``/``.pth`` by ``torch.save``)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    if path.suffix in (".pt", ".pth", ".bin"):
        return atomic_write(path, lambda tmp: torch.save(state, tmp))
    raise InvalidInputError(
        f"cannot write weights to {path}: use a .safetensors (recommended) or .pth file name"
    )


def write_dir(directory: str | os.PathLike, files: dict[str, Callable[[Path], Any]]) -> Path:
    """Write ``files`` (name -> ``write(path)``) into ``directory`` with nothing half-written.

    A new directory is filled under a temporary name and renamed into place; into an existing
    one, each file is written to a temporary name and renamed over the old one.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidInputError(f"{directory} exists and is not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(directory, directory=True)  # the usual permissions, unlike mkdtemp's
    try:
        for name, write in files.items():
            write(tmp / name)
        if directory.exists():
            for name in files:
                os.replace(tmp / name, directory / name)
            tmp.rmdir()
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    class_names: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` (config, class names, preprocessing) and ``model.safetensors``.

    Args:
        model: the model to save: a keymodels model with a ``config`` (``to_dict``,
            ``img_size``, ``in_chans``, ``num_classes``), a ViT or a ResNet.
        directory: created if missing; files are written under temporary names and renamed.
        class_names: one name per output class, in order.
        preprocessing: how inputs were prepared, e.g. ``{"mean": [...], "std": [...]}``;
            ``input_size`` [C, H, W] is always recorded.
    """
    from . import __version__  # here: the package imports this module while it initialises

    c = model.config
    if class_names is not None and len(class_names) != c.num_classes:
        raise InvalidInputError(
            f"{len(class_names)} class names given for a model with {c.num_classes} classes"
        )
    h, w = to_2tuple(c.img_size)
    config = {
        "model_type": getattr(c, "model_type", MODEL_TYPE),
        "keymodels_version": __version__,
        "config": c.to_dict(),
        "class_names": list(class_names) if class_names is not None else None,
        "preprocessing": {"input_size": [c.in_chans, h, w], **(preprocessing or {})},
    }
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return write_dir(
        directory,
        {
            WEIGHTS_NAME: lambda p: write_weights(p, state, {"format": "pt"}),
            CONFIG_NAME: lambda p: p.write_text(json.dumps(config, indent=2) + "\n"),
        },
    )
