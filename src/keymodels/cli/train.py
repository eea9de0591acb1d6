"""``keymodels train | eval | predict``: train a ViT from a recipe, evaluate it, classify images.

Also the demo part that trains a small ViT on the embedded digits.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..data import (
    DATASETS,
    collate_skip,
    eval_transform,
    get_recipe,
    list_recipes,
    load_dataset,
    preprocess_images,
)
from ..errors import InvalidInputError
from ..runtime import optimize
from . import add_compile_argument, add_precision_argument

# Command-line flag -> Recipe field, for the plain overrides.
RECIPE_FLAGS = {
    "model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "min_lr": "min_lr", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "clip_grad": "clip_grad", "ema": "ema",
    "workers": "workers", "seed": "seed", "img_size": "img_size", "val_fraction": "val_fraction",
}  # fmt: skip
AUGMENT_FLAGS = ("crop_padding", "hflip", "auto_augment", "random_erasing", "mixup", "cutmix")


def recipe_from_args(args: argparse.Namespace) -> Any:
    overrides = {
        f: getattr(args, a) for a, f in RECIPE_FLAGS.items() if getattr(args, a) is not None
    }
    augment = {a: getattr(args, a) for a in AUGMENT_FLAGS if getattr(args, a) is not None}
    if augment:
        overrides["augment"] = augment
    if args.drop_path is not None:
        overrides["model_overrides"] = {
            **get_recipe(args.recipe).model_overrides,
            "drop_path_rate": args.drop_path,
        }
    return get_recipe(args.recipe, **overrides)


def _setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger().setLevel(logging.INFO)  # the root logger may be set up already
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def run_train(args: argparse.Namespace) -> int:
    from ..train import train

    _setup(args)
    recipe = recipe_from_args(args)
    start = time.perf_counter()
    result = train(
        recipe, args.out, args.data_dir, resume=args.resume, force=args.force, device=args.device,
        precision=args.precision, compile=args.compile, deterministic=args.deterministic,
        download=args.download, on_error=args.on_error, on_nonfinite=args.on_nonfinite,
        max_steps=args.max_steps,
        progress=not args.no_progress,
    )  # fmt: skip
    if not result.results:  # not rank 0 under torchrun
        return 0
    elapsed = time.perf_counter() - start
    r = result.results
    if args.json:
        print(json.dumps({**r, "wall_s": elapsed, "out": str(result.out)}))
    else:
        print(
            f"{recipe.name}: {recipe.model}, {r['epochs']} epochs in {elapsed:.0f} s: "
            f"test accuracy {r['test_acc']:.2%} (best {r['best_acc']:.2%})"
        )
        print(f"outputs in {result.out.resolve()} (best.safetensors, train_curves.png, ...)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..train import evaluate, load_trained

    _setup(args)
    model, info = load_trained(args.run)
    recipe = info["recipe"]
    dataset = recipe.get("dataset")
    if dataset not in DATASETS:
        raise InvalidInputError(
            f"{info['checkpoint']} does not say which data set it was trained on"
        )
    data_dir = args.data_dir or info.get("data_dir")
    splits = load_dataset(
        dataset, data_dir, seed=recipe.get("seed", 0), val_fraction=recipe.get("val_fraction", 0.1),
        in_chans=info["in_chans"], on_error=args.on_error,
    )  # fmt: skip
    if splits.classes != info["class_names"]:
        raise InvalidInputError(
            f"the data in {data_dir} has classes {splits.classes[:10]}, the model was trained on "
            f"{info['class_names'][:10]}"
        )
    resize = (
        not hasattr(splits.test, "images")
        or list(splits.test.images.shape[-2:]) != info["img_size"]
    )
    splits.test.transform = eval_transform(info["img_size"], info["mean"], info["std"], resize)
    loader = torch.utils.data.DataLoader(
        splits.test, batch_size=args.batch_size, collate_fn=collate_skip
    )
    example = next(iter(loader))[0]
    fast = optimize(model, args.precision, args.compile, example, expected_items=len(splits.test))
    res = evaluate(fast, loader, len(info["class_names"]))
    per_class = dict(zip(info["class_names"], res["per_class_acc"]))
    if args.json:
        print(json.dumps({"accuracy": res["acc"], "loss": res["loss"], "n": res["n"],
                          "skipped": res["skipped"], "per_class_acc": per_class,
                          "confusion": res["confusion"], "class_names": info["class_names"],
                          "checkpoint": info["checkpoint"]}))  # fmt: skip
        return 0
    print(f"{info['checkpoint']}: accuracy {res['acc']:.2%} on {res['n']} {dataset} test images")
    width = max(len(c) for c in info["class_names"])
    for name, acc in per_class.items():
        print(f"  {name:<{width}}  {acc:.2%}")
    if len(info["class_names"]) <= 20:
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(info["class_names"], res["confusion"]):
            print(f"  {name:<{width}} " + " ".join(f"{v:>5d}" for v in row))
    return 0


def predict(
    run: str | Path,
    images: list[str | Path],
    top_k: int = 5,
    precision: str = "auto",
    compile: str = "auto",
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, with the model of ``run``, on the
    inference fast path of ``precision`` and ``compile`` (see :func:`keymodels.runtime.optimize`)."""
    from ..train import load_trained

    model, info = load_trained(run)
    x = preprocess_images(images, info)
    fast = optimize(model, precision, compile, x, expected_items=len(x))
    with torch.inference_mode():
        probs = fast(x).softmax(-1)
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    return [
        {
            "image": str(path),
            "top": [
                {"class": info["class_names"][int(i)], "prob": float(p)}
                for p, i in zip(top.values[n], top.indices[n])
            ],
        }
        for n, path in enumerate(images)
    ]


def run_predict(args: argparse.Namespace) -> int:
    _setup(args)
    if args.top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1; got {args.top_k}")
    rows = predict(args.run, args.images, args.top_k, args.precision, args.compile)
    if args.json:
        print(json.dumps({"predictions": rows}))
        return 0
    for row in rows:
        tops = ", ".join(f"{t['class']} {t['prob']:.1%}" for t in row["top"])
        print(f"{row['image']}: {tops}")
    return 0


def vit_training_part(out: Path) -> None:
    """Train the digits recipe (a small plain ViT) on the embedded digits, predict a few test images."""
    from PIL import Image

    from ..train import train

    torch.set_num_threads(min(2, torch.get_num_threads()))
    run_dir = out / "vit-digits"
    start = time.perf_counter()
    # The demo's own folder: a second `make demo` starts its run over.
    result = train(get_recipe("digits"), run_dir, progress=False, force=True)
    elapsed = time.perf_counter() - start
    r = result.results
    print(
        f"[vit-train] {r['model']} trained on 1,437 8×8 digits for {r['epochs']} epochs in "
        f"{elapsed:.0f} s: test accuracy {r['test_acc']:.2%} on 360 held-out digits"
    )
    samples = run_dir / "samples"
    samples.mkdir(exist_ok=True)
    test = load_dataset("digits").test
    paths = []
    for i in range(0, 40, 8):
        path = samples / f"test{i:03d}_label{int(test.labels[i])}.png"
        Image.fromarray(test.images[i, 0].numpy(), "L").resize((64, 64), Image.NEAREST).save(path)
        paths.append(path)
    for row in predict(run_dir, paths, top_k=2):
        tops = ", ".join(f"{t['class']} {t['prob']:.0%}" for t in row["top"])
        print(f"[vit-train] {Path(row['image']).name}: {tops}")
    print(
        f"[vit-train] checkpoints, metrics.csv, train_curves.png, confusion_matrix.png in {run_dir.resolve()}"
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a ViT from scratch from a recipe",
        description="Train a Vision Transformer from a recipe; writes checkpoints and plots to --out. "
        f"Recipes: {', '.join(list_recipes())}.",
    )  # fmt: skip
    p.add_argument("--recipe", required=True, help=f"one of {', '.join(list_recipes())}")
    p.add_argument("--data-dir", help="the data set's files (not needed for digits)")
    p.add_argument("--out", required=True, help="run folder for checkpoints, metrics, plots")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--force", action="store_true", help="start over in an OUT that holds a run")
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--model", help="a registered model name (keymodels models)")
    for flag, typ in [("epochs", int), ("batch-size", int), ("lr", float), ("min-lr", float),
                      ("weight-decay", float), ("warmup-epochs", float),
                      ("label-smoothing", float), ("clip-grad", float), ("ema", float),
                      ("workers", int), ("seed", int), ("img-size", int), ("val-fraction", float),
                      ("drop-path", float), ("crop-padding", int), ("random-erasing", float),
                      ("mixup", float), ("cutmix", float)]:  # fmt: skip
        g.add_argument(f"--{flag}", type=typ)
    g.add_argument("--auto-augment", choices=["", "trivial", "randaugment"])
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_precision_argument(r, "training (CUDA: bf16, else fp16)")
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--deterministic", action="store_true", help="deterministic kernels only")
    r.add_argument("--download", action="store_true", help="fetch the data set first (online)")
    r.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                   help="unreadable image files: skip and count (default) or fail naming the file")  # fmt: skip
    r.add_argument("--on-nonfinite", choices=["stop", "skip"], default="stop",
                   help="a NaN/inf loss: stop, keeping the last good checkpoint (default), or "
                   "skip the step and count it")  # fmt: skip
    r.add_argument("--max-steps", type=int, help="stop after this many steps (quick trials)")
    r.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run_train)


def add_parser(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    p = sub.add_parser("eval", help="test accuracy of a trained ViT (per class, confusion)")
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint file")
    p.add_argument("--data-dir", help="the data set's files (not needed for digits)")
    p.add_argument("--batch-size", type=int, default=500)
    add_precision_argument(p, "inference")
    add_compile_argument(p)
    p.add_argument("--on-error", choices=["skip", "fail"], default="skip")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="classify image files with a trained ViT")
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint file")
    p.add_argument("images", nargs="+", help="image files of any size and mode")
    p.add_argument("--top-k", type=int, default=5)
    add_precision_argument(p, "inference")
    add_compile_argument(p)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_predict)
