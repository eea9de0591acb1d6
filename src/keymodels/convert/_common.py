"""What every weight format shares: reading weight files, the conversion report, clear mismatch errors.

Each format module turns its state dict into keymodels' (timm) layout and back; this module builds
and checks the keymodels model on the way.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..checkpoint import load_torch_file
from ..errors import InvalidInputError, KeymodelsError, unknown_name
from ..registry import get_config, list_models
from ..vit import VisionTransformer, ViTConfig


class ConversionError(KeymodelsError, ValueError):
    """Weights that do not fit the architecture or format they are converted to or from."""


@dataclass
class ConversionReport:
    """What a conversion did: tensors mapped, the config it read, and anything worth a note."""

    source: str
    target: str
    mapped: int = 0  # tensors moved from one layout to the other
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    class_names: list[str] | None = None  # from the source, where it names its classes
    preprocessing: dict[str, Any] = field(default_factory=dict)  # mean/std etc., where known

    def summary(self) -> str:
        c = self.config
        arch = (
            f"embed_dim={c.get('embed_dim')} depth={c.get('depth')} heads={c.get('num_heads')} "
            f"patch={c.get('patch_size')} img_size={c.get('img_size')} pool={c.get('global_pool')!r} "
            f"classes={c.get('num_classes')} eps={c.get('norm_eps')}"
        )
        lines = [f"{self.source} -> {self.target}: {self.mapped} tensors mapped ({arch})"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


# The published sizes (width, heads) by timm's size names (Dosovitskiy et al. 2021; DeiT for Ti, S).
_TIMM_SIZES = {
    "tiny": (192, 3),
    "small": (384, 6),
    "base": (768, 12),
    "large": (1024, 16),
    "huge": (1280, 16),
}


def heads_hint(embed_dim: int) -> str:
    """What to pass when a bare state dict hides its head count (suggesting the published one)."""
    n = dict(_TIMM_SIZES.values()).get(embed_dim)
    tip = f" (the published ViT of width {embed_dim} has num_heads={n})" if n else ""
    return (
        "the number of attention heads cannot be read from the weights' shapes; pass "
        f"--model NAME (model='<registered name>') or --num-heads N (num_heads=N){tip}"
    )


# torchvision's names for the published sizes.
TORCHVISION_MODELS = {
    "vit_b_16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_b_32": dict(patch_size=32, embed_dim=768, depth=12, num_heads=12),
    "vit_l_16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_l_32": dict(patch_size=32, embed_dim=1024, depth=24, num_heads=16),
    "vit_h_14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}


def arch_heads(model: str) -> tuple[int, dict[str, Any]]:
    """Head count (and the architecture's other fields) for a registered, torchvision or timm name."""
    if model in list_models():
        config = get_config(model)
        return config.num_heads, dataclasses.asdict(config)
    if model in TORCHVISION_MODELS:
        return TORCHVISION_MODELS[model]["num_heads"], dict(TORCHVISION_MODELS[model])
    # timm names carry a pretrained tag after a dot (vit_base_patch16_224.augreg_in21k).
    m = re.match(r"vit_(tiny|small|base|large|huge)_patch(\d+)", model.split(".")[0])
    if m:
        embed_dim, heads = _TIMM_SIZES[m.group(1)]
        return heads, {"embed_dim": embed_dim, "patch_size": int(m.group(2))}
    known = [*list_models("vit_*"), *TORCHVISION_MODELS]
    raise unknown_name("ViT architecture", model, known)


def resolve_heads(model: str | None, num_heads: int | None, embed_dim: int) -> int:
    """The head count from ``num_heads`` or ``model``, checked against the weights' width."""
    if num_heads is None and model is None:
        raise ConversionError(heads_hint(embed_dim))
    if num_heads is None:
        num_heads, arch = arch_heads(model)
        if arch.get("embed_dim", embed_dim) != embed_dim:
            raise ConversionError(
                f"model {model!r} has embed_dim {arch['embed_dim']} but the weights have "
                f"{embed_dim}; name the architecture the weights belong to"
            )
    if embed_dim % num_heads:
        raise ConversionError(
            f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; "
            "each head gets embed_dim // num_heads channels"
        )
    return num_heads


def require(state: dict[str, Tensor], key: str, fmt: str) -> Tensor:
    """``state[key]``, or an error saying which key a ``fmt`` checkpoint should have had."""
    if key not in state:
        sample = ", ".join(sorted(state)[:5])
        raise ConversionError(
            f"not a {fmt} ViT checkpoint: key {key!r} is missing (first keys found: {sample}); "
            "check --from (the source format: fmt / from_format)"
        )
    return state[key]


def reject_unused(state: dict[str, Tensor], used: set[str], fmt: str) -> None:
    """Raise naming the source tensors that no keymodels tensor came from (another architecture)."""
    extra = sorted(set(state) - used)
    if extra:
        more = f" (+{len(extra) - 3} more)" if len(extra) > 3 else ""
        raise ConversionError(
            f"not a plain {fmt} ViT: no place in a ViT for {extra[:3]}{more}; "
            "is it another architecture (DeiT distilled, BEiT, registers, MAP head …)?"
        )


def count_blocks(state: dict[str, Tensor], pattern: str) -> int:
    """Number of blocks, from keys matching ``pattern`` (a regex with one group: the index)."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise ConversionError(
            f"block indices {sorted(found)} are not 0..{len(found) - 1}; the checkpoint is incomplete"
        )
    return len(found)


def check_state_dict(model: torch.nn.Module, state: dict[str, Tensor], fmt: str) -> None:
    """Raise naming the first missing, unexpected or mis-shaped keys when ``state`` does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"shape mismatch: {'; '.join(shapes[:3])}")
    if missing:
        parts.append(
            f"missing {missing[:3]}" + (f" (+{len(missing) - 3} more)" * (len(missing) > 3))
        )
    if unexpected:
        parts.append(
            f"unexpected {unexpected[:3]}"
            + (f" (+{len(unexpected) - 3} more)" * (len(unexpected) > 3))
        )
    raise ConversionError(
        f"the {fmt} weights do not fit a ViT with {model.config.depth} blocks of width "
        f"{model.config.embed_dim}: {', '.join(parts)}. Is it another architecture or size?"
    )


def as_compute_dtype(state: dict[str, Tensor], fmt: str) -> dict[str, Tensor]:
    """``state`` with every tensor in float32, the model's compute dtype.

    fp16/bf16 weights are widened (lossless), so the model takes the float32 batches every
    keymodels preprocessing produces; integer or boolean tensors cannot be weights and are refused.
    """
    # BatchNorm's step counter (conv stem) is an integer buffer by design, not a weight.
    counter = "num_batches_tracked"
    wrong = [
        f"{k} ({v.dtype})"
        for k, v in state.items()
        if not v.is_floating_point() and not k.endswith(counter)
    ]
    if wrong:
        more = f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise ConversionError(
            f"the {fmt} weights hold non-floating-point tensors: {', '.join(wrong[:3])}{more}; "
            "ViT weights are float32, float16 or bfloat16 (is the file quantized or not a ViT?)"
        )
    return {k: v if k.endswith(counter) else v.float() for k, v in state.items()}


def build(config: ViTConfig, state: dict[str, Tensor], fmt: str) -> VisionTransformer:
    """A ``VisionTransformer(config)`` holding exactly ``state`` (keymodels layout), in eval mode.

    The weights are loaded in float32 (fp16/bf16 files are widened, see :func:`as_compute_dtype`).
    """
    with torch.device("meta"):  # no init cost: every tensor is replaced below
        model = VisionTransformer(config)
    check_state_dict(model, state, fmt)
    model.load_state_dict(as_compute_dtype(state, fmt), assign=True)
    return model.eval()


def is_training_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint written by ``keymodels.checkpoint`` (``keymodels train``)."""
    if not (path.is_file() and path.suffix == ".safetensors"):
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == CHECKPOINT_FORMAT
    except (SafetensorError, OSError, ValueError):
        return False


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` from ``.safetensors`` or ``.pt``/``.pth``/``.bin`` (never unpickles code).

    Training checkpoints that wrap the weights (``{"state_dict": …}``, ``{"model": …}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ConversionError(
                f"{path} is not a readable safetensors file ({e}); it may be truncated or of "
                "another format"
            ) from e
    if path.suffix == ".npz":
        raise ConversionError(f"{path} is a NumPy archive; convert it with --from jax (fmt='jax')")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix not in (".pt", ".pth", ".bin", ".ckpt") and not head.startswith(b"PK"):
        raise ConversionError(
            f"{path}: unknown weights format (expected .safetensors, .pt/.pth/.bin or .npz)"
        )
    state = load_torch_file(path)
    for wrapper in ("state_dict", "model", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"{path} does not hold a flat dict of tensors (a state dict)")
    return state


# What a small-data ViT has that the other libraries' plain ViTs lack, with the words to say so.
_FEATURES = {
    "conv": "convolutional stem (stem='conv')",
    "cct": "CCT convolutional tokenizer (stem='cct')",
    "spt": "shifted patch tokenization (stem='spt')",
    "lsa": "locality self-attention (lsa=True)",
    "seq": "sequence pooling (global_pool='seq')",
    "distilled": "distillation token (distilled=True)",
}


def reject_unsupported_features(
    config: ViTConfig, target: str, allow_distilled: bool = False
) -> None:
    """Raise a ConversionError naming each small-data feature that ``target``'s ViT lacks."""
    features = []
    if config.stem != "patch":
        features.append(_FEATURES[config.stem])
    if config.lsa:
        features.append(_FEATURES["lsa"])
    if config.global_pool == "seq":
        features.append(_FEATURES["seq"])
    if config.distilled and not allow_distilled:
        features.append(_FEATURES["distilled"])
    if features:
        raise ConversionError(
            f"{target} has no {' and no '.join(features)}; save with save_pretrained "
            "(keymodels format) or export to ONNX instead"
        )


def reject_small_data_state(state: dict[str, Tensor], source: str) -> None:
    """A keymodels state dict of a conv/CCT/SPT/LSA/seq-pool model: its config cannot be read
    from the tensors, so say where it can be loaded from instead of building a wrong model."""
    found = []
    if "patch_embed.proj.weight" not in state and any(k.startswith("patch_embed.") for k in state):
        found.append("a convolutional or shifted-patch stem")  # no patchify conv
    if any(k.endswith("attn.temperature") for k in state):
        found.append(_FEATURES["lsa"])
    if "attn_pool.attention_pool.weight" in state:
        found.append(_FEATURES["seq"])
    if found:
        raise ConversionError(
            f"these weights have {' and '.join(found)}, which {source}'s ViT has not, and which "
            "cannot be read from the tensors; load the keymodels directory (config.json + "
            "model.safetensors) with from_pretrained instead"
        )
