"""Training speed of the keymodels engine against a plain hand-written PyTorch loop.

Same model, data, batch size, optimizer, schedule, clipping and number of steps, alternated in one
process. Two measurements, each labelled: the inner loop only (img/s of the steps, as each
measures them; target: engine overhead <= 5%), and whole calls (seconds for the same steps,
start to end: data, model, the loop, a validation evaluation per epoch and one test evaluation
at the end for both; the engine adds its checkpoints, metrics, plots and results). Both train
on the recipe's training split, what is left after its validation hold-out (digits: 1,295 of
1,437 images), and the step counts follow from its size. The load average is printed at the start and end:
on a shared machine a busy neighbour moves the numbers more than the engine does.

    .venv/bin/python benchmarks/bench_train.py            # Fashion-MNIST recipe model, 60 steps × 3
    .venv/bin/python benchmarks/bench_train.py --quick    # digits, a few seconds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from keymodels.data import (
    Augment,
    dataset_transform,
    get_recipe,
    load_dataset,
    mean_std,
)
from keymodels.registry import get_config
from keymodels.run import lr_factor
from keymodels.train import param_groups, train
from keymodels.vit import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]


def load_splits(recipe, data_dir):
    """The recipe's splits as the engine loads them (the same validation hold-out and subset)."""
    return load_dataset(
        recipe.dataset, data_dir, seed=recipe.seed, val_fraction=recipe.val_fraction,
        val_size=recipe.val_size, train_subset=recipe.train_subset,
        in_chans=recipe.in_chans or 3,
    )  # fmt: skip


def plain_run(recipe, data_dir, steps: int) -> tuple[float, float, int]:
    """The run one would write by hand: load, DataLoader, forward, loss, backward, clip, step,
    a validation evaluation after each epoch and a test evaluation at the end.

    Returns:
        (inner-loop img/s, whole-call seconds, steps done).
    """
    start_call = time.perf_counter()
    splits = load_splits(recipe, data_dir)
    torch.manual_seed(recipe.seed)
    config = get_config(recipe.model, num_classes=len(splits.classes), **recipe.model_overrides)
    model = VisionTransformer(config)
    mean, std = mean_std(splits.train.images)
    # The engine's own transforms: the comparison is about the loop, not the data pipeline.
    size = config.img_size
    splits.train.transform = dataset_transform(splits.train, recipe.augment, size, mean, std)
    for ds in (splits.val, splits.test):
        ds.transform = dataset_transform(ds, Augment(), size, mean, std)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    per_epoch = len(splits.train) // recipe.batch_size
    warmup, total = round(recipe.warmup_epochs * per_epoch), per_epoch * recipe.epochs
    min_ratio = recipe.min_lr / recipe.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, min_ratio)
    )
    val_loader = DataLoader(splits.val, recipe.eval_batch_size)
    test_loader = DataLoader(splits.test, recipe.eval_batch_size)

    def accuracy(loader: DataLoader, n: int) -> float:
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
        assert 0 <= correct <= n
        return correct / n

    seen, done, loop_s = 0, 0, 0.0
    for epoch in range(recipe.epochs):
        sampler = RandomSampler(splits.train, generator=torch.Generator().manual_seed(epoch))
        loader = DataLoader(splits.train, recipe.batch_size, sampler=sampler, drop_last=True)
        model.train()
        start = time.perf_counter()
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(
                model(images), labels, label_smoothing=recipe.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            optimizer.step()
            scheduler.step()
            loss.item()  # what anyone logging the loss does
            seen, done = seen + len(labels), done + 1
            if done == steps:
                break
        loop_s += time.perf_counter() - start
        accuracy(val_loader, len(splits.val))
        if done == steps:
            break
    accuracy(test_loader, len(splits.test))
    return seen / loop_s, time.perf_counter() - start_call, done


def engine_run(recipe, data_dir, steps: int) -> tuple[float, float, int]:
    """One whole ``keymodels.train.train`` call; returns what :func:`plain_run` returns."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(recipe, out, data_dir, max_steps=steps, progress=False, precision="fp32")
        whole = time.perf_counter() - start
    seen = sum(h["img_per_s"] * h["epoch_time"] for h in result.history)
    loop_s = sum(h["epoch_time"] for h in result.history)
    return seen / loop_s, whole, result.results["steps"]


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, small model, few steps")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        name, data_dir, steps = "digits", None, args.steps or 40
    else:
        name, data_dir, steps = (
            "fashion-mnist",
            ROOT.parent / "shared/data/fashion-mnist",
            args.steps or 60,
        )
    print(f"load average at start (1, 5, 15 min): {_load()}")
    # No augmentation: the comparison is about the loop, not the transforms both would share.
    # Just enough epochs for the steps, so that both schedules and both step counts are equal.
    recipe = get_recipe(name, augment={"crop_padding": 0, "hflip": False})
    per_epoch = len(load_splits(recipe, data_dir).train) // recipe.batch_size
    recipe = get_recipe(
        name, augment={"crop_padding": 0, "hflip": False}, epochs=math.ceil(steps / per_epoch)
    )
    ours, plain = [], []
    for _ in range(args.repeats):  # alternated, so drifting machine load hits both alike
        ours.append(engine_run(recipe, data_dir, steps))
        plain.append(plain_run(recipe, data_dir, steps))
    done = {r[2] for r in ours + plain}
    assert done == {steps}, f"unequal step counts: {sorted(done)}"
    print(f"{recipe.model} on {name}, batch {recipe.batch_size}, {steps} steps "
          f"({recipe.epochs} epochs) × {args.repeats}, {torch.get_num_threads()} threads, fp32")  # fmt: skip
    for what, i, unit, fmt in (("inner loop", 0, "img/s", ".1f"), ("whole call", 1, "s", ".2f")):
        e = statistics.median(r[i] for r in ours)
        b = statistics.median(r[i] for r in plain)
        print(f"{what}:")
        print(f"  plain PyTorch      : {b:9{fmt}} {unit}  (runs: {', '.join(f'{r[i]:{fmt}}' for r in plain)})")  # fmt: skip
        print(f"  keymodels engine   : {e:9{fmt}} {unit}  (runs: {', '.join(f'{r[i]:{fmt}}' for r in ours)})")  # fmt: skip
        if i == 0:
            print(f"  engine / plain     : {e / b:.3f}  (overhead {max(0.0, 1 - e / b):.1%}; target <= 5%)")  # fmt: skip
        else:
            print(f"  engine / plain     : {e / b:.3f}  (the engine's checkpoints, metrics, plots and results included)")  # fmt: skip
    print(f"load average at end (1, 5, 15 min): {_load()}")


if __name__ == "__main__":
    main()
