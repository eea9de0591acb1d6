"""Training recipes: per data set, a small-image ViT config, its augmentation and its schedule.

``get_recipe(name, **overrides)`` returns one; ``keymodels train --recipe NAME`` runs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError, check_number, reject_unknown_fields, unknown_name
from ..registry import list_models
from .transforms import Augment

# The registered model families a recipe may train (image classifiers taking img_size,
# in_chans and num_classes overrides).
CLASSIFIER_FAMILIES = ("vit_*", "deit_*", "cct_*", "resnet*")


@dataclass
class Recipe:
    """Everything a training run needs besides the data location and the output folder."""

    name: str
    dataset: str  # one of keymodels.data.DATASETS
    model: str  # a registered model name (keymodels models)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"drop_path_rate": 0.1}
    img_size: int | None = None  # None: the model's; images are resized when it differs
    in_chans: int | None = None  # None: the data set's (1 grey, 3 colour)
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-5  # end of the cosine
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05  # AdamW, decoupled; never on norms, biases, embeddings
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max global grad norm; 0: off
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0: off
    augment: Augment = field(default_factory=Augment)
    workers: int = 0  # DataLoader worker processes (decoding image files wants 2 or more)
    val_fraction: float = 0.1  # share of the training data held out for validation
    val_size: int | None = None  # images held out for validation (precedence over val_fraction)
    train_subset: int | None = None  # few-data runs: a stratified subset of the training images
    teacher: str | None = None  # DeiT hard distillation from this run folder (keymodels.distill)
    tta: bool = False  # evaluate (validation, test, predict) on each image and its mirror
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = Augment(**self.augment)
        models = [m for p in CLASSIFIER_FAMILIES for m in list_models(p)]
        if self.model not in models:
            raise unknown_name("image-classification model", self.model, models)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.img_size is not None and self.img_size < 1:
            raise InvalidInputError(
                f"img_size must be >= 1 pixel (or None: the model's); got {self.img_size}"
            )
        # Checked here, not after training starts: a NaN or infinite lr only shows as a
        # non-finite loss at the first step, answered with a misleading resume hint.
        check_number("lr", self.lr, low=0.0, low_open=True)
        for name in ("min_lr", "warmup_epochs", "weight_decay", "clip_grad"):
            check_number(name, getattr(self, name), low=0.0)
        for name in ("label_smoothing", "ema"):
            check_number(name, getattr(self, name), low=0.0, high=1.0)
        check_number("val_fraction", self.val_fraction, low=0.0, high=1.0, low_open=True)
        for name in ("val_size", "train_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1 (or None); got {getattr(self, name)}")
        if self.tta and not self.augment.hflip:
            raise InvalidInputError(
                "tta averages each image with its mirror, but this recipe does not train on "
                "mirrored images (augment.hflip is off; mirroring changes digits and text): "
                "turn on hflip (--hflip) or leave tta off (--no-tta)"
            )
        if self.workers < 0:
            raise InvalidInputError(
                f"workers must be >= 0 (0: load in the main process); got {self.workers}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """The recipe of :meth:`to_dict`; an unknown key (here or in ``augment``) is an error."""
        reject_unknown_fields("recipe", d, (f.name for f in dataclasses.fields(cls)))
        augment = d.get("augment", {})
        if isinstance(augment, dict):
            fields = (f.name for f in dataclasses.fields(Augment))
            reject_unknown_fields("augment", augment, fields)
            augment = Augment(**augment)
        return cls(**{**d, "augment": augment})


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            # A CCT (convolutional tokenizer, sequence pooling) with light mixup: the best mean
            # validation accuracy of the configs tried (docs/training.md#digits). No crop: a
            # one-pixel shift of an 8×8 digit is a large distortion (96.7% vs 98.3%).
            name="digits", dataset="digits", model="cct_2_3x1_8",
            epochs=80, batch_size=64, lr=3e-3, warmup_epochs=3, weight_decay=0.05,
            augment=Augment(mixup=0.2),
        ),
        Recipe(
            # Sized to the 15-minute budget of a 2-core CPU with bf16 units (21 epochs × ~37 s in
            # bf16 + channels-last; ~2× longer without AVX512-BF16 or AMX). A CCT whose tokenizer
            # has four convs with BatchNorm and one transformer layer less than cct_4_3x2_28: the
            # best on validation of the configs tried (docs/training.md#fashion-mnist-in-15-minutes).
            name="fashion-mnist", dataset="fashion-mnist", model="cct_3_3x4bn_28",
            epochs=21, batch_size=128, lr=2e-3, warmup_epochs=0.5, val_size=5000,
            augment=Augment(hflip=True, random_erasing=0.25),
        ),
        Recipe(
            # The CNN teacher of DeiT distillation (--teacher): a CIFAR-style ResNet-10.
            name="fashion-mnist-teacher", dataset="fashion-mnist", model="resnet10_28",
            epochs=1, batch_size=128, lr=2e-3, warmup_epochs=0.3, augment=Augment(hflip=True),
            val_size=5000,
        ),
        Recipe(
            # Few data: 5,000 training images (500 a class), ~10 minutes on 2 CPU cores with
            # bf16 units (90 epochs × ~6 s, validation included).
            name="fashion-mnist-5000", dataset="fashion-mnist", model="cct_4_3x2_28",
            epochs=90, batch_size=128, lr=2e-3, warmup_epochs=2, train_subset=5000,
            augment=Augment(crop_padding=2, hflip=True, random_erasing=0.25), val_size=5000,
        ),
        Recipe(
            # The 15-minute recipe's model for 90 epochs (~1 h on 2 CPU cores with bf16 units at
            # ~40 s an epoch), Zhong et al.'s erasing probability, and mirror TTA: the best
            # validation accuracy of the configs tried (docs/training.md#fashion-mnist-longer-recipe).
            name="fashion-mnist-long", dataset="fashion-mnist", model="cct_3_3x4bn_28",
            epochs=90, batch_size=128, lr=1.5e-3, warmup_epochs=3, ema=0.9998, val_size=5000,
            model_overrides={"drop_path_rate": 0.1}, tta=True,
            augment=Augment(crop_padding=2, hflip=True, random_erasing=0.5),
        ),
        Recipe(
            name="mnist", dataset="mnist", model="vit_fmnist_patch4_28",
            epochs=10, batch_size=128, lr=2e-3, augment=Augment(crop_padding=2), val_size=5000,
        ),
        Recipe(
            name="cifar10", dataset="cifar10", model="vit_nano_patch4_32",
            epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, workers=2, val_size=5000,
            model_overrides={"drop_path_rate": 0.1},
            augment=Augment(crop_padding=4, hflip=True, auto_augment="trivial",
                            random_erasing=0.25, mixup=0.8, cutmix=1.0),
        ),
        Recipe(
            name="cifar100", dataset="cifar100", model="vit_nano_patch4_32",
            model_overrides={"num_classes": 100, "drop_path_rate": 0.1},
            epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, workers=2, val_size=5000,
            augment=Augment(crop_padding=4, hflip=True, auto_augment="trivial",
                            random_erasing=0.25, mixup=0.8, cutmix=1.0),
        ),
        Recipe(
            name="imagefolder", dataset="imagefolder", model="vit_nano_patch4_32",
            epochs=50, batch_size=64, lr=1e-3, warmup_epochs=3, workers=2,
            model_overrides={"drop_path_rate": 0.1},
            augment=Augment(random_resized_crop=0.35, hflip=True, auto_augment="trivial",
                            random_erasing=0.25),
        ),
    ]
}  # fmt: skip


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """The recipe called ``name`` with ``overrides`` (any :class:`Recipe` field; ``augment`` a dict)."""
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)
    d = RECIPES[name].to_dict()
    if isinstance(overrides.get("augment"), dict):
        overrides["augment"] = {**d["augment"], **overrides["augment"]}
    return Recipe.from_dict({**d, **overrides})
