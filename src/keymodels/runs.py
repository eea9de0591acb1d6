"""Trained runs, for using them: load a run folder or checkpoint of either engine, predict top-k.

What the command line, the converters, ``explain`` and a web server need, without importing
training (``keymodels.train``, ``keymodels.seq2seq.train``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatchError,
    check_compatible,
    load_checkpoint,
    resolve_checkpoint,
)
from .data import ImageDecodeError, preprocess_images
from .errors import InvalidInputError
from .layers import to_2tuple
from .registry import create_model, list_models
from .rundir import checkpoint_meta, recorded_accuracies
from .runtime import optimize
from .seq2seq import build_model, model_config_from_dict
from .seq2seq.config import KIND as SEQ2SEQ_KIND
from .seq2seq.config import TrainConfig
from .seq2seq.model import Seq2Seq
from .seq2seq.subwords import SubwordVocabulary, vocab_from_dict
from .seq2seq.transformer import Transformer
from .seq2seq.vocab import Vocabulary
from .vit import VisionTransformer, ViTConfig

__all__ = [
    "LoadedRun",
    "evaluate",
    "load",
    "load_run",
    "load_seq2seq",
    "load_vit",
    "predict",
    "require_vit",
]

VIT_HINT = "Load it with the recipe and model it was trained with"

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained seq2seq model with its vocabularies, train config and checkpoint."""

    model: Seq2Seq | Transformer
    src_vocab: Vocabulary | SubwordVocabulary
    tgt_vocab: Vocabulary | SubwordVocabulary
    train_config: TrainConfig
    checkpoint: Checkpoint


def load_run(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Load an image classifier trained by ``keymodels train`` (a ViT, a ResNet, any registered
    family), in eval mode, with what is needed to use it.

    The model is built by the registry from the checkpoint's ``model_name`` and ``config``;
    checkpoints that record no (or no longer registered) ``model_name`` are ViTs.

    Args:
        path: a run folder (its best checkpoint, else last) or a checkpoint file.

    Returns:
        ``(model, info)``; ``info`` has ``class_names``, ``model_name`` (None for runs that did
        not record it), ``config`` (the model config's dict), the eval preprocessing ``mean``,
        ``std``, ``img_size`` [H, W], ``in_chans``, and ``recipe``, ``epoch``, ``val_acc``
        (this checkpoint's accuracy on the validation split, which chose the best checkpoint;
        None for runs from before the validation split), ``test_acc`` (its accuracy on the test
        split: from the run's ``results.json``, written once at the end with the best weights,
        or, for runs from before the validation split, the accuracy they recorded, which was the
        test split's; None when not known, e.g. a run still training), ``data_dir``,
        ``checkpoint``.

    Raises:
        CheckpointError: no such run, or not a trained classifier's checkpoint.
        CheckpointMismatchError: its weights do not fit the config it records.
        InvalidInputError: the recorded config is not valid for its model.
    """
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    meta = ckpt.meta
    if "config" not in meta or "class_names" not in meta:
        raise CheckpointError(
            f"{ckpt_path} is a keymodels checkpoint but not of a trained classifier"
        )
    name = meta.get("model_name")
    if name in list_models():
        model = create_model(name, **meta["config"])
    else:  # runs before model_name was recorded (all ViTs)
        model = VisionTransformer(ViTConfig.from_dict(meta["config"]))
    config = model.config
    check_compatible(model, ckpt.model, str(ckpt_path))
    model.load_state_dict(ckpt.model)
    model.eval()
    info = {
        "class_names": list(meta["class_names"]),
        "model_name": name,
        "config": config.to_dict(),
        "mean": meta["mean"],
        "std": meta["std"],
        "img_size": list(to_2tuple(config.img_size)),
        "in_chans": config.in_chans,
        "recipe": meta.get("recipe", {}),
        "epoch": meta.get("epoch"),
        **recorded_accuracies(ckpt_path, meta),  # "val_acc", "test_acc"
        "eval_split": meta.get("eval_split"),  # "val": a validation split picked the checkpoint
        "data_dir": meta.get("data_dir"),
        "checkpoint": str(ckpt_path),
    }
    return model, info


def load_vit(path: str | os.PathLike) -> tuple[VisionTransformer, dict[str, Any]]:
    """:func:`load_run` for what needs a Vision Transformer (attention maps, ViT converters).

    Raises:
        InvalidInputError: the run is of another family (a ResNet); use :func:`load_run`.
        (And :func:`load_run`'s errors.)
    """
    model, info = load_run(path)
    require_vit(model, info["checkpoint"], "load_vit (ViT conversion, attention maps)")
    return model, info


def require_vit(model: nn.Module, source: str, what: str = "this use") -> None:
    """Raise :class:`InvalidInputError` unless ``model`` is a ``VisionTransformer``.

    Args:
        model: the loaded model.
        source: where it came from (a checkpoint or folder), for the message.
        what: the ViT-only use, e.g. "attention explanation".
    """
    if not isinstance(model, VisionTransformer):
        raise InvalidInputError(
            f"{source} holds a {type(model).__name__}, not a Vision Transformer: {what} needs a "
            "ViT (attention, patch tokens); load other families with keymodels.runs.load_run"
        )


def load_seq2seq(path: str | os.PathLike) -> LoadedRun:
    """Rebuild a seq2seq model and its vocabularies from a checkpoint (file or run folder), in
    eval mode.

    Raises:
        CheckpointError: no such run, or another model's checkpoint.
        CheckpointMismatchError: the weights or vocabularies do not fit the recorded config.
    """
    ckpt = load_checkpoint(resolve_checkpoint(path, "keymodels seq2seq train"))
    if ckpt.meta.get("kind") != SEQ2SEQ_KIND:
        what = (
            "an image classifier's (use keymodels eval/predict)"
            if "class_names" in ckpt.meta
            else "another model's"
        )
        raise CheckpointError(
            f"{path} is not a seq2seq model's checkpoint but {what}; pass the folder or checkpoint "
            "of a `keymodels seq2seq train` run"
        )
    model = build_model(model_config_from_dict(ckpt.meta["config"]))
    src_vocab = vocab_from_dict(ckpt.meta["src_vocab"])
    tgt_vocab = vocab_from_dict(ckpt.meta["tgt_vocab"])
    check_vocabularies(model, src_vocab, tgt_vocab, str(path))
    check_compatible(model, ckpt.model, str(path))
    model.load_state_dict(ckpt.model)
    train_config = TrainConfig.from_dict(ckpt.meta["train_config"])
    return LoadedRun(model.eval(), src_vocab, tgt_vocab, train_config, ckpt)


def check_vocabularies(
    model: Seq2Seq | Transformer,
    src_vocab: Vocabulary | SubwordVocabulary,
    tgt_vocab: Vocabulary | SubwordVocabulary,
    source: str,
) -> None:
    """Raise :class:`CheckpointMismatchError` when a vocabulary's size is not the model's."""
    for side, vocab, size in (
        ("source", src_vocab, model.config.src_vocab_size),
        ("target", tgt_vocab, model.config.tgt_vocab_size),
    ):
        if len(vocab) != size:
            raise CheckpointMismatchError(
                f"{source}: the {side} vocabulary has {len(vocab)} tokens but the model expects "
                f"{size}"
            )


def load(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]] | LoadedRun:
    """Load the run of either engine: :func:`load_seq2seq`'s LoadedRun for a seq2seq run, else
    :func:`load_run`'s ``(model, info)`` (an image classifier of any family)."""
    meta = checkpoint_meta(resolve_checkpoint(path)) or {}
    return load_seq2seq(path) if meta.get("kind") == SEQ2SEQ_KIND else load_run(path)


def predict(
    run: str | os.PathLike | tuple[nn.Module, dict[str, Any]],
    images: list[str | Path],
    top_k: int = 3,
    precision: str = "auto",
    compile: str = "auto",
    on_error: str = "fail",
    tta: bool | None = None,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file.

    Args:
        run: an image classifier's run folder or checkpoint (a ViT, a ResNet), or the
            ``(model, info)`` of :func:`load_run` (a server loads once and predicts many times).
        images: image files of any size and mode, preprocessed as in evaluation.
        top_k: how many classes per image (fewer if the model has fewer).
        precision, compile: the inference fast path (see :func:`keymodels.runtime.optimize`).
        on_error: an image file that cannot be read (missing, corrupt, not an image): "fail"
            (the default) raises the error naming it; "skip" logs it as a warning and leaves it
            out of the result.
        tta: average each image's logits with its mirror's (:class:`MirrorTTA`); None (the
            default): as the run's recipe evaluated (``recipe.tta``).

    Returns:
        One ``{"image": path, "top": [{"class": name, "prob": p}, ...]}`` per image read.

    Raises:
        ImageDecodeError: an image file cannot be read and ``on_error`` is "fail".
        InvalidInputError: ``on_error`` is neither "fail" nor "skip"; with "skip", none of the
            images could be read; the model's outputs are NaN or infinite (broken weights).
    """
    if on_error not in ("fail", "skip"):
        raise InvalidInputError(f"on_error must be 'fail' or 'skip'; got {on_error!r}")
    model, info = run if isinstance(run, tuple) else load_run(run)
    images, x = _read_images(images, info, on_error)
    tta = run_tta(info) if tta is None else tta
    fast = optimize(with_tta(model, tta), precision, compile, x, expected_items=len(x))
    with torch.inference_mode():
        probs = fast(x).softmax(-1)
    check_finite_outputs(probs, info["checkpoint"])
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        {
            "image": str(path),
            "top": [
                {"class": info["class_names"][int(i)], "prob": float(p)}
                for p, i in zip(top.values[n], top.indices[n])
            ],
        }
        for n, path in enumerate(images)
    ]


def _read_images(
    images: list[str | Path], info: dict[str, Any], on_error: str
) -> tuple[list[str | Path], torch.Tensor]:
    """The images that could be read and their model input; see :func:`predict`'s ``on_error``."""
    if on_error == "fail":
        return list(images), preprocess_images(images, info)
    kept, inputs, errors = [], [], []
    for path in images:
        try:
            inputs.append(preprocess_images(path, info))
        except ImageDecodeError as e:
            errors.append(e)
            continue
        kept.append(path)
    if not kept:  # one error, naming the first file, rather than a warning per file and an error
        raise InvalidInputError(
            f"none of the {len(images)} image file(s) could be read; the first: {errors[0]}"
        ) from errors[0]
    for e in errors:
        log.warning("skipping unreadable image: %s", e)
    return kept, torch.cat(inputs)


def check_finite_outputs(probs: torch.Tensor, checkpoint: str) -> None:
    """Refuse NaN or infinite model outputs, which would print as "nan%" predictions."""
    bad = int((~torch.isfinite(probs)).any(-1).sum())
    if bad:
        raise InvalidInputError(
            f"the model in {checkpoint} gives NaN or infinite outputs for {bad} of {len(probs)} "
            "image(s): its weights are broken (a diverged run or a damaged file); use an earlier "
            "checkpoint or train again"
        )


class MirrorTTA(nn.Module):
    """Test-time augmentation: the mean of a classifier's logits for each image and its mirror.

    Averaging logits gives the normalized geometric mean of the two probability vectors. Only
    for classes that mirroring keeps (clothes, photos), i.e. models trained with ``hflip``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # The wrapper reports the model's mode (evaluate() restores the mode it finds); not
        # train(), which would also set every submodule, a frozen BatchNorm among them.
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mirror_mean(self.model(x), self.model(x.flip(-1)))


def mirror_mean(logits: torch.Tensor, mirror_logits: torch.Tensor) -> torch.Tensor:
    """The test-time average of :class:`MirrorTTA`, for callers that have the image's logits
    already (the explorer gets them with its attention maps)."""
    return (logits.float() + mirror_logits.float()) / 2


def with_tta(model: nn.Module, tta: bool) -> nn.Module:
    """``model``, averaged over mirrored images when ``tta`` (a recipe's ``tta``)."""
    return MirrorTTA(model) if tta else model


def run_tta(info: dict[str, Any]) -> bool:
    """Whether the loaded run (``load_run``'s or ``load_for_inference``'s ``info``) evaluated
    each image with its mirror (``recipe.tta``)."""
    return bool((info.get("recipe") or {}).get("tta"))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device | str = "cpu",
    tta: bool = False,
) -> dict[str, Any]:
    """An image classifier (any family) on ``loader``'s batches of ``(images, labels, skipped)``: loss, accuracy,
    per-class accuracy and confusion matrix (rows: true, columns: predicted). ``tta``: the
    logits are :class:`MirrorTTA`'s."""
    model = with_tta(model, tta)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum, n, skipped = 0.0, 0, 0
    for images, labels, n_skipped in loader:
        skipped += n_skipped
        if not len(labels):
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        pred = logits.argmax(1)
        confusion += torch.bincount(
            (labels * num_classes + pred).cpu(), minlength=num_classes**2
        ).reshape(num_classes, num_classes)
        n += len(labels)
    model.train(was_training)
    per_class = confusion.diag().float() / confusion.sum(1).clamp_min(1).float()
    return {
        "loss": loss_sum / max(n, 1),
        "acc": float(confusion.diag().sum()) / max(n, 1),
        "per_class_acc": per_class.tolist(),
        "confusion": confusion.tolist(),
        "n": n,
        "skipped": skipped,
    }
