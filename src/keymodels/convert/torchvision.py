"""torchvision ``VisionTransformer`` (``vit_b_16``, ``vit_b_32``, ``vit_l_16``, ``vit_h_14`` …) state dicts.

torchvision's ``nn.MultiheadAttention`` packs q, k, v as keymodels does (``in_proj_weight`` is
``qkv.weight``), so the mapping is a renaming; the head count comes from ``model=`` or ``num_heads=``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor

from ..vit import VisionTransformer, ViTConfig
from ._common import (
    ConversionError,
    count_blocks,
    reject_unsupported_features,
    reject_unused,
    require,
    resolve_heads,
)

FORMAT = "torchvision"

# Per block: keymodels name -> torchvision name (under ``encoder.layers.encoder_layer_N.``).
_BLOCK = {
    "norm1.weight": "ln_1.weight",
    "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "self_attention.in_proj_weight",
    "attn.qkv.bias": "self_attention.in_proj_bias",
    "attn.proj.weight": "self_attention.out_proj.weight",
    "attn.proj.bias": "self_attention.out_proj.bias",
    "norm2.weight": "ln_2.weight",
    "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.0.weight",
    "mlp.fc1.bias": "mlp.0.bias",
    "mlp.fc2.weight": "mlp.3.weight",
    "mlp.fc2.bias": "mlp.3.bias",
}
_TOP = {
    "patch_embed.proj.weight": "conv_proj.weight",
    "patch_embed.proj.bias": "conv_proj.bias",
    "cls_token": "class_token",
    "pos_embed": "encoder.pos_embedding",
    "norm.weight": "encoder.ln.weight",
    "norm.bias": "encoder.ln.bias",
    "pre_logits.fc.weight": "heads.pre_logits.weight",
    "pre_logits.fc.bias": "heads.pre_logits.bias",
    "head.weight": "heads.head.weight",
    "head.bias": "heads.head.bias",
}


def to_keymodels(
    state: dict[str, Tensor],
    model: str | None = None,
    num_heads: int | None = None,
    **overrides: Any,
) -> tuple[dict[str, Tensor], ViTConfig, list[str]]:
    """torchvision state dict -> (keymodels state dict, config, notes)."""
    # Checkpoints from before torchvision 0.13 name the MLP layers linear_1 / linear_2.
    state = {
        re.sub(r"\.mlp\.linear_(\d)\.", lambda m: f".mlp.{3 * (int(m[1]) - 1)}.", k): v
        for k, v in state.items()
    }
    if "conv_proj.conv_last.weight" in state:
        raise ConversionError("torchvision ViTs with a convolutional stem are not supported")
    D, C, P, _ = require(state, "conv_proj.weight", FORMAT).shape
    n_pos = require(state, "encoder.pos_embedding", FORMAT).shape[1] - 1
    side = math.isqrt(n_pos)
    if side * side != n_pos:
        raise ConversionError(f"{n_pos} position embeddings are not a square grid")
    depth = count_blocks(state, r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.weight$")
    out = {k: state[tv] for k, tv in _TOP.items() if tv in state}
    for i in range(depth):
        for k, tv in _BLOCK.items():
            out[f"blocks.{i}.{k}"] = require(
                state, f"encoder.layers.encoder_layer_{i}.{tv}", FORMAT
            )
    pre_logits = out.get("pre_logits.fc.weight")
    fields: dict[str, Any] = dict(
        img_size=side * P,
        patch_size=P,
        in_chans=C,
        embed_dim=D,
        depth=depth,
        num_heads=resolve_heads(model, num_heads, D),
        mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
        num_classes=out["head.weight"].shape[0] if "head.weight" in out else 0,
        pre_logits_size=None if pre_logits is None else pre_logits.shape[0],
        norm_eps=1e-6,  # torchvision's default norm_layer
    )
    config = ViTConfig(**(fields | overrides))
    used = {
        f"encoder.layers.encoder_layer_{i}.{tv}" for i in range(depth) for tv in _BLOCK.values()
    }
    reject_unused(state, used | set(_TOP.values()), FORMAT)
    return out, config, []


def from_keymodels(model: VisionTransformer) -> dict[str, Tensor]:
    """keymodels model -> torchvision ``VisionTransformer`` state dict."""
    c = model.config
    reject_unsupported_features(c, "torchvision's VisionTransformer")
    bad = {
        "a class token with token pooling": not c.class_token or c.global_pool != "token",
        "the final norm before pooling (no fc_norm)": isinstance(model.fc_norm, torch.nn.LayerNorm),
        "no LayerScale": bool(c.init_values),
        "qkv biases": not c.qkv_bias,
        "a classification head": c.num_classes == 0,
        "3 input channels and a square image": c.in_chans != 3 or c.grid_size[0] != c.grid_size[1],
    }
    missing = [need for need, is_bad in bad.items() if is_bad]
    if missing:
        raise ConversionError(
            f"torchvision's VisionTransformer needs {', '.join(missing)}; this model does not "
            "have that. Export it to timm or keymodels format instead"
        )
    state = {k: v.detach() for k, v in model.state_dict().items()}
    out = {tv: state[k] for k, tv in _TOP.items() if k in state}
    for i in range(c.depth):
        for k, tv in _BLOCK.items():
            out[f"encoder.layers.encoder_layer_{i}.{tv}"] = state[f"blocks.{i}.{k}"]
    return out
