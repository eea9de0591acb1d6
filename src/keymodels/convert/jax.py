"""The original Google ViT ``.npz`` checkpoints (google-research/vision_transformer, Flax).

Names are ``Transformer/encoderblock_N/…``; the patch kernel is HWIO, Dense kernels are [in, out],
and attention keeps heads apart: query/key/value kernels [D, H, Dh], biases [H, Dh], out [H, Dh, D].
The head count is thus read from the weights.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import atomic_write
from ..vit import VisionTransformer, ViTConfig
from ._common import (
    ConversionError,
    count_blocks,
    reject_unsupported_features,
    reject_unused,
    require,
)

FORMAT = "JAX .npz"
_LN = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2"}
_MLP = {"mlp.fc1": "MlpBlock_3/Dense_0", "mlp.fc2": "MlpBlock_3/Dense_1"}
_ATTN = "MultiHeadDotProductAttention_1"


def read_npz(path: str | os.PathLike) -> dict[str, Tensor]:
    """Every array of an ``.npz`` as a tensor, with a training prefix (``opt/target/``) removed."""
    try:
        with np.load(Path(path), allow_pickle=False) as f:
            arrays = {k: torch.from_numpy(np.array(f[k])) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConversionError(
            f"{path} is not a readable .npz archive ({e}); it may be truncated"
        ) from e
    if any(k.startswith("opt/target/") for k in arrays):
        arrays = {
            k.removeprefix("opt/target/"): v
            for k, v in arrays.items()
            if k.startswith("opt/target/")
        }
    if (
        "pos_embedding" in arrays
        or "params/embedding/kernel" in arrays
        or any(k.startswith("Transformer/encoderblock/") for k in arrays)
    ):
        raise ConversionError(
            f"{path} is a big_vision checkpoint (scanned blocks / root pos_embedding); only the "
            "original google-research/vision_transformer layout is supported"
        )
    return arrays


def to_keymodels(arrays: dict[str, Tensor]) -> tuple[dict[str, Tensor], ViTConfig, list[str]]:
    """Google ``.npz`` arrays -> (keymodels state dict, config, notes)."""
    kernel = require(arrays, "embedding/kernel", FORMAT)  # [P, P, C, D]
    P, _, C, D = kernel.shape
    class_token = "cls" in arrays
    pos = require(arrays, "Transformer/posembed_input/pos_embedding", FORMAT)
    n = pos.shape[1] - int(class_token)
    side = math.isqrt(n)
    if side * side != n:
        raise ConversionError(f"{n} position embeddings are not a square grid")
    depth = count_blocks(arrays, r"Transformer/encoderblock_(\d+)/LayerNorm_0/scale$")
    query = require(arrays, f"Transformer/encoderblock_0/{_ATTN}/query/kernel", FORMAT)
    heads = query.shape[1]
    out = {
        "patch_embed.proj.weight": kernel.permute(3, 2, 0, 1),
        "patch_embed.proj.bias": require(arrays, "embedding/bias", FORMAT),
        "pos_embed": pos,
        "norm.weight": require(arrays, "Transformer/encoder_norm/scale", FORMAT),
        "norm.bias": require(arrays, "Transformer/encoder_norm/bias", FORMAT),
    }
    if class_token:
        out["cls_token"] = arrays["cls"]
    qkv_bias = f"Transformer/encoderblock_0/{_ATTN}/query/bias" in arrays
    for i in range(depth):
        p = f"Transformer/encoderblock_{i}/"
        b = f"blocks.{i}."
        for k, ln in _LN.items():
            out[f"{b}{k}.weight"] = require(arrays, f"{p}{ln}/scale", FORMAT)
            out[f"{b}{k}.bias"] = require(arrays, f"{p}{ln}/bias", FORMAT)
        a = f"{p}{_ATTN}/"
        out[f"{b}attn.qkv.weight"] = torch.cat(
            [
                require(arrays, f"{a}{n}/kernel", FORMAT).flatten(1).T
                for n in ("query", "key", "value")
            ]
        )
        if qkv_bias:
            out[f"{b}attn.qkv.bias"] = torch.cat(
                [
                    require(arrays, f"{a}{n}/bias", FORMAT).flatten()
                    for n in ("query", "key", "value")
                ]
            )
        out[f"{b}attn.proj.weight"] = require(arrays, f"{a}out/kernel", FORMAT).flatten(0, 1).T
        out[f"{b}attn.proj.bias"] = require(arrays, f"{a}out/bias", FORMAT)
        for k, dense in _MLP.items():
            out[f"{b}{k}.weight"] = require(arrays, f"{p}{dense}/kernel", FORMAT).T
            out[f"{b}{k}.bias"] = require(arrays, f"{p}{dense}/bias", FORMAT)
    for k, name in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        if f"{name}/kernel" in arrays:
            out[f"{k}.weight"] = arrays[f"{name}/kernel"].T
            out[f"{k}.bias"] = arrays[f"{name}/bias"]
    used = {"embedding/kernel", "embedding/bias", "cls", "Transformer/posembed_input/pos_embedding"}
    used |= {f"Transformer/encoder_norm/{n}" for n in ("scale", "bias")}
    used |= {f"{name}/{t}" for name in ("pre_logits", "head") for t in ("kernel", "bias")}
    for i in range(depth):
        p = f"Transformer/encoderblock_{i}/"
        used |= {f"{p}{ln}/{t}" for ln in _LN.values() for t in ("scale", "bias")}
        used |= {f"{p}{d}/{t}" for d in _MLP.values() for t in ("kernel", "bias")}
        used |= {
            f"{p}{_ATTN}/{n}/{t}"
            for n in ("query", "key", "value", "out")
            for t in ("kernel", "bias")
        }
    reject_unused(arrays, used, FORMAT)
    out = {k: v.contiguous() for k, v in out.items()}
    config = ViTConfig(
        img_size=side * P,
        patch_size=P,
        in_chans=C,
        num_classes=out["head.weight"].shape[0] if "head.weight" in out else 0,
        embed_dim=D,
        depth=depth,
        num_heads=heads,
        mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
        qkv_bias=qkv_bias,
        class_token=class_token,
        # The Flax model normalises all tokens, then takes the class token or their mean ("gap").
        global_pool="token" if class_token else "avg",
        fc_norm=False,
        pre_logits_size=out["pre_logits.fc.weight"].shape[0]
        if "pre_logits.fc.weight" in out
        else None,
        norm_eps=1e-6,  # flax.linen.LayerNorm
    )
    return out, config, []


def from_keymodels(model: VisionTransformer) -> dict[str, Tensor]:
    """keymodels model -> Google ``.npz`` arrays (as tensors; :func:`write_npz` saves them)."""
    c = model.config
    reject_unsupported_features(c, "the Google (JAX) ViT")
    if isinstance(model.fc_norm, torch.nn.LayerNorm) or c.init_values:
        raise ConversionError(
            "the Google ViT has no fc_norm and no LayerScale; export this model to timm instead"
        )
    if c.class_token != (c.global_pool == "token"):
        raise ConversionError(
            "the Google ViT pools by class token (with one) or by mean (without); this model "
            f"has class_token={c.class_token} and global_pool={c.global_pool!r}"
        )
    s = {k: v.detach() for k, v in model.state_dict().items()}
    H, Dh, D = c.num_heads, c.embed_dim // c.num_heads, c.embed_dim
    out = {
        "embedding/kernel": s["patch_embed.proj.weight"].permute(2, 3, 1, 0),
        "embedding/bias": s["patch_embed.proj.bias"],
        "Transformer/posembed_input/pos_embedding": s["pos_embed"],
        "Transformer/encoder_norm/scale": s["norm.weight"],
        "Transformer/encoder_norm/bias": s["norm.bias"],
    }
    if c.class_token:
        out["cls"] = s["cls_token"]
    for i in range(c.depth):
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        for k, ln in _LN.items():
            out[f"{p}{ln}/scale"], out[f"{p}{ln}/bias"] = s[f"{b}{k}.weight"], s[f"{b}{k}.bias"]
        a = f"{p}{_ATTN}/"
        for n, w in zip(("query", "key", "value"), s[f"{b}attn.qkv.weight"].chunk(3)):
            out[f"{a}{n}/kernel"] = w.T.reshape(D, H, Dh)
        if c.qkv_bias:
            for n, bias in zip(("query", "key", "value"), s[f"{b}attn.qkv.bias"].chunk(3)):
                out[f"{a}{n}/bias"] = bias.reshape(H, Dh)
        out[f"{a}out/kernel"] = s[f"{b}attn.proj.weight"].T.reshape(H, Dh, D)
        out[f"{a}out/bias"] = s[f"{b}attn.proj.bias"]
        for k, dense in _MLP.items():
            out[f"{p}{dense}/kernel"], out[f"{p}{dense}/bias"] = (
                s[f"{b}{k}.weight"].T,
                s[f"{b}{k}.bias"],
            )
    for k, name in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        if f"{k}.weight" in s:
            out[f"{name}/kernel"], out[f"{name}/bias"] = s[f"{k}.weight"].T, s[f"{k}.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def write_npz(path: str | os.PathLike, arrays: dict[str, Tensor]) -> Path:
    """Atomically save ``arrays`` as an uncompressed ``.npz`` (as the released checkpoints are)."""
    numpy_arrays = {k: v.cpu().numpy() for k, v in arrays.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **numpy_arrays)

    return atomic_write(path, write)
