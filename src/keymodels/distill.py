"""Hard-label distillation (Touvron et al. 2021, DeiT): a trained teacher's predictions train the
student's distillation token, ``L = ½·CE(z_cls, y) + ½·CE(z_dist, argmax z_teacher)``.

The teacher is any image classifier trained by keymodels (a run folder or checkpoint).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvalidInputError
from .layers import to_2tuple

__all__ = ["Teacher", "distillation_loss", "load_teacher", "require_distilled", "same_teacher"]


def require_distilled(config: Any, model_name: str) -> None:
    """Raise :class:`InvalidInputError` unless the model has a distillation token to train."""
    if not getattr(config, "distilled", False):
        raise InvalidInputError(
            f"distillation needs a model with a distillation token; {model_name!r} has none. "
            "Train a distilled model (keymodels models 'deit_*distilled*', e.g. "
            "--model deit_fmnist_distilled_patch4_28) or leave out --teacher"
        )


class Teacher(nn.Module):
    """A frozen classifier that labels the student's (augmented, mixed) batch with its argmax.

    The student's images arrive normalized with the student's mean/std; they are mapped to the
    teacher's own normalization first, ``x_t = (x_s·σ_s + μ_s − μ_t) / σ_t``, so a teacher
    trained on the same data with other statistics sees what it was trained on.
    """

    def __init__(
        self, model: nn.Module, student_mean: list[float], student_std: list[float],
        teacher_mean: list[float], teacher_std: list[float],
    ) -> None:  # fmt: skip
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        m_s, s_s, m_t, s_t = (
            torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
            for v in (student_mean, student_std, teacher_mean, teacher_std)
        )
        self.register_buffer("scale", s_s / s_t, persistent=False)
        self.register_buffer("shift", (m_s - m_t) / s_t, persistent=False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # always eval: dropout off, norms frozen

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Student-normalized images [B, C, H, W] -> the teacher's class indices [B]."""
        return self.model(images * self.scale + self.shift).argmax(dim=-1)


def distillation_loss(
    logits: tuple[Tensor, Tensor], targets: Tensor, teacher_labels: Tensor, label_smoothing: float
) -> Tensor:
    """DeiT's hard distillation: the class head learns the (smoothed, maybe mixed) labels, the
    distillation head the teacher's argmax, with equal weight."""
    cls_logits, dist_logits = logits
    cls_loss = F.cross_entropy(cls_logits.float(), targets, label_smoothing=label_smoothing)
    return 0.5 * cls_loss + 0.5 * F.cross_entropy(dist_logits.float(), teacher_labels)


def load_teacher(
    path: str | os.PathLike,
    *,
    class_names: list[str],
    in_chans: int,
    img_size: int | tuple[int, int],
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher run at ``path``, checked against the student's data and input.

    Args:
        path: a run folder of ``keymodels train`` (its best checkpoint) or a checkpoint file.
        class_names, in_chans, img_size: the student's; the teacher must have the same.

    Returns:
        ``(model, info)`` as :func:`keymodels.runs.load_run`; wrap the model in :class:`Teacher`
        with the student's normalization.

    Raises:
        InvalidInputError: the teacher has another number (or naming) of classes, another input
            size or another number of channels (the message names both).
        CheckpointError: no trained classifier at ``path``.
    """
    from .runs import load_run  # runs imports the model families; keep this module light

    model, info = load_run(path)
    src = info["checkpoint"]
    theirs, ours = info["class_names"], list(class_names)
    if len(theirs) != len(ours):
        raise InvalidInputError(
            f"teacher {src} predicts {len(theirs)} classes but the student's data has "
            f"{len(ours)}; train the teacher on the same data set (keymodels train --out TEACHER)"
        )
    if theirs != ours:
        raise InvalidInputError(
            f"teacher {src} was trained on classes {theirs}, the student's data has {ours}; "
            "train the teacher on the same data set"
        )
    if list(info["img_size"]) != list(to_2tuple(img_size)) or info["in_chans"] != in_chans:
        raise InvalidInputError(
            f"teacher {src} takes {info['in_chans']}×{info['img_size'][0]}×{info['img_size'][1]} "
            f"images but the student {in_chans}×{to_2tuple(img_size)[0]}×{to_2tuple(img_size)[1]};"
            " train the teacher at the student's input size (--img-size)"
        )
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    info["sha256"] = digest.hexdigest()  # of the weights: a resume checks it is the same teacher
    return model, info


def same_teacher(recorded: dict[str, Any] | None, info: dict[str, Any], source: str) -> None:
    """Raise :class:`InvalidInputError` unless the teacher ``info`` is the one a run recorded.

    A resumed run must distil from the teacher it started with: the teacher folder's best
    checkpoint may have changed since (resumed, retrained), which would make the resume inexact.
    """
    if recorded is None:
        raise InvalidInputError(
            f"{source} was trained without a teacher; resume it without --teacher (recipe.teacher)"
        )
    if recorded.get("sha256") != info["sha256"]:
        raise InvalidInputError(
            f"the teacher at {info['checkpoint']} (epoch {info['epoch']}) is not the one {source} "
            f"started with ({recorded.get('checkpoint')}, epoch {recorded.get('epoch')}): its "
            "weights changed; resume with the original teacher, or train a new run in another --out"
        )
