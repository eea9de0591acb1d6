"""Lossless ViT weight conversion between keymodels, timm, Hugging Face, torchvision and Google JAX.

``load(src, "hf")`` reads a file or directory into a keymodels ``VisionTransformer``;
``save(model, dst, "torchvision")`` writes it out; ``convert(src, dst, "jax", "hf")`` does both.
One small module per format maps names and layouts; the config is read from the source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import InvalidInputError, unknown_name
from ..layers import to_2tuple
from ..pretrained import (
    CONFIG_NAME,
    MODEL_TYPE,
    WEIGHTS_NAME,
    save_pretrained,
    write_dir,
    write_weights,
)
from ..rundir import check_writable_output
from ..vit import VisionTransformer, ViTConfig
from . import hf, jax, timm, torchvision
from ._common import (
    ConversionError,
    ConversionReport,
    build,
    is_training_checkpoint,
    read_weights,
)

FORMATS = ("keymodels", "timm", "hf", "torchvision", "jax")
_NAMES = {
    "keymodels": "keymodels",
    "timm": "timm",
    "hf": "Hugging Face",
    "torchvision": "torchvision",
    "jax": "JAX .npz",
}

__all__ = [
    "FORMATS",
    "ConversionError",
    "ConversionReport",
    "build",
    "convert",
    "from_keymodels",
    "load",
    "load_dir",
    "read_weights",
    "save",
    "to_keymodels",
]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise unknown_name("weights format", fmt, FORMATS)


def to_keymodels(
    state: dict[str, Tensor],
    fmt: str,
    *,
    hf_config: dict[str, Any] | None = None,
    model: str | None = None,
    num_heads: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    **overrides: Any,
) -> tuple[VisionTransformer, ConversionReport]:
    """A state dict in format ``fmt`` -> a keymodels ``VisionTransformer`` (eval mode) and a report.

    Args:
        state: the source's tensors by name (for ``"jax"``, the ``.npz`` arrays as tensors).
        fmt: ``"timm"``, ``"hf"``, ``"torchvision"`` or ``"jax"`` (``"keymodels"`` = timm layout).
        hf_config: the ``config.json`` dict of a Hugging Face checkpoint (required for ``"hf"``).
        model: architecture name (registered, timm or torchvision) giving the head count for bare
            timm / torchvision state dicts.
        num_heads: the head count directly, instead of ``model``.
        img_size: resample the position embeddings to this input size.
        **overrides: ViTConfig fields the weights cannot show (``global_pool``, ``norm_eps``).
    """
    _check_format(fmt)
    if fmt in ("timm", "keymodels"):
        sd, config, notes = timm.to_keymodels(state, model, num_heads, **overrides)
    elif fmt == "torchvision":
        sd, config, notes = torchvision.to_keymodels(state, model, num_heads, **overrides)
    elif fmt == "hf":
        if hf_config is None:
            raise InvalidInputError("Hugging Face weights need their config.json (hf_config=)")
        sd, config, notes = hf.to_keymodels(state, hf_config)
    else:
        sd, config, notes = jax.to_keymodels(state)
    vit = build(config, sd, _NAMES[fmt])
    report = ConversionReport(_NAMES[fmt], "keymodels", len(sd), notes=notes)
    if img_size is not None and to_2tuple(img_size) != to_2tuple(config.img_size):
        old = vit.grid_size
        vit.set_input_size(img_size)
        report.notes.append(f"position embeddings resampled from a {old} to a {vit.grid_size} grid")
    report.config = vit.config.to_dict()
    if fmt == "hf":
        report.class_names = hf.class_names(hf_config, config.num_classes)
    return vit, report


def from_keymodels(
    model: VisionTransformer, fmt: str, class_names: list[str] | None = None
) -> dict[str, Tensor]:
    """A keymodels model's weights in format ``fmt`` (for ``"hf"``: use :func:`save`, which adds
    the config.json)."""
    _check_format(fmt)
    if fmt == "keymodels":  # every feature: the state dict as it is
        return {k: v.detach() for k, v in model.state_dict().items()}
    if not isinstance(model, VisionTransformer):
        raise ConversionError(
            f"a {type(model).__name__} is not a Vision Transformer: the {fmt} converter maps ViT "
            "weights only; save it with save_pretrained (keymodels format) or export to ONNX"
        )
    if fmt == "timm":
        return timm.from_keymodels(model)
    if fmt == "torchvision":
        return torchvision.from_keymodels(model)
    if fmt == "hf":
        return hf.from_keymodels(model, class_names)[0]
    return jax.from_keymodels(model)


def _hf_weights(directory: Path) -> dict[str, Tensor]:
    """The tensors of a Hugging Face directory: one or sharded safetensors, or a .bin file."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for name in files:
            state.update(read_weights(directory / name))
        return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return read_weights(directory / name)
    raise ConversionError(
        f"{directory} holds no model.safetensors or pytorch_model.bin; is it a save_pretrained directory?"
    )


def load(
    src: str | os.PathLike,
    fmt: str,
    *,
    model: str | None = None,
    num_heads: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    **overrides: Any,
) -> tuple[VisionTransformer, ConversionReport]:
    """Read weights in format ``fmt`` from a file or directory into a keymodels model.

    ``src`` is a ``.safetensors`` / ``.pth`` file (timm, torchvision), an ``.npz`` (jax), or a
    ``save_pretrained`` directory (hf, keymodels, and timm Hub directories with ``config.json``).
    See :func:`to_keymodels` for the other arguments.
    """
    _check_format(fmt)
    src = Path(src)
    if not src.exists():
        raise InvalidInputError(f"no file or directory at {src}")
    if fmt == "keymodels" and (
        is_training_checkpoint(src) or (src.is_dir() and not (src / "config.json").exists())
    ):
        from ..runs import load_vit  # here: runs imports torchvision (keymodels.data)

        vit, info = load_vit(src)  # a run folder or checkpoint of `keymodels train`
        report = ConversionReport("keymodels run", "keymodels", len(vit.state_dict()))
        report.config, report.class_names = vit.config.to_dict(), info["class_names"]
        report.preprocessing = {"mean": info["mean"], "std": info["std"]}
        report.notes.append(f"weights of {info['checkpoint']} (epoch {info.get('epoch')})")
        if (info.get("recipe") or {}).get("tta"):
            report.preprocessing["tta"] = True
            report.notes.append(
                "the run averaged each image with its mirror (tta): keymodels folders and ONNX "
                "metadata record it (preprocessing tta), other formats have no place for it"
            )
        if img_size is not None and to_2tuple(img_size) != to_2tuple(vit.config.img_size):
            vit.set_input_size(img_size)
            report.config = vit.config.to_dict()
        return vit, report
    if fmt == "keymodels" and src.is_dir():
        vit, report = load_dir(src)
        if img_size is not None and to_2tuple(img_size) != to_2tuple(vit.config.img_size):
            vit.set_input_size(img_size)
        report.config = vit.config.to_dict()
        return vit, report
    hf_config = None
    if src.is_dir():
        config_path = src / "config.json"
        if not config_path.is_file():
            raise ConversionError(
                f"{src} is a directory without config.json; pass the weights file"
            )
        hub_config = json.loads(config_path.read_text())
        if fmt == "hf":
            hf_config = hub_config
        elif fmt == "timm" and model is None:
            model = hub_config.get("architecture")  # timm's Hub config names the architecture
        state = _hf_weights(src)
    elif fmt == "hf":
        raise ConversionError(
            f"Hugging Face weights come as a directory with config.json, not {src}"
        )
    elif fmt == "jax":
        state = jax.read_npz(src)
    else:
        state = read_weights(src)
    vit, report = to_keymodels(
        state,
        fmt,
        hf_config=hf_config,
        model=model,
        num_heads=num_heads,
        img_size=img_size,
        **overrides,
    )
    processor = src / "preprocessor_config.json"
    if fmt == "hf" and processor.is_file():
        report.preprocessing = hf.preprocessing(json.loads(processor.read_text()))
    return vit, report


def load_dir(directory: str | os.PathLike) -> tuple[VisionTransformer, ConversionReport]:
    """A model folder with a ``config.json`` -> a keymodels model (eval mode) and a report.

    The folder is a keymodels one (:func:`keymodels.pretrained.save_pretrained`), a transformers
    ViT's or a timm Hub one; the report carries its class names and preprocessing where it
    records them.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise InvalidInputError(
            f"{directory} has no {CONFIG_NAME}; is it a save_pretrained directory?"
        )
    try:
        meta = json.loads(config_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{config_path} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise InvalidInputError(
            f"{config_path} holds a JSON {type(meta).__name__}, not the object of a model config"
        )
    if meta.get("model_type") == MODEL_TYPE:
        if not isinstance(meta.get("config"), dict):
            raise InvalidInputError(f"{config_path} has no 'config' object with the ViT fields")
        config = ViTConfig.from_dict(meta["config"])
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise ConversionError(f"{directory} has no {WEIGHTS_NAME}")
        vit = build(config, read_weights(weights), "keymodels")
        report = ConversionReport("keymodels", "keymodels", len(vit.state_dict()))
        report.class_names = meta.get("class_names")
        report.preprocessing = meta.get("preprocessing") or {}
    elif meta.get("model_type") == "vit":  # a transformers directory
        vit, report = load(directory, "hf")
    elif "architecture" in meta:  # a timm Hub directory
        vit, report = load(directory, "timm", model=meta["architecture"])
        report.preprocessing = meta.get("pretrained_cfg") or {}
    else:
        raise InvalidInputError(
            f"{config_path} is neither a keymodels, transformers ViT nor timm config "
            f"(model_type {meta.get('model_type')!r})"
        )
    report.config = vit.config.to_dict()
    return vit.eval(), report


def save(
    model: VisionTransformer,
    dst: str | os.PathLike,
    fmt: str,
    class_names: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> ConversionReport:
    """Write ``model`` in format ``fmt``: a weights file (timm, torchvision: ``.safetensors`` or
    ``.pth``; jax: ``.npz``) or a directory (hf, keymodels). Nothing is half-written.

    ``class_names`` and ``preprocessing`` (``mean``, ``std``) go where the format has a place
    for them: keymodels' config.json, transformers' ``id2label`` and ``preprocessor_config.json``.
    """
    _check_format(fmt)
    dst = Path(dst)
    n = len(model.state_dict())
    if fmt == "keymodels":
        save_pretrained(model, dst, class_names=class_names, preprocessing=preprocessing)
    elif fmt == "hf":
        state, hf_config = hf.from_keymodels(model, class_names)
        files = {
            "model.safetensors": lambda p: write_weights(p, state, {"format": "pt"}),
            "config.json": lambda p: p.write_text(json.dumps(hf_config, indent=2) + "\n"),
        }
        processor = hf.image_processor(model, preprocessing or {})
        if processor:
            files["preprocessor_config.json"] = lambda p: p.write_text(
                json.dumps(processor, indent=2)
            )
        write_dir(dst, files)
    elif fmt == "jax":
        if dst.suffix != ".npz":
            raise InvalidInputError(f"JAX weights are written as .npz; got {dst}")
        jax.write_npz(dst, jax.from_keymodels(model))
    else:
        write_weights(dst, from_keymodels(model, fmt))
    report = ConversionReport("keymodels", _NAMES[fmt], n)
    report.config = model.config.to_dict()
    if fmt in ("timm", "torchvision", "jax") and model.config.norm_eps != 1e-6:
        report.notes.append(
            f"{_NAMES[fmt]} models use LayerNorm eps 1e-6; this one has {model.config.norm_eps:g}, "
            "so logits there can differ slightly (build the target with the same eps to avoid it)"
        )
    return report


# The files that the directory formats write into DST (save_pretrained layouts).
_DIR_FILES = {
    "keymodels": ("config.json", "model.safetensors"),
    "hf": ("config.json", "model.safetensors", "preprocessor_config.json"),
}


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    from_format: str,
    to_format: str,
    *,
    model: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    class_names: list[str] | None = None,
    force: bool = False,
    **overrides: Any,
) -> ConversionReport:
    """Read ``src`` in ``from_format`` and write ``dst`` in ``to_format``; returns what was mapped.

    An existing ``dst`` file, or the files a directory format writes already in a ``dst`` folder
    (e.g. the user's own ``config.json``), are replaced only with ``force``.
    """
    check_writable_output(dst, force, names=_DIR_FILES.get(to_format), what="destination")
    vit, report = load(src, from_format, model=model, img_size=img_size, **overrides)
    names = class_names or report.class_names
    out = save(vit, dst, to_format, class_names=names, preprocessing=report.preprocessing)
    report.target, report.notes = out.target, report.notes + out.notes
    return report
