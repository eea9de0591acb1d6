"""The training data pipeline: torchvision's per-image transforms against keymodels' BatchTransform.

Both feed the same DataLoader (batch 128, shuffled, the main process) over the same in-memory
images with a recipe's augmentation; alternated rounds, median ms per batch and the ratio. The
load average is printed: the per-image side is Python-bound and moves most with a busy machine.

    .venv/bin/python benchmarks/bench_augment.py --data-dir ../shared/data/fashion-mnist
    .venv/bin/python benchmarks/bench_augment.py --recipe digits     # no files needed
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader

from keymodels.data import (
    BatchTransform,
    collate_skip,
    dataset_transform,
    get_recipe,
    load_dataset,
    mean_std,
    train_transform,
)


def ms_per_batch(dataset, batches: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_skip)
    start = time.perf_counter()
    for done, _ in enumerate(loader, 1):
        if done == batches:
            break
    return 1000 * (time.perf_counter() - start) / done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.recipe)
    splits = load_dataset(recipe.dataset, args.data_dir, val_size=recipe.val_size)
    train = splits.train
    mean, std = mean_std(train.images)
    size = tuple(train.images.shape[-2:])
    per_image = train_transform(recipe.augment, size, mean, std)
    batched = dataset_transform(train, recipe.augment, size, mean, std)
    if not isinstance(batched, BatchTransform):
        raise SystemExit(f"{args.recipe}'s augmentation ({recipe.augment}) is per-image only")
    print(f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads, "
          f"{args.recipe}: {recipe.augment}")  # fmt: skip
    times: dict[str, list[float]] = {"per-image": [], "batched": []}
    for _ in range(args.rounds):
        for name, transform in (("per-image", per_image), ("batched", batched)):
            train.transform = transform
            times[name].append(ms_per_batch(train, args.batches, recipe.batch_size))
    a, b = statistics.median(times["per-image"]), statistics.median(times["batched"])
    print(f"per-image (torchvision v2): {a:.2f} ms/batch")
    print(f"batched (BatchTransform):   {b:.2f} ms/batch")
    print(f"ratio: {a / b:.1f}x less time a batch; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
