"""A small ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition"): the CNN
teacher for DeiT-style distillation of small-data ViTs (Touvron et al. 2021).

The model is torchvision's ``ResNet`` with ``BasicBlock``s, so module and parameter names are
torchvision's and ``resnet18`` weights load as they are. One option adapts it to small images:

- ``stem="cifar"``: a 3×3 stride-1 first convolution and no max-pool (He et al. 2016, §4.2, for
  CIFAR-10), so a 28×28 or 32×32 image reaches the last stage as 4×4 rather than 1×1.
- ``stem="imagenet"``: torchvision's 7×7 stride-2 convolution and 3×3 stride-2 max-pool.

``img_size`` is recorded for preprocessing and :meth:`ResNetConfig.macs`; the network itself
takes any input size (global average pooling before the head).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock
from torchvision.models.resnet import ResNet as TorchvisionResNet

from .errors import InvalidInputError, reject_unknown_fields
from .layers import to_2tuple
from .pretrained import save_pretrained
from .registry import register_model

STEMS = ("cifar", "imagenet")
WIDTHS = (64, 128, 256, 512)  # output channels of the four stages (BasicBlock: expansion 1)


@dataclass
class ResNetConfig:
    """Hyper-parameters of a BasicBlock ResNet; defaults are torchvision's ResNet-18 at 224."""

    model_type: ClassVar[str] = "keymodels_resnet"  # config.json's "model_type" (save_pretrained)

    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, forward gives the pooled features [B, 512]
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)  # blocks per stage: ResNet-18; (1,1,1,1): -10
    stem: str = "imagenet"  # "imagenet" (7×7/2 conv + max-pool) or "cifar" (3×3/1 conv, no pool)
    zero_init_residual: bool = False  # each block's last BN starts at 0 (Goyal et al. 2017)

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list):
            self.img_size = tuple(self.img_size)
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        size = to_2tuple(self.img_size)
        if not all(isinstance(s, int) and s >= 1 for s in size) or len(size) != 2:
            raise InvalidInputError(
                f"img_size must be a positive integer or [H, W]; got {self.img_size!r}"
            )
        if not isinstance(self.in_chans, int) or self.in_chans < 1:
            raise InvalidInputError(f"in_chans must be a positive integer; got {self.in_chans!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise InvalidInputError(
                f"num_classes must be an integer >= 0 (0: no head); got {self.num_classes!r}"
            )
        if (
            not isinstance(self.layers, tuple)
            or len(self.layers) != len(WIDTHS)
            or not all(isinstance(n, int) and n >= 1 for n in self.layers)
        ):
            raise InvalidInputError(
                f"layers must be {len(WIDTHS)} positive block counts, one per stage (ResNet-18: "
                f"(2, 2, 2, 2), ResNet-10: (1, 1, 1, 1)); got {self.layers!r}"
            )
        if self.stem not in STEMS:
            raise InvalidInputError(
                f"stem must be one of {STEMS} ('cifar' for 28-32 px images); got {self.stem!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(to_2tuple(self.img_size))
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResNetConfig:
        reject_unknown_fields("ResNet config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)

    def macs(self) -> int:
        """Multiply-accumulates of the convolutions and the head for one image at ``img_size``
        (GFLOPs ≈ 2 × MACs / 1e9; batch norms, ReLUs and pooling are not counted)."""
        h, w = to_2tuple(self.img_size)
        if self.stem == "cifar":  # 3×3, stride 1, padding 1: same size
            macs = h * w * 9 * self.in_chans * WIDTHS[0]
        else:  # 7×7, stride 2, padding 3; then the 3×3 stride-2 max-pool, padding 1
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            macs = h * w * 49 * self.in_chans * WIDTHS[0]
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        inplanes = WIDTHS[0]
        for stage, (planes, blocks) in enumerate(zip(WIDTHS, self.layers)):
            for b in range(blocks):
                stride = 2 if stage and not b else 1
                if stride == 2:  # 3×3 padding 1 and 1×1 padding 0 give the same size
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                macs += h * w * 9 * (inplanes * planes + planes * planes)
                if stride != 1 or inplanes != planes:  # the 1×1 projection shortcut
                    macs += h * w * inplanes * planes
                inplanes = planes
        return macs + WIDTHS[-1] * self.num_classes


class ResNet(TorchvisionResNet):
    """torchvision's BasicBlock ResNet with the small-image stem and a config.

    ``forward(images)`` [B, C, H, W] gives logits [B, num_classes]; ``forward_features`` the last
    stage's map [B, 512, H/s, W/s] (s = 8 with the cifar stem, 32 with the imagenet one).
    """

    def __init__(self, config: ResNetConfig | None = None, **overrides: Any) -> None:
        config = config or ResNetConfig()
        if overrides:
            config = ResNetConfig.from_dict({**dataclasses.asdict(config), **overrides})
        super().__init__(
            BasicBlock,
            list(config.layers),
            num_classes=max(config.num_classes, 1),
            zero_init_residual=config.zero_init_residual,
        )
        self.config = config
        self.num_classes = config.num_classes
        self.num_features = WIDTHS[-1]
        if config.stem == "cifar":
            self.conv1 = nn.Conv2d(config.in_chans, WIDTHS[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif config.in_chans != 3:
            self.conv1 = nn.Conv2d(config.in_chans, WIDTHS[0], 7, stride=2, padding=3, bias=False)
        # torchvision's init of conv1, redone for a replaced one
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if not config.num_classes:
            self.fc = nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> the last stage's feature map [B, 512, h, w]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map [B, 512, h, w] -> logits [B, num_classes] (pooled [B, 512] with
        ``pre_logits``)."""
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new (zero-initialised) head with ``num_classes`` outputs (0: none)."""
        self.config = ResNetConfig.from_dict({**self.config.to_dict(), "num_classes": num_classes})
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def set_input_size(self, img_size: int | tuple[int, int]) -> None:
        """Record a new input size: the weights fit any size (global average pooling)."""
        self.config = ResNetConfig.from_dict({**self.config.to_dict(), "img_size": img_size})

    def save_pretrained(self, directory: str, **kwargs: Any) -> Any:
        """Write config.json + model.safetensors (see ``keymodels.pretrained.save_pretrained``)."""
        return save_pretrained(self, directory, **kwargs)


def _register(name: str, **kwargs: Any) -> None:
    register_model(name, ResNetConfig(**kwargs), ResNet)


# torchvision's resnet18, exactly (its weights load as they are).
_register("resnet18_224")
# Small images, as distillation teachers for the small-data ViTs: 32×32 colour (CIFAR) and 28×28
# grey (MNIST, Fashion-MNIST), 10 classes, the CIFAR stem. ResNet-10 is ResNet-18 with one block
# per stage: 45% of the compute and parameters, for a CPU.
_SMALL = dict(stem="cifar", num_classes=10)
_register("resnet18_32", img_size=32, layers=(2, 2, 2, 2), **_SMALL)
_register("resnet10_32", img_size=32, layers=(1, 1, 1, 1), **_SMALL)
_register("resnet18_28", img_size=28, in_chans=1, layers=(2, 2, 2, 2), **_SMALL)
_register("resnet10_28", img_size=28, in_chans=1, layers=(1, 1, 1, 1), **_SMALL)
