"""Image transforms for training and evaluation (torchvision.transforms.v2), and batch mixing.

Evaluation and prediction share :func:`eval_transform`, so any image is converted as in training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from ..errors import InvalidInputError
from ..layers import to_2tuple
from .images import load_image, to_mode


@dataclass
class Augment:
    """Training augmentation; the defaults are none at all."""

    crop_padding: int = 0  # random crop of img_size after padding each side (translation)
    random_resized_crop: float = 0.0  # > 0: RandomResizedCrop with scale (this, 1) instead
    hflip: bool = False  # mirror images: right for clothes and photos, wrong for digits
    auto_augment: str = ""  # "", "trivial" (TrivialAugmentWide) or "randaugment"
    random_erasing: float = 0.0  # probability of erasing a random rectangle (after normalizing)
    mixup: float = 0.0  # Beta(α, α) of MixUp; 0: off
    cutmix: float = 0.0  # Beta(α, α) of CutMix; 0: off (with both on, one is chosen per batch)

    def __post_init__(self) -> None:
        if self.auto_augment not in ("", "trivial", "randaugment"):
            raise InvalidInputError(
                f"auto_augment must be '', 'trivial' or 'randaugment'; got {self.auto_augment!r}"
            )
        if not 0.0 <= self.random_erasing <= 1.0 or not 0.0 <= self.random_resized_crop < 1.0:
            raise InvalidInputError(
                "random_erasing must be in [0, 1], random_resized_crop in [0, 1)"
            )
        for name in ("crop_padding", "mixup", "cutmix"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise InvalidInputError(f"{name} must be >= 0 (0: off); got {getattr(self, name)}")


def train_transform(
    augment: Augment,
    img_size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    resize: bool = False,
) -> v2.Compose:
    """Per-image training transform: uint8 tensor or PIL image -> normalized float ``[C, H, W]``."""
    size = to_2tuple(img_size)
    steps: list[Any] = [v2.ToImage()]
    if augment.random_resized_crop > 0:
        steps.append(v2.RandomResizedCrop(size, scale=(augment.random_resized_crop, 1.0)))
    else:
        if resize:
            steps += [v2.Resize(min(size), antialias=True), v2.CenterCrop(size)]
        if augment.crop_padding:
            steps.append(v2.RandomCrop(size, padding=augment.crop_padding))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.auto_augment == "trivial":
        steps.append(v2.TrivialAugmentWide())
    elif augment.auto_augment == "randaugment":
        steps.append(v2.RandAugment())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment.random_erasing:
        steps.append(v2.RandomErasing(p=augment.random_erasing, value=0))
    return v2.Compose(steps)


def eval_transform(
    img_size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    resize: bool = False,
) -> v2.Compose:
    """Deterministic transform: (resize shorter side + center crop,) scale to [0, 1], normalize:
    the training transform without augmentation, so the two cannot drift apart."""
    return train_transform(Augment(), img_size, mean, std, resize)


class BatchTransform:
    """:func:`train_transform` (or :func:`eval_transform`) on a whole uint8 batch at once.

    The same steps in the same order (padded random crop, mirror, scale + normalize, random
    erasing), each image drawing its own offsets, flip and rectangle from the same
    distributions as torchvision's per-image transforms. For 28×28 images the per-image Python
    calls cost about a tenth of a training step; one call per batch costs ~1%. Built by
    :func:`keymodels.data.datasets.dataset_transform` where it applies; also takes one
    ``[C, H, W]`` image.
    """

    # torchvision's RandomErasing defaults: area share, aspect-ratio range, tries per image
    ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10

    def __init__(self, augment: Augment, mean: Sequence[float], std: Sequence[float]) -> None:
        self.augment = augment
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim == 3:
            return self(images.unsqueeze(0))[0]
        if self.augment.crop_padding:
            images = self._crop(images, self.augment.crop_padding)
        if self.augment.hflip:
            flip = torch.rand(len(images)) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        x = (images.float() / 255.0 - self.mean) / self.std
        if self.augment.random_erasing:
            x = x * ~self._erase_mask(x.shape, self.augment.random_erasing)
        return x

    @staticmethod
    def _crop(images: Tensor, pad: int) -> Tensor:
        """RandomCrop(size, padding=pad): zero padding, then a uniform offset per image."""
        b, _, h, w = images.shape
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        top = torch.randint(0, 2 * pad + 1, (b, 1, 1))
        left = torch.randint(0, 2 * pad + 1, (b, 1, 1))
        rows = (top + torch.arange(h).view(1, h, 1)).expand(b, h, w)
        cols = (left + torch.arange(w).view(1, 1, w)).expand(b, h, w)
        batch = torch.arange(b).view(b, 1, 1).expand(b, h, w)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()

    def _erase_mask(self, shape: torch.Size, p: float) -> Tensor:
        """RandomErasing(p, value=0)'s rectangles as a mask ``[B, 1, H, W]``: per image, with
        probability p, the first of 10 drawn (area, aspect ratio) pairs that fits."""
        b, _, h, w = shape
        tries = self.ERASE_TRIES
        area = h * w * torch.empty(b, tries).uniform_(*self.ERASE_SCALE)
        log_ratio = torch.empty(b, tries).uniform_(*(math.log(r) for r in self.ERASE_RATIO))
        ratio = log_ratio.exp()
        eh = (area * ratio).sqrt().round().long()
        ew = (area / ratio).sqrt().round().long()
        fits = (eh < h) & (ew < w)
        first = fits.long().argmax(1, keepdim=True)  # the first try that fits (0 if none does)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        erase = (torch.rand(b) < p) & fits.any(1)
        top = (torch.rand(b) * (h - eh + 1)).long()
        left = (torch.rand(b) * (w - ew + 1)).long()
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        inside_y = (ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1))
        inside_x = (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1))
        return (inside_y & inside_x & erase.view(-1, 1, 1)).unsqueeze(1)


def batch_mix(augment: Augment, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix on whole batches ``(images, labels) -> (images, soft labels [B, K])``."""
    mixes = []
    if augment.mixup > 0:
        mixes.append(v2.MixUp(alpha=augment.mixup, num_classes=num_classes))
    if augment.cutmix > 0:
        mixes.append(v2.CutMix(alpha=augment.cutmix, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def mean_std(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images ``[N, C, H, W]`` scaled to [0, 1]."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1)
    mean = torch.zeros(x.shape[0], dtype=torch.float64)
    sq = torch.zeros_like(mean)
    for chunk in x.split(1 << 22, dim=1):  # float64 sums without a full float copy in memory
        c = chunk.double() / 255.0
        mean += c.sum(1)
        sq += (c * c).sum(1)
    n = x.shape[1]
    mean /= n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def preprocess_images(
    images: Sequence[str | os.PathLike | Image.Image] | str | os.PathLike | Image.Image,
    info: dict[str, Any],
) -> Tensor:
    """Image files or PIL images of any size and mode -> the model's input ``[B, C, H, W]``.

    Exactly the evaluation preprocessing: decoded safely (EXIF, CMYK, palette, 16-bit, alpha),
    converted to ``info["in_chans"]`` channels, resized + center-cropped to ``info["img_size"]``,
    normalized with ``info["mean"]``/``info["std"]`` (as returned by ``keymodels.runs.load_vit``).
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    mode = "L" if info["in_chans"] == 1 else "RGB"
    transform = eval_transform(info["img_size"], info["mean"], info["std"], resize=True)
    out = []
    for im in images:
        im = to_mode(im, mode) if isinstance(im, Image.Image) else load_image(im, mode)
        out.append(transform(im))
    if not out:
        raise InvalidInputError("preprocess_images needs at least one image")
    return torch.stack(out)
