"""``keymodels explain``: where a trained ViT looks in images, as a PNG of heatmap overlays.

Methods: ``rollout`` (attention rollout), ``grad-rollout`` (why class K), ``heads`` (one layer's raw maps).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import InvalidInputError, KeymodelsError
from ..explain import (
    HEAD_FUSIONS,
    METHODS,
    explain,
    format_predictions,
    save_explanations,
    top_predictions,
)
from ..rundir import check_writable_output
from ..runtime import choice_key, choose_inference_precision
from . import add_precision_argument, png_path
from .train import DEFAULT_TOP_K


def _class_index(value: str | None, class_names: Sequence[str]) -> int | None:
    """``--class`` as a class name or an index."""
    if value is None:
        return None
    if value in class_names:
        return list(class_names).index(value)
    try:
        index = int(value)
    except ValueError:
        raise InvalidInputError(
            f"--class {value!r} is neither a class name nor an index; "
            f"classes: {', '.join(class_names)}"
        ) from None
    if not 0 <= index < len(class_names):
        raise InvalidInputError(
            f"--class {index} is out of range: the model has {len(class_names)} classes "
            f"(0..{len(class_names) - 1})"
        )
    return index


def _check_out(out: str | Path, force: bool) -> Path:
    out = png_path(out, "--out", "explain.png")
    check_writable_output(out, force, what="--out")
    return out


def explain_to_png(
    model_path: str | Path,
    image_paths: Sequence[str | Path],
    out: str | Path,
    *,
    method: str = "rollout",
    head_fusion: str = "mean",
    discard: float = 0.0,
    layer: int = -1,
    head: int | None = None,
    class_name: str | None = None,
    top_k: int = DEFAULT_TOP_K,
    force: bool = False,
    precision: str = "auto",
) -> tuple[Path, list[list[tuple[str, float]]]]:
    """Explain ``image_paths`` with the trained model at ``model_path``; one PNG grid at ``out``.

    ``precision`` of the forward pass: "fp32", "bf16" or "auto" (timed, see ``keymodels.runtime``).

    Returns:
        The PNG written and each image's top-k (class name, probability) pairs (empty for a model
        without a head).
    """
    from ..data import preprocess_images
    from ..hub import load_for_inference
    from ..runs import check_finite_outputs, require_vit

    out = _check_out(out, force)
    if top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1; got {top_k}")
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for p in image_paths:
        if Path(p).is_dir():
            raise InvalidInputError(
                f"{p} is a folder, not an image file; pass the images in it (e.g. {p}/*.png)"
            )
        if not Path(p).is_file():
            raise InvalidInputError(f"image {p} does not exist (or is not a file)")
    model, info = load_for_inference(model_path)
    # First: a ResNet has no attention (nor forward_attention for the "auto" precision timing).
    require_vit(model, str(model_path), "attention explanation")
    class_names = info["class_names"]
    images = preprocess_images([Path(p) for p in image_paths], info)
    index = _class_index(class_name, class_names)
    if precision == "auto":
        key = f"{choice_key(model, images, 'cpu')}/explain"
        step = functools.partial(model.forward_attention, images)
        precision = choose_inference_precision("auto", step, key).precision
    explanation = explain(
        model,
        images,
        method,
        head_fusion=head_fusion,
        discard=discard,
        layer=layer,
        head=head,
        class_index=index,
        precision=precision,
    )
    has_head = bool(model.num_classes)
    if has_head:
        check_finite_outputs(explanation.logits, info["checkpoint"])
    predictions = (
        top_predictions(explanation.logits, top_k, class_names) if has_head and top_k > 0 else []
    )
    titles = [
        Path(p).name + (f"\n{format_predictions(predictions[i])}" if predictions else "")
        for i, p in enumerate(image_paths)
    ]
    if method == "rollout":
        label = f"rollout ({head_fusion}" + (f", discard {discard:g})" if discard else ")")
        overlay_titles = [label] * len(image_paths)
    elif method == "grad-rollout":
        overlay_titles = [
            f"grad-rollout: why {class_names[int(k)]}" for k in explanation.class_index
        ]
    else:
        which = "mean of heads" if head is None else f"head {head}"
        overlay_titles = [f"layer {layer % len(model.blocks)}, {which}"] * len(image_paths)
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1, 1)
    display = (images * std + mean).clamp(0.0, 1.0)
    path = save_explanations(
        display, explanation.maps, out, titles, overlay_titles, overwrite=force
    )
    return path, predictions


def run(args: argparse.Namespace) -> int:
    path, predictions = explain_to_png(
        args.model,
        args.images,
        args.out,
        method=args.method,
        head_fusion=args.head_fusion,
        discard=args.discard,
        layer=args.layer,
        head=args.head,
        class_name=args.class_name,
        top_k=args.top_k,
        force=args.force,
        precision=args.precision,
    )
    for image, top in zip(args.images, predictions):
        print(f"{image}: {format_predictions(top)}")
    print(f"wrote {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="heatmaps of where a trained ViT looks in images", description=__doc__
    )
    p.add_argument("model", metavar="DIR_OR_CHECKPOINT", help="a training run folder or checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (one grid for all)")
    p.add_argument("--method", choices=METHODS, default="rollout", help="(default: rollout)")
    p.add_argument(
        "--head-fusion",
        choices=HEAD_FUSIONS,
        default="mean",
        help="rollout: fuse heads by (default: mean)",
    )
    p.add_argument(
        "--discard",
        type=float,
        default=0.0,
        help="rollout: drop this fraction of the lowest weights per layer, e.g. 0.9 (default: 0)",
    )
    p.add_argument(
        "--layer", type=int, default=-1, help="heads: block index (default: -1, the last)"
    )
    p.add_argument(
        "--head", type=int, default=None, help="heads: head index (default: mean of heads)"
    )
    p.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="K",
        help="grad-rollout: class name or index to explain (default: the predicted class)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help=f"predictions in each title (default: {DEFAULT_TOP_K})",
    )
    p.add_argument("--out", required=True, help="PNG to write; its folder is created if missing")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_precision_argument(p, "the forward pass")
    p.set_defaults(func=run)


def demo_part(out: Path) -> None:
    """Explain one digits test image with the ViT that the training part wrote to out/vit-digits."""
    from PIL import Image

    from ..checkpoint import resolve_checkpoint
    from ..data import load_dataset

    run_dir = out / "vit-digits"
    try:
        resolve_checkpoint(run_dir)
    except KeymodelsError:
        print(
            f"[explain] skipped: no trained digits ViT in {run_dir} (the ViT training part writes it)"
        )
        return
    image, label = load_dataset("digits").test[0]
    dest = out / "explain"
    dest.mkdir(parents=True, exist_ok=True)
    digit = dest / f"digits-test0-label{label}.png"
    Image.fromarray(image[0].numpy()).save(digit)
    # The demo's own folder: a second run replaces its pictures.
    path, predictions = explain_to_png(
        run_dir, [digit], dest / "digits-test0-rollout.png", force=True
    )
    print(f"[explain] digits test image 0 (label {label}): {format_predictions(predictions[0])}")
    print(f"[explain] attention rollout written to {path}")
