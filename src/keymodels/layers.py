"""Small building blocks shared by the model families: MLP, DropPath, LayerScale, patch embedding.

Also the resampling of learned position embeddings when the patch grid changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvalidInputError


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    if len(x) != 2:
        raise InvalidInputError(f"expected an int or a (height, width) pair; got {x!r}")
    return (int(x[0]), int(x[1]))


class Mlp(nn.Module):
    """The transformer's feed-forward block: Linear, GELU, Linear (timm's ``Mlp`` layout)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch for whole samples."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerScale(nn.Module):
    """Per-channel scaling of a residual branch (Touvron et al. 2021, CaiT), timm's ``gamma``."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to ``embed_dim``.

    A strided convolution is the same as flattening each P×P patch and applying one Linear.
    Input [B, C, H, W] -> tokens [B, N, D] (or [B, gh, gw, D] with ``flatten=False``).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        for side, ps in zip(self.img_size, self.patch_size):
            if side % ps:
                raise InvalidInputError(
                    f"image size {self.img_size} is not divisible by patch size {self.patch_size}; "
                    "choose an image size that is a multiple of the patch size"
                )
        self.grid_size = (
            self.img_size[0] // self.patch_size[0],
            self.img_size[1] // self.patch_size[1],
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )

    def dynamic_grid(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid (gh, gw) for an input of ``img_size``; errors name the problem."""
        H, W = img_size
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise InvalidInputError(
                f"input of {H}×{W} pixels is not divisible by patch size {ph}×{pw}; "
                f"resize or crop it to a multiple of the patch size (e.g. {H // ph * ph}×{W // pw * pw})"
            )
        return H // ph, W // pw

    def check_input(self, x: Tensor) -> tuple[int, int]:
        """The patch grid (gh, gw) of images ``x``; errors name what is wrong with them."""
        if x.dim() != 4:
            raise InvalidInputError(f"images must be [B, C, H, W]; got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise InvalidInputError(
                f"expected {self.in_chans} image channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if self.strict_img_size and tuple(x.shape[2:]) != self.img_size:
            raise InvalidInputError(
                f"expected {self.img_size[0]}×{self.img_size[1]} images, got {x.shape[2]}×{x.shape[3]}; "
                "resize the input, or build the model with dynamic_img_size=True (any size divisible "
                "by the patch size) or img_size= that size"
            )
        return self.dynamic_grid(tuple(x.shape[2:]))

    def forward(self, x: Tensor, flatten: bool = True) -> Tensor:
        self.check_input(x)
        x = self.proj(x)  # [B, D, gh, gw]
        return x.flatten(2).transpose(1, 2) if flatten else x.permute(0, 2, 3, 1)


def resample_abs_pos_embed(
    pos_embed: Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resample learned position embeddings [1, prefix + gh·gw, D] to a new patch grid.

    Same arithmetic as timm's ``resample_abs_pos_embed`` (bicubic, antialiased), so models
    resized here and in timm agree; prefix (class) tokens are kept as they are.
    """
    n = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(n)
        if side * side != n:
            raise InvalidInputError(
                f"cannot infer the old grid of {n} position embeddings; pass old_size=(gh, gw)"
            )
        old_size = (side, side)
    if old_size[0] * old_size[1] != n:
        raise InvalidInputError(f"old grid {old_size} does not hold the {n} position embeddings")
    new_size = to_2tuple(new_size)
    if tuple(old_size) == new_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim, dtype = grid.shape[-1], grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1)


# -- stems for small data: each is a PatchEmbed with another ``proj`` (same grid, same interface) --


class ConvStem(PatchEmbed):
    """Convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See Better").

    log2(P) 3×3 stride-2 convolutions (no bias, BatchNorm, ReLU) with channels doubling up to
    ``embed_dim``, then a 1×1 convolution to ``embed_dim``: the same P×-downsampled token grid as
    the patchify stem, but the overlapping small kernels give the optimiser an easier start.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, strict_img_size)
        n = power_of_two_layers(patch_size, "conv")
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(n):
            c_out = max(embed_dim >> (n - 1 - i), 1)  # ..., D/4, D/2, D
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


class CCTTokenizer(PatchEmbed):
    """The Compact Convolutional Transformer's tokenizer (Hassani et al. 2021, ``Tokenizer``).

    n stages of Conv 3×3 (stride 1, padding 1, no bias), ReLU, then MaxPool 3×3 (stride 2,
    padding 1); the paper's has one conv a stage, channels in_chans -> 64 -> ... -> 64 ->
    embed_dim, so the grid is img / 2ⁿ (P = 2ⁿ here). ``stages`` gives each stage's conv
    channels instead (the last one embed_dim), and ``norm`` puts BatchNorm after every conv.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 256,
        strict_img_size: bool = True,
        stages: Sequence[Sequence[int]] = (),
        norm: bool = False,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, strict_img_size)
        n = power_of_two_layers(patch_size, "cct")
        stages = stages or cct_stages(n, embed_dim)
        layers: list[nn.Module] = []
        c_in = in_chans
        for stage in stages:
            for c_out in stage:
                layers.append(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False))
                if norm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU())
                c_in = c_out
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.proj = nn.Sequential(*layers)
        for m in self.proj:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)  # as CCT's Tokenizer.init_weight


def cct_stages(n: int, embed_dim: int) -> tuple[tuple[int, ...], ...]:
    """The paper's tokenizer: n stages of one conv each, 64 channels, the last embed_dim."""
    return (*((64,) for _ in range(n - 1)), (embed_dim,))


class ShiftedPatchTokenization(PatchEmbed):
    """Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size Datasets").

    The image and its four diagonal shifts by half a patch (zero-filled, F.pad then crop, as the
    authors' code; not a roll, which would wrap the far edge in) are stacked on the channels,
    cut into P×P patches, flattened as (p1 p2 c), layer-normed and projected to ``embed_dim``:
    each token sees a wider receptive field than its own patch.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        strict_img_size: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, strict_img_size)
        if patch_size < 2:
            raise InvalidInputError(
                "the 'spt' stem shifts by half a patch: patch_size must be >= 2"
            )
        self.shift = patch_size // 2
        dim = 5 * in_chans * patch_size * patch_size
        self.proj = nn.Identity()  # no patchify convolution; the layers below do its work
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.linear = nn.Linear(dim, embed_dim)

    def shifted(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, 5C, H, W]: x, then shifted to left-up, right-up, left-down, right-down."""
        s = self.shift
        pad = F.pad(x, (s, s, s, s))
        lu = pad[:, :, : -2 * s, : -2 * s]
        ru = pad[:, :, : -2 * s, 2 * s :]
        lb = pad[:, :, 2 * s :, : -2 * s]
        rb = pad[:, :, 2 * s :, 2 * s :]
        return torch.cat([x, lu, ru, lb, rb], dim=1)

    def forward(self, x: Tensor, flatten: bool = True) -> Tensor:
        gh, gw = self.check_input(x)
        x = self.shifted(x)
        B, C5 = x.shape[:2]
        p = self.patch_size[0]
        # b c (h p1) (w p2) -> b (h w) (p1 p2 c), the authors' Rearrange
        x = x.reshape(B, C5, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, -1)
        x = self.linear(self.norm(x))  # [B, gh·gw, D]
        return x if flatten else x.reshape(B, gh, gw, -1)


def power_of_two_layers(patch_size: int, stem: str) -> int:
    """n for a stem of n stride-2 stages: patch_size must be 2ⁿ (n >= 1)."""
    n = patch_size.bit_length() - 1
    if patch_size < 2 or patch_size != 1 << n:
        raise InvalidInputError(
            f"the {stem!r} stem halves the image in each of its layers, so patch_size must be a "
            f"power of two >= 2 (2**layers); got {patch_size}"
        )
    return n


class SeqPool(nn.Module):
    """Sequence pooling (Hassani et al. 2021): softmax(Linear(x)) over tokens, weighted sum.

    x: [B, N, D] -> pooled [B, D]; :meth:`weights` gives the pooling weights [B, N].
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)

    def weights(self, x: Tensor) -> Tensor:
        return self.attention_pool(x).squeeze(-1).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return (self.weights(x).unsqueeze(1) @ x).squeeze(1)
