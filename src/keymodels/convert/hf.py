"""Hugging Face ``transformers`` ViT (``ViTModel`` / ``ViTForImageClassification``) on-disk layout.

The Hub layout (``vit.encoder.layer.N.attention.attention.query…`` + ``config.json``) is what
transformers 4 and 5 both load; transformers 5's in-memory names (``vit.layers.N.attention.q_proj``)
are read too. Query, key and value are separate Linear layers there and one ``qkv`` here.
"""

from __future__ import annotations

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
)

FORMAT = "Hugging Face"

# transformers 5 in-memory names -> the Hub's on-disk names (the inverse of its load-time renames).
_V5_TO_HUB = [
    (r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]

# Per block: keymodels name -> Hub name (under ``encoder.layer.N.``), apart from q/k/v.
_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
    "pre_logits.fc.weight": "pooler.dense.weight",
    "pre_logits.fc.bias": "pooler.dense.bias",
}


def _hub_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The Hub's names without the ``vit.`` prefix (the head stays ``classifier.*``)."""
    out = {}
    for k, v in state.items():
        for pattern, repl in _V5_TO_HUB:
            k = re.sub(pattern, repl, k)
        out[k.removeprefix("vit.")] = v
    return out


def config_to_keymodels(
    hf: dict[str, Any], state: dict[str, Tensor]
) -> tuple[ViTConfig, list[str]]:
    """``ViTConfig`` from a transformers ``config.json`` and the weights it came with."""
    if hf.get("model_type", "vit") != "vit":
        raise ConversionError(
            f"config.json is for model_type {hf.get('model_type')!r}, not 'vit'; only plain ViT "
            "checkpoints convert (DeiT distilled, BEiT, DINOv2 … have other layers)"
        )
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(
            f"hidden_act {act!r} is not supported: keymodels' MLP uses the exact (erf) GELU, "
            "transformers' 'gelu'"
        )
    lacking = [
        k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads") if k not in hf
    ]
    if lacking:
        raise ConversionError(f"config.json lacks {lacking}; is it a transformers ViT config?")
    D, heads = hf["hidden_size"], hf["num_attention_heads"]
    if D % heads:
        raise ConversionError(
            f"config.json is inconsistent: hidden_size {D} is not divisible by "
            f"num_attention_heads {heads}"
        )
    notes = []
    pre_logits = None
    if "pooler.dense.weight" in state:
        if "classifier.weight" in state:
            notes.append("pooler.dense dropped: ViTForImageClassification classifies without it")
        else:
            if hf.get("pooler_act", "tanh") != "tanh":
                raise ConversionError(f"pooler_act {hf['pooler_act']!r} is not supported (tanh is)")
            pre_logits = state["pooler.dense.weight"].shape[0]
    image_size = hf.get("image_size", 224)
    config = ViTConfig(
        img_size=tuple(image_size) if isinstance(image_size, list) else image_size,
        patch_size=hf.get("patch_size", 16),
        in_chans=hf.get("num_channels", 3),
        num_classes=state["classifier.weight"].shape[0] if "classifier.weight" in state else 0,
        embed_dim=D,
        depth=hf["num_hidden_layers"],
        num_heads=heads,
        mlp_ratio=hf.get("intermediate_size", 4 * D) / D,
        qkv_bias=hf.get("qkv_bias", True),
        pre_logits_size=pre_logits,
        norm_eps=hf.get("layer_norm_eps", 1e-12),
    )
    return config, notes


def class_names(hf: dict[str, Any], num_classes: int) -> list[str] | None:
    """The class names of ``id2label``, or None where they are transformers' ``LABEL_i`` defaults."""
    id2label = {int(k): v for k, v in (hf.get("id2label") or {}).items()}
    names = [id2label.get(i) for i in range(num_classes)]
    if not num_classes or None in names or names == [f"LABEL_{i}" for i in range(num_classes)]:
        return None
    return names


def to_keymodels(
    state: dict[str, Tensor], hf_config: dict[str, Any]
) -> tuple[dict[str, Tensor], ViTConfig, list[str]]:
    """Hub state dict + config.json -> (keymodels state dict, config, notes)."""
    state = _hub_names(state)
    config, notes = config_to_keymodels(hf_config, state)
    if "embeddings.mask_token" in state:
        notes.append("embeddings.mask_token (masked image modelling only) dropped")
    depth = count_blocks(state, r"encoder\.layer\.(\d+)\.layernorm_before\.weight$")
    if depth != config.depth:
        raise ConversionError(
            f"config.json says num_hidden_layers={config.depth} but the weights have {depth} layers"
        )
    out = {k: state[hub] for k, hub in _TOP.items() if hub in state}
    for i in range(depth):
        p = f"encoder.layer.{i}."
        for k, hub in _BLOCK.items():
            for t in ("weight", "bias"):
                out[f"blocks.{i}.{k}.{t}"] = require(state, f"{p}{hub}.{t}", FORMAT)
        qkv = [f"{p}attention.attention.{n}" for n in ("query", "key", "value")]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [require(state, f"{n}.weight", FORMAT) for n in qkv]
        )
        if config.qkv_bias:
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat(
                [require(state, f"{n}.bias", FORMAT) for n in qkv]
            )
    if config.num_classes:
        out["head.weight"], out["head.bias"] = state["classifier.weight"], state["classifier.bias"]
    if not config.pre_logits_size:
        out.pop("pre_logits.fc.weight", None), out.pop("pre_logits.fc.bias", None)
    used = {*_TOP.values(), "classifier.weight", "classifier.bias", "embeddings.mask_token"}
    for i in range(depth):
        used |= {
            f"encoder.layer.{i}.{hub}.{t}" for hub in _BLOCK.values() for t in ("weight", "bias")
        }
        used |= {
            f"encoder.layer.{i}.attention.attention.{n}.{t}"
            for n in ("query", "key", "value")
            for t in (("weight", "bias") if config.qkv_bias else ("weight",))
        }
    reject_unused(state, used, FORMAT)
    return out, config, notes


def from_keymodels(
    model: VisionTransformer, class_names: list[str] | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """keymodels model -> (Hub state dict, config.json dict) that ``from_pretrained`` loads as is.

    A model with classes becomes ``ViTForImageClassification``; one without, ``ViTModel`` (with
    the pre-logits layer as its tanh pooler).
    """
    c = model.config
    reject_unsupported_features(c, "transformers' ViT")
    unsupported = {
        "class_token=False / global_pool != 'token' (HF ViT classifies from the class token)": (
            not c.class_token or c.global_pool != "token"
        ),
        "fc_norm (HF ViT normalises before pooling)": isinstance(model.fc_norm, torch.nn.LayerNorm),
        "LayerScale (init_values)": bool(c.init_values),
        "pre-logits layer together with a head (ViTForImageClassification has no pooler)": bool(
            c.pre_logits_size and c.num_classes
        ),
        "mlp_ratio giving a fractional hidden size": float(c.embed_dim * c.mlp_ratio).is_integer()
        is False,
    }
    bad = [name for name, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ConversionError(
            f"this model cannot be expressed as a transformers ViT: {'; '.join(bad)}. "
            "Export it to timm or keymodels format instead"
        )
    state = {k: v.detach() for k, v in model.state_dict().items()}
    classify = c.num_classes > 0
    prefix = "vit." if classify else ""
    out = {prefix + hub: state[k] for k, hub in _TOP.items() if k in state}
    for i in range(c.depth):
        p = f"{prefix}encoder.layer.{i}."
        for k, hub in _BLOCK.items():
            for t in ("weight", "bias"):
                out[f"{p}{hub}.{t}"] = state[f"blocks.{i}.{k}.{t}"]
        for t in ("weight", "bias") if c.qkv_bias else ("weight",):
            q, k_, v = state[f"blocks.{i}.attn.qkv.{t}"].chunk(3)
            for name, part in zip(("query", "key", "value"), (q, k_, v)):
                out[f"{p}attention.attention.{name}.{t}"] = part.contiguous()
    if classify:
        out["classifier.weight"], out["classifier.bias"] = state["head.weight"], state["head.bias"]
    names = class_names or [f"LABEL_{i}" for i in range(c.num_classes)]
    if len(names) != c.num_classes:
        raise ConversionError(
            f"{len(names)} class names given for a model with {c.num_classes} classes"
        )
    h, w = c.grid_size[0] * c.patch_size, c.grid_size[1] * c.patch_size
    hf_config = {
        "architectures": ["ViTForImageClassification" if classify else "ViTModel"],
        "model_type": "vit",
        "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "intermediate_size": int(c.embed_dim * c.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": c.norm_eps,
        "image_size": h if h == w else [h, w],
        "patch_size": c.patch_size,
        "num_channels": c.in_chans,
        "qkv_bias": c.qkv_bias,
        "encoder_stride": c.patch_size,
        "pooler_output_size": c.pre_logits_size or c.embed_dim,
        "pooler_act": "tanh",
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
    return out, hf_config


def image_processor(
    model: VisionTransformer, preprocessing: dict[str, Any]
) -> dict[str, Any] | None:
    """A ``preprocessor_config.json`` (``ViTImageProcessor``) from keymodels' mean/std, if known."""
    if "mean" not in preprocessing or "std" not in preprocessing:
        return None
    h, w = (g * model.config.patch_size for g in model.config.grid_size)
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": h, "width": w},
        "resample": 2,  # bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocessing["mean"]),
        "image_std": list(preprocessing["std"]),
    }


def preprocessing(processor: dict[str, Any]) -> dict[str, Any]:
    """keymodels' preprocessing settings (mean, std) from a ``preprocessor_config.json``."""
    out = {}
    if "image_mean" in processor and "image_std" in processor:
        out = {"mean": processor["image_mean"], "std": processor["image_std"]}
    return out
