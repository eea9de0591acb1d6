"""timm ``vit_*`` state dicts: keymodels uses timm's layout, so only the config has to be read.

Sizes, patch, image size, pooling, LayerScale and pre-logits come from the tensors' names and
shapes; the head count cannot, so it comes from ``model=`` (a registered/timm name) or ``num_heads=``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..vit import VisionTransformer, ViTConfig
from ._common import (
    ConversionError,
    count_blocks,
    reject_small_data_state,
    reject_unsupported_features,
    require,
    resolve_heads,
)

FORMAT = "timm"


def config_from_state_dict(
    state: dict[str, Tensor],
    model: str | None = None,
    num_heads: int | None = None,
    **overrides: Any,
) -> tuple[ViTConfig, list[str]]:
    """The ``ViTConfig`` that a timm-layout state dict was built with, and notes on what was inferred."""
    notes = []
    reject_small_data_state(state, "timm")
    D, C, P, _ = require(state, "patch_embed.proj.weight", FORMAT).shape
    class_token = "cls_token" in state
    # DeiT's distilled models (timm's VisionTransformerDistilled): a second prefix token.
    distilled = "dist_token" in state
    n_pos = require(state, "pos_embed", FORMAT).shape[1] - int(class_token) - int(distilled)
    side = math.isqrt(n_pos)
    if "img_size" not in overrides:
        if side * side != n_pos:
            raise ConversionError(
                f"{n_pos} position embeddings are not a square grid; pass img_size=(H, W)"
            )
        overrides["img_size"] = side * P
    fc1 = require(state, "blocks.0.mlp.fc1.weight", FORMAT)
    use_fc_norm = "fc_norm.weight" in state
    # timm puts the final norm after pooling (fc_norm) exactly for average pooling; without a
    # class token only average pooling is possible.
    global_pool = "avg" if use_fc_norm or not class_token else "token"
    if class_token and not distilled and "global_pool" not in overrides:
        notes.append(f"pooling read as {global_pool!r} (pass global_pool= if it was otherwise)")
    fields: dict[str, Any] = dict(
        patch_size=P,
        in_chans=C,
        embed_dim=D,
        depth=count_blocks(state, r"blocks\.(\d+)\.norm1\.weight$"),
        num_heads=resolve_heads(model, num_heads, D),
        mlp_ratio=fc1.shape[0] / D,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        class_token=class_token,
        distilled=distilled,
        global_pool=global_pool,
        fc_norm=use_fc_norm,
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None,  # the value comes with gamma
        pre_logits_size=state["pre_logits.fc.weight"].shape[0]
        if "pre_logits.fc.weight" in state
        else None,
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
        norm_eps=1e-6,  # timm's ViT LayerNorm
    )
    fields.update(overrides)
    return ViTConfig(**fields), notes


def to_keymodels(
    state: dict[str, Tensor],
    model: str | None = None,
    num_heads: int | None = None,
    **overrides: Any,
) -> tuple[dict[str, Tensor], ViTConfig, list[str]]:
    """timm state dict -> (keymodels state dict, config, notes); the tensors are the same."""
    config, notes = config_from_state_dict(state, model, num_heads, **overrides)
    return dict(state), config, notes


def from_keymodels(model: VisionTransformer) -> dict[str, Tensor]:
    """keymodels model -> timm state dict (the same names and tensors).

    A distilled model's state dict is timm's ``VisionTransformerDistilled`` (``deit_*_distilled``).
    """
    reject_unsupported_features(model.config, "timm's VisionTransformer", allow_distilled=True)
    return {k: v.detach() for k, v in model.state_dict().items()}
