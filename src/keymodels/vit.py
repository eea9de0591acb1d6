"""The Vision Transformer (Dosovitskiy et al. 2021): image patches as tokens, attention over them.

Module and parameter names follow timm's ``VisionTransformer``, so timm ``vit_*`` weights load as they are.

Options for small data sets, all off by default (then the model is timm's):

- ``stem="conv"``: convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers
  See Better").
- ``stem="cct"`` + ``global_pool="seq"``: Compact Convolutional Transformer (Hassani et al. 2021,
  "Escaping the Big Data Paradigm with Compact Transformers"): conv tokenizer, sequence pooling.
- ``stem="spt"`` + ``lsa=True``: Shifted Patch Tokenization and Locality Self-Attention (Lee et
  al. 2021, "Vision Transformer for Small-Size Datasets").
- ``distilled=True``: DeiT's distillation token and head (Touvron et al. 2021), timm's
  ``VisionTransformerDistilled`` layout.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .attention import MultiHeadAttention
from .errors import InvalidInputError, reject_unknown_fields
from .layers import (
    CCTTokenizer,
    ConvStem,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbed,
    SeqPool,
    ShiftedPatchTokenization,
    cct_stages,
    resample_abs_pos_embed,
    to_2tuple,
)
from .pretrained import save_pretrained
from .registry import register_model

POOLS = ("token", "avg", "seq", "")
STEMS = {
    "patch": PatchEmbed,
    "conv": ConvStem,
    "cct": CCTTokenizer,
    "spt": ShiftedPatchTokenization,
}


@dataclass
class ViTConfig:
    """Hyper-parameters of a Vision Transformer; defaults are ViT-B/16 at 224 (the paper's base)."""

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    # "token" (class token), "avg" (mean of patch tokens), "seq" (CCT's sequence pooling), "" (none)
    global_pool: str = "token"
    fc_norm: bool | None = (
        None  # norm after pooling instead of before; None: True for "avg", as timm
    )
    init_values: float | None = None  # LayerScale init; None: no LayerScale
    pre_logits_size: int | None = None  # Linear + tanh before the head, as the original JAX models
    norm_eps: float = 1e-6
    drop_rate: float = 0.0  # before the head
    pos_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing with depth
    dynamic_img_size: bool = False  # accept any input size divisible by the patch size
    # "patch" (ViT), "conv" (Xiao et al.), "cct" (CCT tokenizer), "spt" (shifted patches); the
    # conv and cct stems have log2(patch_size) stride-2 stages, so their grid is img / patch_size.
    stem: str = "patch"
    # stem="cct" only: each max-pool stage's conv channels (log2(patch_size) stages, the last
    # channel embed_dim); empty: the paper's one conv a stage, C -> 64 ... 64 -> embed_dim.
    tokenizer_stages: tuple[tuple[int, ...], ...] = ()
    tokenizer_norm: bool = False  # stem="cct" only: BatchNorm after each conv (not in the paper)
    lsa: bool = False  # locality self-attention: learned temperature, no self-attention diagonal
    distilled: bool = False  # DeiT distillation token after the class token, and head_dist

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list):
            self.img_size = tuple(self.img_size)
        try:  # from JSON: lists
            self.tokenizer_stages = tuple(tuple(stage) for stage in self.tokenizer_stages)
        except TypeError:
            raise InvalidInputError(
                "tokenizer_stages is one tuple of conv channels per max-pool stage, e.g. "
                f"((32,), (64, 128)); got {self.tokenizer_stages!r}"
            ) from None
        h, w = to_2tuple(self.img_size)
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer; got {value!r}")
        if self.num_classes < 0:
            raise InvalidInputError(
                f"num_classes must be >= 0 (0: no head); got {self.num_classes}"
            )
        if h % self.patch_size or w % self.patch_size:
            raise InvalidInputError(
                f"img_size {h}×{w} is not divisible by patch_size {self.patch_size}; "
                f"use e.g. img_size={h // self.patch_size * self.patch_size or self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise InvalidInputError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                "each head gets embed_dim // num_heads channels"
            )
        if self.global_pool not in POOLS:
            raise InvalidInputError(f"global_pool must be one of {POOLS}; got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise InvalidInputError(
                "global_pool='token' needs class_token=True; use global_pool='avg' without a class token"
            )
        if self.stem not in STEMS:
            raise InvalidInputError(f"stem must be one of {tuple(STEMS)}; got {self.stem!r}")
        if self.stem in ("conv", "cct"):
            n = self.patch_size.bit_length() - 1
            if self.patch_size < 2 or self.patch_size != 1 << n:
                raise InvalidInputError(
                    f"stem={self.stem!r} halves the image in each of its log2(patch_size) layers: "
                    f"patch_size must be 2**layers (2, 4, 8, ...); got {self.patch_size}"
                )
        if (self.tokenizer_stages or self.tokenizer_norm) and self.stem != "cct":
            raise InvalidInputError(
                "tokenizer_stages and tokenizer_norm configure the CCT tokenizer: they need "
                f"stem='cct'; got stem={self.stem!r}"
            )
        if self.tokenizer_stages:  # stem "cct" here: n is the power-of-two check's, above
            stages = self.tokenizer_stages
            if len(stages) != n or not all(stages):
                raise InvalidInputError(
                    f"tokenizer_stages needs {n} non-empty stage(s), one per halving of the image "
                    f"(patch_size {self.patch_size} = 2**{n}); got {stages}"
                )
            if any(not isinstance(c, int) or c < 1 for stage in stages for c in stage):
                raise InvalidInputError(
                    f"tokenizer_stages holds conv channel counts (positive integers); got {stages}"
                )
            if stages[-1][-1] != self.embed_dim:
                raise InvalidInputError(
                    f"the last conv of tokenizer_stages gives the tokens: it needs embed_dim "
                    f"({self.embed_dim}) channels; got {stages[-1][-1]} in {stages}"
                )
        if self.stem == "spt" and self.patch_size < 2:
            raise InvalidInputError("stem='spt' shifts by half a patch: patch_size must be >= 2")
        if self.global_pool == "seq" and self.class_token:
            raise InvalidInputError(
                "global_pool='seq' pools all tokens itself (CCT has no class token); "
                "use class_token=False, or global_pool='token' to read the class token"
            )
        if self.distilled and (not self.class_token or self.global_pool != "token"):
            raise InvalidInputError(
                "distilled=True reads the class and distillation tokens: it needs "
                f"class_token=True and global_pool='token'; got class_token={self.class_token}, "
                f"global_pool={self.global_pool!r}"
            )
        if self.distilled and (self.pre_logits_size or self.fc_norm):
            raise InvalidInputError(
                "distilled=True has no pre-logits layer and no fc_norm (as DeiT): its two heads "
                "read the normed class and distillation tokens"
            )
        if self.lsa and h * w // self.patch_size**2 + self.num_prefix_tokens < 2:
            raise InvalidInputError(
                "lsa=True masks each token's attention to itself, so it needs at least 2 tokens; "
                "use a larger image or smaller patches"
            )
        for name in (
            "drop_rate",
            "pos_drop_rate",
            "attn_drop_rate",
            "proj_drop_rate",
            "drop_path_rate",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1); got {getattr(self, name)}")

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = to_2tuple(self.img_size)
        return h // self.patch_size, w // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distilled)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(to_2tuple(self.img_size))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        reject_unknown_fields("ViT config", d, (f.name for f in dataclasses.fields(cls)))
        return cls(**d)

    def macs(self) -> int:
        """Multiply-accumulates for one image at ``img_size`` (GFLOPs ≈ 2 × MACs / 1e9)."""
        gh, gw = self.grid_size
        D, N = self.embed_dim, gh * gw + self.num_prefix_tokens
        hidden = int(D * self.mlp_ratio)
        block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * hidden
        head_in = self.pre_logits_size or D
        head = (
            D * self.pre_logits_size if self.pre_logits_size else 0
        ) + head_in * self.num_classes * (1 + int(self.distilled))
        if self.global_pool == "seq":
            head += 2 * (N * D)  # the pooling scores Linear(D, 1), then the weighted sum
        return self._stem_macs() + self.depth * block + head

    def _stem_macs(self) -> int:
        gh, gw = self.grid_size
        P, C, D = self.patch_size, self.in_chans, self.embed_dim
        if self.stem == "patch":
            return gh * gw * P * P * C * D
        if self.stem == "spt":
            return gh * gw * 5 * C * P * P * D
        h, w = to_2tuple(self.img_size)
        n = P.bit_length() - 1
        macs = 0
        if self.stem == "conv":  # stride 2: each conv's output is half its input
            channels = [C] + [max(D >> (n - 1 - i), 1) for i in range(n)]
            for i in range(n):
                h, w = h // 2, w // 2
                macs += h * w * 9 * channels[i] * channels[i + 1]
            return macs + gh * gw * channels[-1] * D
        c_in = C  # "cct": stride-1 convs, then a max-pool each stage
        for stage in self.tokenizer_stages or cct_stages(n, D):
            for c_out in stage:
                macs += h * w * 9 * c_in * c_out
                c_in = c_out
            h, w = h // 2, w // 2
        return macs


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        lsa: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop, lsa)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B, N, D] -> ([B, N, D], per-head weights [B, H, N, N] or None)."""
        out, weights = self.attn(self.norm1(x), need_weights=need_weights)
        x = x + self.drop_path1(self.ls1(out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


class VisionTransformer(nn.Module):
    """ViT: patch embedding, class token, learned position embeddings, pre-norm blocks, head.

    ``forward(images)`` gives logits; ``forward_attention(images)`` also gives every block's
    per-head attention weights from the same forward pass.
    """

    def __init__(self, config: ViTConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = config or ViTConfig()
        if overrides:
            config = ViTConfig.from_dict({**dataclasses.asdict(config), **overrides})
        self.config = config
        D = self.embed_dim = self.num_features = config.embed_dim
        self.num_classes = config.num_classes
        self.global_pool = config.global_pool
        self.num_prefix_tokens = config.num_prefix_tokens
        self.dynamic_img_size = config.dynamic_img_size

        tokenizer = (
            {"stages": config.tokenizer_stages, "norm": config.tokenizer_norm}
            if config.stem == "cct"
            else {}
        )
        self.patch_embed = STEMS[config.stem](
            config.img_size,
            config.patch_size,
            config.in_chans,
            D,
            strict_img_size=not config.dynamic_img_size,
            **tokenizer,
        )
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if config.class_token else None
        # DeiT: a second prefix token, trained to match a teacher's prediction.
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if config.distilled else None
        self.distilled_training = False  # as timm: set_distilled_training() to get both heads
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, D))
        self.pos_drop = nn.Dropout(config.pos_drop_rate)

        # Stochastic depth grows linearly with depth, as in timm (plain floats work on meta tensors).
        dpr = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(
            Block(
                D,
                config.num_heads,
                config.mlp_ratio,
                config.qkv_bias,
                config.init_values,
                config.proj_drop_rate,
                config.attn_drop_rate,
                dpr[i],
                config.norm_eps,
                config.lsa,
            )
            for i in range(config.depth)
        )
        use_fc_norm = config.global_pool == "avg" if config.fc_norm is None else config.fc_norm
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(D, eps=config.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=config.norm_eps) if use_fc_norm else nn.Identity()
        if config.pre_logits_size:
            fc = nn.Linear(D, config.pre_logits_size)
            self.pre_logits = nn.Sequential(OrderedDict(fc=fc, act=nn.Tanh()))
            self.num_features = config.pre_logits_size
        else:
            self.pre_logits = nn.Identity()
        # CCT's sequence pooling: learned weights over the tokens, after the final norm.
        self.attn_pool = SeqPool(D) if config.global_pool == "seq" else None
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = (
            nn.Linear(self.num_features, config.num_classes)
            if config.num_classes
            else nn.Identity()
        )
        if config.distilled:
            self.head_dist = (
                nn.Linear(D, config.num_classes) if config.num_classes else nn.Identity()
            )

        self.init_weights()
        self._register_load_state_dict_pre_hook(self._resample_pos_embed_on_load)

    def init_weights(self) -> None:
        """As the reference implementations: truncated normal (std .02), zero biases, zero head."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)  # as timm's VisionTransformerDistilled
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if name in ("head", "head_dist"):
                    nn.init.zeros_(m.weight)
                else:
                    trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None

    # -- input size ---------------------------------------------------------------------------

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def set_input_size(self, img_size: int | tuple[int, int]) -> None:
        """Change the native input size, resampling the position embeddings to the new grid."""
        config = dataclasses.replace(self.config, img_size=to_2tuple(img_size))
        old = self.patch_embed.grid_size
        self.patch_embed.img_size = to_2tuple(img_size)
        self.patch_embed.grid_size = new = config.grid_size
        self.patch_embed.num_patches = new[0] * new[1]
        with torch.no_grad():
            pe = resample_abs_pos_embed(self.pos_embed, new, old, self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(pe)
        self.config = config

    def _resample_pos_embed_on_load(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Weights trained at another resolution load by resampling their position grid, as timm
        # does in its checkpoint filter; anything else that differs is left to load_state_dict.
        key = prefix + "pos_embed"
        pe = state_dict.get(key)
        if pe is None or pe.shape == self.pos_embed.shape or pe.dim() != 3:
            return
        if pe.shape[-1] != self.pos_embed.shape[-1]:
            return
        state_dict[key] = resample_abs_pos_embed(pe, self.grid_size, None, self.num_prefix_tokens)

    # -- forward -------------------------------------------------------------------------------

    def _embed(self, images: Tensor) -> Tensor:
        """Images [B, C, H, W] -> tokens with class token and position embedding [B, N, D]."""
        x = self.patch_embed(images)  # [B, gh·gw, D], a view of the conv output (no copy)
        grid = self.patch_embed.dynamic_grid(tuple(images.shape[-2:]))
        pos_embed = self.pos_embed
        if grid != self.grid_size:
            pos_embed = resample_abs_pos_embed(
                pos_embed, grid, self.grid_size, self.num_prefix_tokens
            )
        prefix = [
            t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None
        ]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        return self.pos_drop(x + pos_embed)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] -> normalized tokens [B, N, D]."""
        x = self._embed(x)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens [B, N, D] -> logits [B, num_classes] (or the pooled features with ``pre_logits``).

        A distilled model gives (class logits, distillation logits) in training mode with
        ``distilled_training`` on, else their mean (as timm's ``VisionTransformerDistilled``).
        """
        if self.dist_token is not None:
            x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
            if pre_logits:
                return (x + x_dist) / 2
            x, x_dist = self.head(x), self.head_dist(x_dist)
            if self.distilled_training and self.training:
                return x, x_dist
            return (x + x_dist) / 2
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        elif self.global_pool == "seq":
            x = self.attn_pool(x)
        x = self.pre_logits(self.fc_norm(x))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def set_distilled_training(self, enable: bool = True) -> None:
        """Distilled models: in training mode, return (class logits, distillation logits)."""
        self.distilled_training = enable

    def readout(self, tokens: Tensor) -> Tensor:
        """How the head pools the final tokens [B, N, D] (after ``norm``): weights [B, N].

        "token": the class token's one-hot row; distilled: the mean of the class and
        distillation tokens (the head averages their logits); "avg": 1/N on every patch token;
        "seq": the sequence-pooling softmax; "" (no pooling): the class token if there is one,
        else the patch mean. Attention maps (``keymodels.explain``) are read out with it.
        """
        B, N, _ = tokens.shape
        if self.global_pool == "seq":
            return self.attn_pool.weights(tokens)
        q = tokens.new_zeros(B, N)
        if self.num_prefix_tokens and self.global_pool != "avg":
            q[:, : self.num_prefix_tokens] = 1.0 / self.num_prefix_tokens
        else:
            q[:, self.num_prefix_tokens :] = 1.0 / (N - self.num_prefix_tokens)
        return q

    def forward_attention(
        self, x: Tensor, return_readout: bool = False
    ) -> tuple[Tensor, list[Tensor]] | tuple[Tensor, list[Tensor], Tensor]:
        """Logits and every block's per-head attention weights, [B, H, N, N] each, in one pass.

        The weights stay in the autograd graph, so gradients with respect to them can be taken.
        With ``return_readout`` also the head's pooling weights over the tokens [B, N]
        (:meth:`readout`).
        """
        x = self._embed(x)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            attentions.append(weights)
        x = self.norm(x)
        logits = self.forward_head(x)
        if return_readout:
            return logits, attentions, self.readout(x)
        return logits, attentions

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (zero-initialised) head with ``num_classes`` outputs."""
        if global_pool is not None:
            ViTConfig.from_dict({**dataclasses.asdict(self.config), "global_pool": global_pool})
            if (global_pool == "seq") != (self.attn_pool is not None):
                raise InvalidInputError(
                    "reset_classifier cannot switch to or from global_pool='seq'"
                )
            self.config = dataclasses.replace(self.config, global_pool=global_pool)
            self.global_pool = global_pool
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if self.dist_token is not None:
            self.head_dist = (
                nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()
            )
            if num_classes:
                nn.init.zeros_(self.head_dist.weight)
                nn.init.zeros_(self.head_dist.bias)

    def save_pretrained(self, directory: str, **kwargs: Any) -> Any:
        """Write config.json + model.safetensors (see ``keymodels.pretrained.save_pretrained``)."""
        return save_pretrained(self, directory, **kwargs)


def _register(name: str, **kwargs: Any) -> None:
    register_model(name, ViTConfig(**kwargs), VisionTransformer)


# The paper's sizes (Dosovitskiy et al. 2021; Ti and S from DeiT, Touvron et al. 2021).
_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
}
for _size, _patches in {
    "tiny": (16,),
    "small": (16, 32),
    "base": (16, 32),
    "large": (16, 32),
    "huge": (14, 16),
}.items():
    for _p in _patches:
        _register(f"vit_{_size}_patch{_p}_224", patch_size=_p, **_SIZES[_size])

# Small images, sized to train on a laptop CPU: 28×28 grey (MNIST, Fashion-MNIST), 32×32 colour
# (CIFAR) and 8×8 grey (scikit-learn digits).
_NANO = dict(embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0)
_register(
    "vit_tiny_patch4_28", img_size=28, patch_size=4, in_chans=1, num_classes=10, **_SIZES["tiny"]
)
_register("vit_tiny_patch4_32", img_size=32, patch_size=4, num_classes=10, **_SIZES["tiny"])
_register("vit_nano_patch4_28", img_size=28, patch_size=4, in_chans=1, num_classes=10, **_NANO)
_register("vit_nano_patch4_32", img_size=32, patch_size=4, num_classes=10, **_NANO)
_register("vit_nano_patch2_8", img_size=8, patch_size=2, in_chans=1, num_classes=10, **_NANO)

# The recipes' models (keymodels.data.recipes): plain ViTs, non-overlapping patches, no conv stem.
# They pool the patch tokens (global_pool="avg", no class token, as timm's avg-pool ViTs): from
# scratch on small data sets this learns several times faster than a class token (digits: 88% vs
# 73% after 300 steps).
_SMALL = dict(in_chans=1, num_classes=10, global_pool="avg", class_token=False, mlp_ratio=2.0)
_register(
    "vit_digits_patch2_8", img_size=8, patch_size=2, embed_dim=64, depth=4, num_heads=4, **_SMALL
)
_register(
    "vit_fmnist_patch4_28", img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=4, **_SMALL
)
_register(
    "vit_fmnist_s_patch4_28",
    img_size=28,
    patch_size=4,
    embed_dim=128,
    depth=6,
    num_heads=4,
    **_SMALL,
)

# -- small data (see the module docstring for the papers) -------------------------------------

# DeiT-Ti with the distillation token (Touvron et al. 2021): timm's deit_tiny_distilled_patch16_224.
_register("deit_tiny_distilled_patch16_224", distilled=True, **_SIZES["tiny"])

# Compact Convolutional Transformers (Hassani et al. 2021): cct_{layers}_{kernel}x{conv layers}_{img}.
# patch_size = 2**conv layers (each conv stage max-pools by 2); no class token, sequence pooling,
# no qkv bias, LayerNorm eps 1e-5, as SHI-Labs/Compact-Transformers.
_CCT = dict(stem="cct", class_token=False, global_pool="seq", qkv_bias=False, norm_eps=1e-5)
_register(  # the paper's CIFAR-10 model, 3.76 M parameters
    "cct_7_3x1_32", img_size=32, patch_size=2, num_classes=10, embed_dim=256, depth=7,
    num_heads=4, mlp_ratio=2.0, **_CCT,
)  # fmt: skip
_register(  # the paper's smallest CIFAR-10 model, 0.28 M parameters
    "cct_2_3x2_32", img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=2,
    num_heads=2, mlp_ratio=1.0, **_CCT,
)  # fmt: skip
_GREY = dict(in_chans=1, num_classes=10)
_register(
    "cct_4_3x2_28", img_size=28, patch_size=4, embed_dim=128, depth=4, num_heads=2,
    mlp_ratio=2.0, **_GREY, **_CCT,
)  # fmt: skip
_register(
    "cct_7_3x2_28", img_size=28, patch_size=4, embed_dim=256, depth=7, num_heads=4,
    mlp_ratio=2.0, **_GREY, **_CCT,
)  # fmt: skip
# Deeper, BatchNormed tokenizers with 3 layers train to better models in 15 minutes than
# cct_4_3x2_28 (docs/training.md#fashion-mnist-in-15-minutes): 3 convs (32 at 28×28, then 64
# and 128 at 14×14), and the recipe's 4 (two at 28×28, where the fine detail of a shirt is).
_register(
    "cct_3_3x3bn_28", img_size=28, patch_size=4, embed_dim=128, depth=3, num_heads=2,
    mlp_ratio=2.0, tokenizer_stages=((32,), (64, 128)), tokenizer_norm=True, **_GREY, **_CCT,
)  # fmt: skip
_register(
    "cct_3_3x4bn_28", img_size=28, patch_size=4, embed_dim=128, depth=3, num_heads=2,
    mlp_ratio=2.0, tokenizer_stages=((32, 32), (64, 128)), tokenizer_norm=True, **_GREY, **_CCT,
)  # fmt: skip
# cct_3_3x4bn_28 twice as wide (D 256, 4 heads; 2.0 M parameters, ~2.7× the step time): the
# long recipe with it gains 0.1 test points for 2.7× the time, so the recipe keeps the small
# one (docs/training.md#fashion-mnist-longer-recipe).
_register(
    "cct_3_3x4bn_d256_28", img_size=28, patch_size=4, embed_dim=256, depth=3, num_heads=4,
    mlp_ratio=2.0, tokenizer_stages=((64, 64), (128, 256)), tokenizer_norm=True, **_GREY, **_CCT,
)  # fmt: skip
_register(
    "cct_2_3x1_8", img_size=8, patch_size=2, embed_dim=64, depth=2, num_heads=4,
    mlp_ratio=2.0, **_GREY, **_CCT,
)  # fmt: skip

# Fashion-MNIST ablation: vit_fmnist_patch4_28's size with one idea each.
_FMNIST = dict(img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=4)
_register("vit_fmnist_convstem_patch4_28", stem="conv", **_FMNIST, **_SMALL)
_register("vit_fmnist_spt_lsa_patch4_28", stem="spt", lsa=True, **_FMNIST, **_SMALL)
_register(
    "deit_fmnist_distilled_patch4_28",
    distilled=True,
    **_FMNIST,
    **{**_SMALL, "class_token": True, "global_pool": "token"},
)
