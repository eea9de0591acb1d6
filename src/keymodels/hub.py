"""Save and load models like the Hugging Face Hub: a directory of config.json + model.safetensors.

``from_pretrained`` reads every keymodels family (``config.json``'s ``model_type``: a ViT or a
ResNet), transformers and timm ViT directories, and Hub repo ids through ``huggingface_hub`` (its
cache when offline). Loading never unpickles code.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointMismatchError, check_compatible
from .cnn import ResNet, ResNetConfig
from .convert import ConversionError, load_dir, read_weights
from .convert._common import as_compute_dtype
from .errors import InvalidInputError, KeymodelsError
from .layers import to_2tuple
from .pretrained import CONFIG_NAME, MODEL_TYPE, WEIGHTS_NAME, save_pretrained  # noqa: F401

# The keymodels families other than ViT (which keymodels.convert.load_dir reads): config.json's
# model_type -> (config class, model class).
FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    ResNetConfig.model_type: (ResNetConfig, ResNet)
}

log = logging.getLogger(__name__)


class HubError(KeymodelsError):
    """A repo id that cannot be resolved: not cached while offline, unknown, or unreachable."""


@dataclass
class LoadInfo:
    """What :func:`load_pretrained` found besides the weights."""

    source: str
    class_names: list[str] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    head_reinitialized: bool = False
    notes: list[str] = field(default_factory=list)


def _is_repo_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def resolve(
    dir_or_repo_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None
) -> Path:
    """A local directory holding config.json and the weights: the path itself, or the Hub
    snapshot of a repo id (downloaded when online, from the cache with ``HF_HUB_OFFLINE=1``)."""
    path = Path(dir_or_repo_id)
    if path.is_dir():
        return path
    name = str(dir_or_repo_id)
    if path.exists() or not _is_repo_id(name):
        raise InvalidInputError(
            f"{name} is neither a save_pretrained directory nor a Hub repo id ('owner/name')"
        )
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as e:
        raise HubError(
            f"loading the Hub repo {name!r} needs huggingface_hub: pip install 'keymodels[hub]'"
        ) from e
    offline = _offline()
    kw = dict(repo_id=name, revision=revision, cache_dir=cache_dir, local_files_only=offline)
    try:
        config = hf_hub_download(filename=CONFIG_NAME, **kw)
        for weights in (WEIGHTS_NAME, "pytorch_model.bin"):
            try:
                hf_hub_download(filename=weights, **kw)
                break
            except EntryNotFoundError:
                if weights != WEIGHTS_NAME:
                    raise
    except Exception as e:
        if offline:
            raise HubError(
                f"Hub repo {name!r} is not in the local cache and HF_HUB_OFFLINE=1 forbids "
                "downloading it; download it once with network access (e.g. `hf download "
                f"{name}`), unset HF_HUB_OFFLINE, or pass a local directory"
            ) from e
        raise HubError(
            f"{name!r} is no local directory, and fetching it from the Hugging Face Hub failed: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    return Path(config).parent


def _family_config(directory: Path) -> dict[str, Any] | None:
    """The config.json in ``directory`` when it is a keymodels family's other than ViT, else None
    (a ViT's, another library's, or an unreadable one, which ``load_dir`` reports)."""
    try:
        meta = json.loads((directory / CONFIG_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("model_type") in FAMILIES else None


def _load_family(directory: Path, meta: dict[str, Any]) -> tuple[nn.Module, LoadInfo]:
    """A non-ViT keymodels folder (a ResNet) -> the model holding exactly its weights, in float32."""
    config_class, model_class = FAMILIES[meta["model_type"]]
    if not isinstance(meta.get("config"), dict):
        raise InvalidInputError(
            f"{directory / CONFIG_NAME} has no 'config' object with the {config_class.__name__} "
            "fields"
        )
    config = config_class.from_dict(meta["config"])
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ConversionError(f"{directory} has no {WEIGHTS_NAME}")
    state = read_weights(weights)
    with torch.device("meta"):  # no init cost: every tensor is replaced below
        model = model_class(config)
    try:
        check_compatible(model, state, str(weights), f"Does {CONFIG_NAME} describe this model?")
    except CheckpointMismatchError as e:  # the error every folder's mis-shaped weights raise
        raise ConversionError(str(e)) from e
    model.load_state_dict(as_compute_dtype(state, "keymodels"), assign=True)
    info = LoadInfo(
        source=str(directory), class_names=meta.get("class_names"),
        preprocessing=meta.get("preprocessing") or {},
    )  # fmt: skip
    return model, info


def load_pretrained(
    dir_or_repo_id: str | os.PathLike,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> tuple[nn.Module, LoadInfo]:
    """:func:`from_pretrained`, also returning what else the directory holds (:class:`LoadInfo`)."""
    directory = resolve(dir_or_repo_id, revision, cache_dir)
    family = _family_config(directory)
    if family is not None:
        model, info = _load_family(directory, family)
        info.source = str(dir_or_repo_id)
        return _adapt(model, info, num_classes, img_size)
    model, report = load_dir(directory)  # keymodels ViT, transformers ViT or timm Hub folders
    info = LoadInfo(
        source=str(dir_or_repo_id), class_names=report.class_names,
        preprocessing=report.preprocessing, notes=report.notes,
    )  # fmt: skip
    return _adapt(model, info, num_classes, img_size)


def _adapt(
    model: nn.Module,
    info: LoadInfo,
    num_classes: int | None,
    img_size: int | tuple[int, int] | None,
) -> tuple[nn.Module, LoadInfo]:
    """A new head of ``num_classes`` and the input size ``img_size``, where they differ."""
    if num_classes is not None and num_classes != model.num_classes:
        message = (
            f"head re-initialised: the checkpoint has {model.num_classes} classes, "
            f"{num_classes} were asked for (train the new head before use)"
        )
        log.warning("%s", message)
        model.reset_classifier(num_classes)
        info.head_reinitialized, info.class_names = True, None
        info.notes.append(message)
    if img_size is not None and to_2tuple(img_size) != to_2tuple(model.config.img_size):
        model.set_input_size(img_size)
    return model.eval(), info


def from_pretrained(
    dir_or_repo_id: str | os.PathLike,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    """Load a model saved by :func:`save_pretrained` (a ViT or a ResNet), or a transformers /
    timm ViT directory.

    The weights are loaded in float32, the model's compute dtype, whatever dtype the file holds
    (fp16/bf16 weights are widened), so the model takes float32 batches; cast it with
    ``model.to(dtype)`` for half-precision inference.

    Args:
        dir_or_repo_id: a local directory, or a Hub repo id ``owner/name``.
        num_classes: a head of this size; if the checkpoint's differs, the head is
            re-initialised (zeros) and a warning is logged. None keeps the checkpoint's head.
        img_size: resample a ViT's position embeddings to this input size (a ResNet takes any
            size; its config records the new one).
        revision, cache_dir: passed to ``huggingface_hub`` for repo ids.
    """
    return load_pretrained(dir_or_repo_id, num_classes, img_size, revision, cache_dir)[0]


def load_for_inference(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Any keymodels image classifier (ViT or ResNet) on disk, in eval mode, with what
    predicting and evaluating need.

    Args:
        path: a ``keymodels train`` run folder or checkpoint, a :func:`save_pretrained` (or
            ``keymodels convert --to keymodels``) folder, or the ``model.safetensors`` in one.

    Returns:
        ``(model, info)`` with the keys of :func:`keymodels.runs.load_run`'s ``info``, plus
        ``missing``: what the folder does not record (``"class names"``, ``"mean/std"``). Then the
        classes are named by their index and mean/std are 0.5 (Hugging Face's default), with a
        warning; evaluating needs the real ones.
    """
    from .runs import load_run  # here: runs imports torchvision (keymodels.data)

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    is_pretrained = (folder / CONFIG_NAME).is_file() and (
        (path.is_dir() and (path / WEIGHTS_NAME).is_file()) or path.name == WEIGHTS_NAME
    )
    if not is_pretrained:
        model, info = load_run(path)
        return model, {**info, "missing": []}
    model, found = load_pretrained(folder)
    c = model.config
    missing = []
    class_names = found.class_names
    if not class_names:
        missing.append("class names")
        class_names = [str(i) for i in range(c.num_classes)]
    mean, std = found.preprocessing.get("mean"), found.preprocessing.get("std")
    if mean is None or std is None:
        missing.append("mean/std")
        mean, std = [0.5] * c.in_chans, [0.5] * c.in_chans
    if missing:
        log.warning(
            "%s records no %s; using %s (pass class_names= and preprocessing= to "
            "save_pretrained to record them)",
            folder / CONFIG_NAME,
            " or ".join(missing),
            " and ".join({"class names": "index names", "mean/std": "0.5"}[m] for m in missing),
        )
    info = {
        "class_names": list(class_names),
        "config": c.to_dict(),
        "mean": list(mean),
        "std": list(std),
        "img_size": list(to_2tuple(c.img_size)),
        "in_chans": c.in_chans,
        "recipe": {"tta": True} if found.preprocessing.get("tta") else {},  # as the run did
        "epoch": None,
        "val_acc": None,
        "test_acc": None,
        "eval_split": None,
        "data_dir": None,
        "checkpoint": str(folder / WEIGHTS_NAME),
        "missing": missing,
    }
    return model, info
