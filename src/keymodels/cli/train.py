"""``keymodels train | eval | predict``: train a ViT from a recipe, evaluate it, classify images.

Also the demo part that trains a small ViT on the embedded digits.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..data import (
    DATASETS,
    Augment,
    Recipe,
    collate_skip,
    dataset_transform,
    get_recipe,
    list_recipes,
    load_dataset,
)
from ..errors import InvalidInputError
from ..hub import load_for_inference
from ..runs import evaluate, predict, run_tta, with_tta
from ..runtime import optimize
from . import add_compile_argument, add_precision_argument, positive_int

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 3  # predict and explain: classes listed per image
MAX_DEFAULT_THREADS = 4  # see default_threads
THREADS_HELP = (
    f"torch CPU threads (default: the idle cores by the load average, 1 to {MAX_DEFAULT_THREADS})"
)

# Command-line flag -> Recipe field, for the plain overrides.
RECIPE_FLAGS = {
    "model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "min_lr": "min_lr", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "clip_grad": "clip_grad", "ema": "ema",
    "workers": "workers", "seed": "seed", "img_size": "img_size", "val_fraction": "val_fraction",
    "val_size": "val_size", "train_subset": "train_subset", "teacher": "teacher", "tta": "tta",
}  # fmt: skip
AUGMENT_FLAGS = ("crop_padding", "random_resized_crop", "hflip", "auto_augment", "random_erasing",
                 "mixup", "cutmix")  # fmt: skip


def recipe_from_args(args: argparse.Namespace) -> Any:
    """The recipe named by ``--recipe`` with the flags given; on ``--resume``, the run's own
    recipe (``OUT/recipe.json``) with the flags given, so that a resume needs no flag repeated."""
    overrides = {
        f: getattr(args, a) for a, f in RECIPE_FLAGS.items() if getattr(args, a) is not None
    }
    augment = {a: getattr(args, a) for a in AUGMENT_FLAGS if getattr(args, a) is not None}
    if augment:
        overrides["augment"] = augment
    stored = Path(args.out) / "recipe.json" if getattr(args, "resume", False) else None
    if stored is not None and stored.is_file():
        base = Recipe.from_dict(json.loads(stored.read_text())["recipe"])
    else:
        base = get_recipe(args.recipe)
    if overrides.get("teacher"):  # a resume compares it with the recorded one
        overrides["teacher"] = str(Path(overrides["teacher"]).resolve())
    if args.drop_path is not None:
        overrides["model_overrides"] = {**base.model_overrides, "drop_path_rate": args.drop_path}
    d = base.to_dict()
    if "augment" in overrides:
        overrides["augment"] = {**d["augment"], **overrides["augment"]}
    return Recipe.from_dict({**d, **overrides})


def default_threads() -> int:
    """torch CPU threads when ``--threads`` is not given: the idle cores, at least 1, at most 4.

    Idle cores are the cores this process may use minus the 1-minute load average. torch's own
    default (one thread per core) oversubscribes a machine that other jobs keep busy: its threads
    wait on each other at every op, and ViT training ran 6-10× slower (docs/training.md).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows
        busy = 0
    # torch.get_num_threads(): a lower setting made in this process (tests, the demo) stays.
    return max(1, min(cores - busy, MAX_DEFAULT_THREADS, torch.get_num_threads()))


def _setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger().setLevel(logging.INFO)  # the root logger may be set up already
    torch.set_num_threads(getattr(args, "threads", None) or default_threads())
    if getattr(args, "device", None) == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "--device cuda: no GPU is visible (torch.cuda.is_available() is False: no NVIDIA "
            "driver, CUDA_VISIBLE_DEVICES empty, or a CPU-only torch); leave out --device to "
            "train on the CPU"
        )


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
        chosen = (
            f"best validation accuracy {r['val_acc']:.2%} (epoch {r['best_epoch']})"
            if r["best_epoch"] is not None
            else f"validation accuracy {r['val_acc']:.2%} (no epoch finished: the last weights)"
        )
        print(
            f"{recipe.name}: {recipe.model}, {r['epochs']} epochs in {elapsed:.0f} s: {chosen}, "
            + (
                f"test accuracy {r['test_acc']:.2%}"
                if r["test_acc"] is not None
                else "no test split"
            )
        )
        print(f"outputs in {result.out.resolve()} (best.safetensors, train_curves.png, ...)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    _setup(args)
    model, info = load_for_inference(args.run)
    if info["missing"]:
        raise InvalidInputError(
            f"{info['checkpoint']}: its config.json records no {' and no '.join(info['missing'])}, "
            "which evaluating needs; save it again with save_pretrained(model, dir, class_names=…, "
            "preprocessing={'mean': …, 'std': …}), or evaluate the training run it came from"
        )
    recipe = info["recipe"]
    dataset = args.dataset or recipe.get("dataset")
    if dataset not in DATASETS:
        raise InvalidInputError(
            f"{info['checkpoint']} does not say which data set it was trained on; pass "
            f"--dataset ({', '.join(DATASETS)}) and --data-dir"
        )
    if args.split == "val" and (
        info.get("eval_split") != "val" or dataset != recipe.get("dataset")
    ):
        # Only the run's own recorded hold-out is a validation split: any other "val" images
        # (another data set, a run before validation splits, a save_pretrained folder) could
        # have been training images.
        raise InvalidInputError(
            f"{info['checkpoint']} records no validation split of {dataset} (trained before "
            'validation splits, on other data, or saved without its recipe); its "val" images '
            "could be training images: evaluate --split test"
        )
    data_dir = args.data_dir or info.get("data_dir")
    # The run's own hold-out: the same seed and share give the same validation images.
    splits = load_dataset(
        dataset, data_dir, seed=recipe.get("seed", 0), val_fraction=recipe.get("val_fraction", 0.1),
        val_size=recipe.get("val_size"), in_chans=info["in_chans"], on_error=args.on_error,
    )  # fmt: skip
    data = splits.val if args.split == "val" else splits.test
    if data is None:
        raise InvalidInputError(
            f"the data in {data_dir} has no test split; evaluate with --split val"
        )
    if splits.classes != info["class_names"]:
        raise InvalidInputError(
            f"the data in {data_dir} has classes {splits.classes[:10]}, the model was trained on "
            f"{info['class_names'][:10]}"
        )
    # The engine's own evaluation transform, so --split val gives the run's val_acc.
    data.transform = dataset_transform(
        data, Augment(), tuple(info["img_size"]), info["mean"], info["std"]
    )
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, collate_fn=collate_skip)
    example = next(iter(loader))[0]
    tta = check_tta(args.tta, info)
    # Wrapped before optimize, so that its timing (and the compile decision) sees both passes.
    fast = optimize(with_tta(model, tta), args.precision, args.compile, example, len(data))
    res = evaluate(fast, loader, len(info["class_names"]))
    if not math.isfinite(res["loss"]):
        raise InvalidInputError(
            f"the model in {info['checkpoint']} gives NaN or infinite outputs: its weights are "
            "broken (a diverged run or a damaged file); use an earlier checkpoint or train again"
        )
    per_class = dict(zip(info["class_names"], res["per_class_acc"]))
    if args.json:
        # "val_acc" or "test_acc" as well as "accuracy": the name says which split it is.
        print(json.dumps({"split": args.split, "accuracy": res["acc"], "loss": res["loss"],
                          f"{args.split}_acc": res["acc"], f"{args.split}_loss": res["loss"],
                          "n": res["n"], "tta": tta,
                          "skipped": res["skipped"], "per_class_acc": per_class,
                          "confusion": res["confusion"], "class_names": info["class_names"],
                          "checkpoint": info["checkpoint"]}))  # fmt: skip
        return 0
    print(
        f"{info['checkpoint']}: accuracy {res['acc']:.2%} on {res['n']} {dataset} "
        f"{args.split} images" + (" (each averaged with its mirror)" if tta else "")
    )
    width = max(len(c) for c in info["class_names"])
    for name, acc in per_class.items():
        print(f"  {name:<{width}}  {acc:.2%}")
    if len(info["class_names"]) <= 20:
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(info["class_names"], res["confusion"]):
            print(f"  {name:<{width}} " + " ".join(f"{v:>5d}" for v in row))
    return 0


def check_tta(asked: bool | None, info: dict[str, Any]) -> bool:
    """``--tta/--no-tta`` or, not given, the run's recipe; a warning where the run never saw a
    mirrored image (a mirrored digit is another digit)."""
    tta = run_tta(info) if asked is None else asked
    augment = (info.get("recipe") or {}).get("augment")
    if tta and augment is not None and not augment.get("hflip"):
        log.warning(
            "--tta: %s was trained without mirrored images (augment.hflip off); averaging with "
            "mirrors suits classes that mirroring keeps (clothes, photos), not digits or text",
            info["checkpoint"],
        )
    return tta


def run_predict(args: argparse.Namespace) -> int:
    _setup(args)
    if args.top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1; got {args.top_k}")
    loaded = load_for_inference(args.run)
    rows = predict(
        loaded, args.images, args.top_k, args.precision, args.compile, on_error=args.on_error,
        tta=check_tta(args.tta, loaded[1]),
    )  # fmt: skip
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
        f"[vit-train] {r['model']} trained on {r['split_sizes']['train']:,} 8×8 digits for {r['epochs']} epochs in "
        f"{elapsed:.0f} s: test accuracy {r['test_acc']:.2%} on 360 held-out digits "
        f"(checkpoint chosen on {r['split_sizes']['val']} validation digits)"
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
                      ("workers", int), ("seed", int), ("img-size", int), ("val-fraction", float), ("val-size", positive_int),
                      ("train-subset", positive_int),
                      ("drop-path", float), ("crop-padding", int), ("random-erasing", float),
                      ("random-resized-crop", float), ("mixup", float), ("cutmix", float)]:  # fmt: skip
        g.add_argument(f"--{flag}", type=typ)
    g.add_argument(
        "--teacher", metavar="RUN_DIR",
        help="DeiT hard distillation: a trained classifier's run folder labels the batches for the "
        "student's distillation token (a 'deit_*distilled*' --model)",
    )  # fmt: skip
    g.add_argument("--auto-augment", choices=["", "trivial", "randaugment"])
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="test-time augmentation: validation and test average each image with its mirror",
    )  # fmt: skip
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
    r.add_argument(
        "--max-steps", type=positive_int, help="stop after this many steps (quick trials)"
    )
    r.add_argument("--threads", type=positive_int, help=THREADS_HELP)
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run_train)


def add_parser(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    p = sub.add_parser("eval", help="accuracy of a trained model on the test or validation split")
    p.add_argument(
        "run", help="run folder (its best checkpoint), checkpoint file or save_pretrained folder"
    )
    p.add_argument("--data-dir", help="the data set's files (not needed for digits)")
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        help="the data set to test on (default: the run's; needed for save_pretrained folders)",
    )
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="test (default) or val: the run's validation hold-out, that chose its checkpoint",
    )
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="average each image with its mirror (default: as the run's recipe evaluated)",
    )  # fmt: skip
    add_precision_argument(p, "inference")
    add_compile_argument(p)
    p.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                   help="unreadable image files: skip and count (default) or fail naming the file")  # fmt: skip
    p.add_argument("--threads", type=positive_int, help=THREADS_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="classify image files with a trained ViT")
    p.add_argument(
        "run", help="run folder (its best checkpoint), checkpoint file or save_pretrained folder"
    )
    p.add_argument("images", nargs="+", help="image files of any size and mode")
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help=f"classes listed per image (default: {DEFAULT_TOP_K})",
    )
    p.add_argument(
        "--on-error",
        choices=["skip", "fail"],
        default="fail",
        help="an image file that cannot be read: fail naming it (default), or skip it: named on "
        "stderr and left out of the output",
    )
    p.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="average each image with its mirror (default: as the run's recipe evaluated)",
    )  # fmt: skip
    add_precision_argument(p, "inference")
    add_compile_argument(p)
    p.add_argument("--threads", type=positive_int, help=THREADS_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_predict)
