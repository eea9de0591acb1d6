"""Where a model looks: ViT attention maps, attention rollout, gradient-weighted rollout, pictures.

Also the source × target alignment figure of a seq2seq model's attention weights α_t.

Attention rollout (Abnar & Zuidema 2020) follows attention through the layers. Each layer's
per-head weights [B, H, N, N] are fused over heads (mean, max or min), optionally the lowest
weights are discarded, the identity is added for the residual connection and the rows are
re-normalised, Â_l = (A_l + I) / rowsum(A_l + I), and the layers are multiplied,
R = Â_L ⋯ Â_1. The map is the row of R that the head reads, restricted to the patch tokens:
the class token's row; for DeiT's distilled models the mean of the class and distillation
tokens' rows (the head averages the two heads' logits); for average pooling the mean of the
patch tokens' rows (weights 1/N); for CCT's sequence pooling the rows weighted by the pooling
softmax of that image (``VisionTransformer.readout``). Everything is per sample: a batch
gives the same maps as each image alone. The gradient-weighted variant follows Chefer et al.
2021 ("Generic Attention-model Explainability…", rules 5 and 6): Ā_l = mean_h (∂y_k/∂A_l ⊙ A_l)⁺,
the part of the attention that raises the logit y_k of class k, accumulated as R ← R + Ā_l·R
from R = I, i.e. R = (I + Ā_L) ⋯ (I + Ā_1) with no row re-normalisation.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import atomic_write
from .errors import InvalidInputError, unknown_name
from .rundir import OutputExistsError  # one error for every refused overwrite
from .runtime import autocast

METHODS = ("rollout", "grad-rollout", "heads")
HEAD_FUSIONS = ("mean", "max", "min")


@dataclass
class Explanation:
    """Maps over the patch grid for a batch of images, and what the model predicted.

    Attributes:
        maps: [B, gh, gw], each map non-negative and summing to 1 over the patches (all zeros
            in the one case where no relevance reaches a patch: a grad-rollout class that no
            attention raises).
        logits: [B, K] (the pooled features for a model without a head).
        method: ``rollout``, ``grad-rollout`` or ``heads``.
        class_index: [B], the class each grad-rollout map explains; None for the other methods.
    """

    maps: Tensor
    logits: Tensor
    method: str
    class_index: Tensor | None = None


# -- the maps ------------------------------------------------------------------------------------


def fuse_heads(weights: Tensor, fusion: str = "mean") -> Tensor:
    """One attention matrix per sample from the per-head weights: [B, H, N, N] -> [B, N, N]."""
    if fusion == "mean":
        return weights.mean(dim=1)
    if fusion == "max":
        return weights.amax(dim=1)
    if fusion == "min":
        return weights.amin(dim=1)
    raise unknown_name("head fusion", fusion, HEAD_FUSIONS)


def discard_lowest(attention: Tensor, ratio: float) -> Tensor:
    """Zero the lowest ``ratio`` of each sample's off-diagonal weights: [B, N, N] -> [B, N, N].

    The threshold is found per sample, never over the batch. The diagonal (each token's weight on
    itself, the class token's included) is always kept: the reference implementation
    (jacobgil/vit-explain) keeps the class token's own weight for the same reason, and keeping the
    whole diagonal means the same for models without a class token. ``k = int(ratio · (N² − N))``
    weights are dropped per sample (more only where weights tie with the k-th lowest).
    """
    _check_ratio(ratio)
    B, N, _ = attention.shape
    k = int(ratio * (N * N - N))
    if k == 0:
        return attention
    diagonal = torch.eye(N, dtype=torch.bool, device=attention.device)
    candidates = attention.masked_fill(diagonal, math.inf).flatten(1)  # [B, N·N]
    # A selection (kthvalue) is several times faster than topk with k near N²; weights tied
    # with the k-th lowest go too, which in practice only ever means more exact zeros.
    threshold = candidates.kthvalue(k, dim=1, keepdim=True).values  # [B, 1]
    return attention.masked_fill((candidates <= threshold).view(B, N, N), 0.0)


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise InvalidInputError(
            f"discard must be a fraction in [0, 1) of the weights to drop; got {ratio}"
        )


def add_residual(attention: Tensor) -> Tensor:
    """Â = (A + I) / rowsum(A + I): the residual connection as attention to oneself, rows sum to 1.

    Args:
        attention: [B, N, N], non-negative.
    """
    eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
    a = attention + eye
    return a / a.sum(dim=-1, keepdim=True)


def readout_query(
    batch: int, num_tokens: int, num_prefix_tokens: int, global_pool: str, like: Tensor
) -> Tensor:
    """The row of the joint attention to read, [B, N]: the class token, or the mean of the patches.

    A model with a class token reads it (what the head sees; with DeiT's distillation token the
    mean of the two prefix rows, as the head averages their logits), unless it pools by
    averaging (``global_pool="avg"``): then, as for models without a class token, the map is the
    mean of the patch tokens' rows, since the head sees the mean of those tokens. Sequence
    pooling ("seq") weighs the rows per image: pass the model's ``readout`` weights instead.
    """
    if global_pool == "seq":
        raise InvalidInputError(
            "global_pool='seq' weighs the tokens per image: pass the model's pooling weights "
            "(VisionTransformer.forward_attention(x, return_readout=True)) as query="
        )
    q = like.new_zeros(batch, num_tokens)
    if num_prefix_tokens and global_pool != "avg":
        q[:, :num_prefix_tokens] = 1.0 / num_prefix_tokens
    else:
        q[:, num_prefix_tokens:] = 1.0 / (num_tokens - num_prefix_tokens)
    return q


def propagate(attentions: Sequence[Tensor], query: Tensor) -> Tensor:
    """``query`` · Â_L ⋯ Â_1 with Â_l = add_residual(A_l), per sample.

    Only one row of the product is needed, so it is carried from the top as a vector: L
    vector-matrix products instead of L matrix products.

    Args:
        attentions: L fused attention matrices [B, N, N], first layer first.
        query: [B, N], which row (or mix of rows) of the product to return.

    Returns:
        [B, N], the relevance of every input token.
    """
    v = query.unsqueeze(1)  # [B, 1, N]
    for a in reversed(attentions):
        # v · (A + I) / s with row sums s = rowsum(A) + 1 is (v / s) · A + v / s: the same
        # product as v · add_residual(A) without writing an N×N matrix per layer.
        u = v / (a.sum(dim=-1) + 1.0).unsqueeze(1)
        v = torch.baddbmm(u, u, a)
    return v.squeeze(1)


def accumulate(attentions: Sequence[Tensor], query: Tensor) -> Tensor:
    """``query`` · (I + Ā_L) ⋯ (I + Ā_1): Chefer et al.'s rule R ← R + Ā_l·R from R = I, per sample.

    Unlike :func:`propagate` the rows are not re-normalised: Ā_l is a relevance, not a
    distribution, and re-normalising would make every token pass on the same total however much
    relevance its row holds; the paper's rule keeps those magnitudes. Carried from the top as a
    vector, as in :func:`propagate`.

    Args:
        attentions: L relevance matrices Ā_l [B, N, N], non-negative, first layer first.
        query: [B, N], which row (or mix of rows) of R to return.

    Returns:
        [B, N], the relevance of every input token.
    """
    v = query.unsqueeze(1)  # [B, 1, N]
    for a in reversed(attentions):
        v = torch.baddbmm(v, v, a)  # v · (I + Ā) without an N×N identity
    return v.squeeze(1)


def to_grid(relevance: Tensor, num_prefix_tokens: int, grid_size: tuple[int, int]) -> Tensor:
    """Token relevance [B, N] -> map over the patches [B, gh, gw], summing to 1 per sample.

    A sample whose patches get no relevance at all keeps an all-zero map (not NaN).
    """
    patches = relevance[:, num_prefix_tokens:]
    gh, gw = grid_size
    if patches.shape[1] != gh * gw:
        raise InvalidInputError(
            f"{patches.shape[1]} patch tokens do not fill a {gh}×{gw} grid; "
            "pass the grid of the images the weights come from"
        )
    total = patches.sum(dim=1, keepdim=True)
    patches = patches / total.clamp_min(torch.finfo(patches.dtype).tiny)
    return patches.reshape(-1, gh, gw)


def rollout(
    attentions: Sequence[Tensor],
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    global_pool: str = "token",
    head_fusion: str = "mean",
    discard: float = 0.0,
    query: Tensor | None = None,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) from per-head weights.

    Args:
        attentions: every block's weights [B, H, N, N], first block first (as
            ``VisionTransformer.forward_attention`` returns them).
        grid_size: (gh, gw) of the patch grid, N = num_prefix_tokens + gh·gw.
        num_prefix_tokens: class token(s) before the patches.
        global_pool: ``token`` reads the class token's row, ``avg`` the mean of the patches' rows.
        head_fusion: ``mean``, ``max`` or ``min`` over heads.
        discard: fraction of the lowest off-diagonal weights to zero in each layer (see
            :func:`discard_lowest`).
        query: the head's pooling weights over the tokens [B, N] (``VisionTransformer.readout``);
            None: from ``num_prefix_tokens`` and ``global_pool`` (:func:`readout_query`).

    Returns:
        maps [B, gh, gw], summing to 1 per sample.
    """
    _check_ratio(discard)
    if head_fusion not in HEAD_FUSIONS:
        raise unknown_name("head fusion", head_fusion, HEAD_FUSIONS)
    fused = [discard_lowest(fuse_heads(w, head_fusion), discard) for w in attentions]
    B, N, _ = fused[0].shape
    if query is None:
        query = readout_query(B, N, num_prefix_tokens, global_pool, fused[0])
    return to_grid(propagate(fused, query), num_prefix_tokens, grid_size)


def head_maps(
    attentions: Sequence[Tensor],
    grid_size: tuple[int, int],
    layer: int = -1,
    heads: int | Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    global_pool: str = "token",
    query: Tensor | None = None,
) -> Tensor:
    """The raw attention of one layer's heads, read from the class token (or the patch mean).

    Args:
        attentions: every block's weights [B, H, N, N].
        layer: block index (negative counts from the end).
        heads: one head, several, or None for all.
        query: the rows to read [B, N] (the head's pooling weights), as for :func:`rollout`.

    Returns:
        maps [B, len(heads), gh, gw]: the weights on the patches, as they are (not re-normalised;
        what is missing from 1 went to the class token).
    """
    layer = check_index("layer", layer, len(attentions), "blocks")
    w = attentions[layer]
    B, H, N, _ = w.shape
    if heads is None:
        heads = list(range(H))
    elif isinstance(heads, int):
        heads = [heads]
    heads = [check_index("head", h, H, "heads in each block") for h in heads]
    if query is None:
        query = readout_query(B, N, num_prefix_tokens, global_pool, w)  # [B, N]
    rows = torch.einsum("bn,bhnm->bhm", query, w[:, heads])  # [B, h, N]
    gh, gw = grid_size
    return rows[..., num_prefix_tokens:].reshape(B, len(heads), gh, gw)


def check_index(name: str, index: int, size: int, what: str) -> int:
    """``index`` into ``size`` items (negative from the end) as 0..size-1; the error names the
    valid range, e.g. ``check_index("layer", 12, 12, "blocks")``."""
    if not -size <= index < size:
        raise InvalidInputError(
            f"{name} {index} is out of range: the model has {size} {what} "
            f"(valid: 0..{size - 1}, or -{size}..-1 from the end)"
        )
    return index % size


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Dropout and drop-path would make the maps random; restore the caller's mode afterwards.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def token_grid(model: nn.Module, images: Tensor) -> tuple[int, int]:
    """The token grid of ``images`` as the model's own stem makes it (CCT's is img / 2ⁿ)."""
    return model.patch_embed.dynamic_grid(tuple(images.shape[-2:]))


def _check_has_attention(model: nn.Module) -> None:
    if not callable(getattr(model, "forward_attention", None)):
        raise InvalidInputError(
            f"{type(model).__name__} has no attention to explain (no forward_attention); "
            "attention maps need a VisionTransformer"
        )


def _attend(model: nn.Module, images: Tensor) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """Logits, attentions and the head's pooling weights (None from a model that lacks them)."""
    if "return_readout" in inspect.signature(model.forward_attention).parameters:
        return model.forward_attention(images, return_readout=True)
    # A forward_attention without readout: the pooling is read from the model's attributes.
    logits, attentions = model.forward_attention(images)
    return logits, attentions, None


def class_indices(
    class_index: int | Sequence[int] | Tensor, batch: int, num_classes: int
) -> Tensor:
    """One class per sample, [B]; an int applies to every sample. Errors name the valid range."""
    index = torch.as_tensor(class_index, dtype=torch.long).flatten()
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch:
        raise InvalidInputError(
            f"give one class index, or one per image ({batch}); got {index.numel()}"
        )
    bad = index[(index < 0) | (index >= num_classes)]
    if bad.numel():
        raise InvalidInputError(
            f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )
    return index


def grad_rollout(
    model: nn.Module,
    images: Tensor,
    class_index: int | Sequence[int] | Tensor | None = None,
    precision: str = "fp32",
) -> Explanation:
    """Gradient-weighted rollout: why the model gives class k (Chefer et al. 2021).

    In each layer Ā_l = mean_h (∂y_k/∂A_l ⊙ A_l)⁺ keeps the attention that raises the logit y_k;
    the relevance R = (I + Ā_L) ⋯ (I + Ā_1) is the paper's R ← R + Ā_l·R from R = I (see
    :func:`accumulate`), read out as :func:`rollout` reads its product.
    One backward pass serves the whole batch: samples do not interact in the forward pass, so the
    gradient of Σ_b y_{b,k_b} with respect to sample b's weights is sample b's own gradient.

    Args:
        model: a ``VisionTransformer`` with a classifier head.
        images: [B, C, H, W], normalised as the model expects.
        class_index: the class to explain, one for all or one per image; None: the predicted one.
        precision: of the forward and backward pass ("fp32" or "bf16"); the relevance is
            accumulated in fp32 either way.
    """
    _check_has_attention(model)
    if not getattr(model, "num_classes", 0):
        raise InvalidInputError(
            "grad-rollout needs a classifier head, and this model has none (num_classes=0); "
            "use method 'rollout' or 'heads', which need no head"
        )
    with _eval_mode(model), torch.enable_grad():
        # An input that needs a gradient puts the weights in the graph even when every
        # parameter is frozen.
        x = images.detach().clone().requires_grad_(True)
        with autocast(precision, images.device):
            logits, attentions, readout = _attend(model, x)
        logits = logits.float()
        if class_index is None:
            index = logits.argmax(dim=-1)
        else:
            index = class_indices(class_index, logits.shape[0], logits.shape[1])
        target = logits.gather(1, index[:, None]).sum()
        grads = torch.autograd.grad(target, attentions)
    fused = [
        (g.float() * a.detach().float()).clamp(min=0).mean(dim=1) for g, a in zip(grads, attentions)
    ]
    B, N, _ = fused[0].shape
    if readout is not None:
        query = readout.detach().float()
    else:
        query = readout_query(B, N, model.num_prefix_tokens, model.global_pool, fused[0])
    maps = to_grid(accumulate(fused, query), model.num_prefix_tokens, token_grid(model, images))
    return Explanation(maps, logits.detach(), "grad-rollout", index)


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "rollout",
    *,
    head_fusion: str = "mean",
    discard: float = 0.0,
    layer: int = -1,
    head: int | None = None,
    class_index: int | Sequence[int] | Tensor | None = None,
    precision: str = "fp32",
) -> Explanation:
    """Maps of where a ViT looks, for a batch of images, from one forward pass.

    Args:
        model: a ``VisionTransformer`` (any registered config: class token, DeiT's class +
            distillation tokens, average or sequence pooling; any stem, whose own token grid is
            used). A model without ``forward_attention`` (a CNN) is an error.
        images: [B, C, H, W], normalised as the model expects.
        method: ``rollout`` (:func:`rollout`), ``grad-rollout`` (:func:`grad_rollout`, needs a
            head) or ``heads`` (the raw weights of block ``layer``: head ``head``, or the mean of
            its heads when None).
        head_fusion, discard: for ``rollout``.
        layer, head: for ``heads``.
        class_index: for ``grad-rollout``.
        precision: of the forward pass ("fp32" or "bf16", see ``keymodels.runtime``); the
            maps are computed from its weights in fp32 either way (bf16 maps correlate with fp32
            ones at r ≥ 0.999, ``benchmarks/bench_fastpath_accuracy.py``).

    Returns:
        An :class:`Explanation`; ``maps`` [B, gh, gw] sum to 1 per image.
    """
    if method not in METHODS:
        raise unknown_name("explanation method", method, METHODS)
    if images.dim() != 4:
        raise InvalidInputError(f"images must be [B, C, H, W]; got shape {tuple(images.shape)}")
    _check_has_attention(model)
    if method == "grad-rollout":
        return grad_rollout(model, images, class_index, precision)
    grid = token_grid(model, images)
    logits, attentions, query = attend(model, images, precision)
    with torch.no_grad():
        prefix, pool = model.num_prefix_tokens, model.global_pool
        if method == "rollout":
            maps = rollout(attentions, grid, prefix, pool, head_fusion, discard, query)
        else:
            raw = head_maps(attentions, grid, layer, head, prefix, pool, query).mean(dim=1)
            maps = raw / raw.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return Explanation(maps, logits, method)


def attend(
    model: nn.Module, images: Tensor, precision: str = "fp32"
) -> tuple[Tensor, list[Tensor], Tensor]:
    """One forward pass in eval mode: logits [B, K], every block's weights [B, H, N, N] and the
    row the head reads [B, N] (:func:`readout_query`, or the model's pooling weights), all fp32.

    What :func:`explain` computes its maps from; a server runs it once for a batch of requests and
    reads every map (rollout, each layer and head, a patch's row) from its result.
    """
    _check_has_attention(model)
    with _eval_mode(model), torch.no_grad(), autocast(precision, images.device):
        logits, attentions, readout = _attend(model, images)
    # Rollout multiplies L matrices: in fp32, whatever precision the weights came in.
    logits, attentions = logits.float(), [a.float() for a in attentions]
    if readout is None:
        B, _, N, _ = attentions[0].shape
        readout = readout_query(B, N, model.num_prefix_tokens, model.global_pool, attentions[0])
    return logits, attentions, readout.float()


# -- pictures ------------------------------------------------------------------------------------


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Maps over the patch grid [B, gh, gw] -> over the pixels [B, H, W] (bilinear).

    Non-square grids and images work alike; the corners of the map stay at the image corners.
    """
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def overlay(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """The image with a heatmap blended over it.

    Args:
        image: [H, W] or [H, W, C] (C = 1 or 3), values in [0, 1].
        heat: [H, W], any scale: shown from its minimum (dark blue) to its maximum (dark red),
            so near-uniform maps show their differences too; a constant map shows as the minimum.

    Returns:
        [H, W, 3] RGB in [0, 1].
    """
    from matplotlib import colormaps

    rgb = _rgb(image)
    if heat.shape != rgb.shape[:2]:
        raise InvalidInputError(
            f"heatmap {heat.shape} and image {rgb.shape[:2]} differ in size; upsample the map first"
        )
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high - low > 1e-12 else np.zeros_like(heat)
    colour = colormaps[cmap](scaled)[..., :3]
    return (1 - alpha) * rgb + alpha * colour


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"image must be [H, W], [H, W, 1] or [H, W, 3]; got {image.shape}")
    return np.clip(image, 0.0, 1.0)


def top_predictions(
    logits: Tensor, k: int = 3, class_names: Sequence[str] | None = None
) -> list[list[tuple[str, float]]]:
    """The k most probable classes of each image as (name, probability) pairs."""
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    names = list(class_names) if class_names is not None else None
    return [
        [(names[i] if names else str(i), p) for i, p in zip(row_i.tolist(), row_p.tolist())]
        for row_i, row_p in zip(indices, values)
    ]


def format_predictions(predictions: Sequence[tuple[str, float]]) -> str:
    """``7 93% · 1 4% · 9 1%``."""
    return " · ".join(f"{name} {p:.0%}" for name, p in predictions)


def save_explanations(
    images: Tensor | np.ndarray,
    maps: Tensor,
    path: str | Path,
    titles: Sequence[str] | None = None,
    overlay_titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    columns: int = 4,
    overwrite: bool = False,
    min_display_size: int = 128,
) -> Path:
    """A PNG with each image beside its heatmap overlay, several images in one grid.

    Args:
        images: [B, C, H, W] for display, values in [0, 1] (undo the normalisation first).
        maps: [B, gh, gw]; resampled to H×W (bilinear), each shown from its minimum to its maximum.
        path: where the PNG goes; its folder is created if missing.
        titles: one per image, above the image (e.g. the top-k predictions).
        overlay_titles: one per image, above the overlay (e.g. the method).
        columns: images per row (each takes two panels).
        overwrite: replace an existing file; otherwise that is an error.
        min_display_size: smaller images are enlarged (nearest pixel) to at least this size,
            and their maps resampled to it.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} exists; choose another output path or allow overwriting "
            "(overwrite=True, --force on the command line)"
        )
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4 or images.shape[0] != maps.shape[0]:
        raise InvalidInputError(
            f"images must be [B, C, H, W] with one map each; got images {tuple(images.shape)} "
            f"and maps {tuple(maps.shape)}"
        )
    B, _, H, W = images.shape
    # Small images (8×8 digits) are enlarged for display, pixels kept sharp, the map smooth.
    scale = max(1, math.ceil(min_display_size / min(H, W)))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    heat = upsample(maps.float(), (H * scale, W * scale)).numpy()
    pictures = images.permute(0, 2, 3, 1).numpy()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plotting import use_fallback_fonts

    use_fallback_fonts()  # titles are file names: CJK and emoji drawn where a font has them
    cols = min(columns, B)
    rows = math.ceil(B / cols)
    panel = 2.6  # inches per panel: room for a title of three predictions
    fig = Figure(figsize=(2 * cols * panel, rows * panel + (0.4 if suptitle else 0.0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for b in range(B):
        r, c = divmod(b, cols)
        ax_image, ax_heat = axes[r, 2 * c], axes[r, 2 * c + 1]
        ax_image.imshow(_rgb(pictures[b]), interpolation="nearest")
        ax_heat.imshow(overlay(pictures[b], heat[b]), interpolation="nearest")
        if titles is not None:
            ax_image.set_title(titles[b], fontsize=8)
        if overlay_titles is not None:
            ax_heat.set_title(overlay_titles[b], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# -- seq2seq -------------------------------------------------------------------------------------


def save_alignment(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    weights: Tensor | np.ndarray,
    path: str | Path,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """The source × target alignment heatmap of a translation (greedy or beam output).

    Args:
        source_tokens: the N source tokens, as the encoder saw them.
        target_tokens: the T output tokens (the end token included if the weights have its row).
        weights: α_t for every output step, [T, N] (a leading batch axis of 1 is accepted).
        path: the PNG; its folder is created if missing.
        overwrite: replace an existing file; otherwise that is an error.

    Returns:
        The path written (drawn by ``keymodels.plotting.plot_alignment``, as ``translate
        --show-attention`` does).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} exists; choose another output path or allow overwriting "
            "(overwrite=True, --force on the command line)"
        )
    w = np.asarray(
        weights.detach().float().cpu() if isinstance(weights, Tensor) else weights, np.float64
    )
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 2 or w.shape != (len(target_tokens), len(source_tokens)):
        raise InvalidInputError(
            f"weights must be [T_out, N_src] = [{len(target_tokens)}, {len(source_tokens)}] "
            f"(one row per target token, one column per source token; add the end token to the "
            f"tokens if the weights have its row or column); got {w.shape}"
        )
    from . import plotting  # the seq2seq issue's figure code, shared with `translate`

    path.parent.mkdir(parents=True, exist_ok=True)
    plotting.plot_alignment(list(source_tokens), list(target_tokens), w, path, title=title)
    return path
