"""Training throughput of the keymodels engine against a plain hand-written PyTorch loop.

Same model, data, batch size, optimizer, schedule and clipping, alternated in one process;
prints img/s of each and the engine's overhead as a ratio (target: <= 5%).

    .venv/bin/python benchmarks/bench_train.py            # Fashion-MNIST recipe model, 60 steps × 3
    .venv/bin/python benchmarks/bench_train.py --quick    # digits, a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from keymodels.data import get_recipe, load_dataset, mean_std, train_transform
from keymodels.registry import get_config
from keymodels.train import lr_factor, param_groups, train
from keymodels.vit import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(recipe, splits, steps: int) -> float:
    """The loop one would write by hand: DataLoader, forward, loss, backward, clip, step."""
    torch.manual_seed(recipe.seed)
    config = get_config(recipe.model, num_classes=len(splits.classes), **recipe.model_overrides)
    model = VisionTransformer(config)
    mean, std = mean_std(splits.train.images)
    splits.train.transform = train_transform(recipe.augment, config.img_size, mean, std)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    per_epoch = len(splits.train) // recipe.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, per_epoch, per_epoch * recipe.epochs, 0.01)
    )
    sampler = RandomSampler(splits.train, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(splits.train, recipe.batch_size, sampler=sampler, drop_last=True)
    model.train()
    seen = 0
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        loss = torch.nn.functional.cross_entropy(
            model(images), labels, label_smoothing=recipe.label_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
        optimizer.step()
        scheduler.step()
        loss.item()  # what anyone logging the loss does
        seen += len(labels)
        if i + 1 == steps:
            break
    return seen / (time.perf_counter() - start)


def engine(recipe, data_dir, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = train(recipe, out, data_dir, max_steps=steps, progress=True)
    return result.history[-1]["img_per_s"]  # the training loop only, as measured by the engine


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
    # No augmentation: the comparison is about the loop, not the transforms both would share.
    recipe = get_recipe(name, augment={"crop_padding": 0, "hflip": False})
    splits = load_dataset(recipe.dataset, data_dir)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternated, so drifting machine load hits both alike
        ours.append(engine(recipe, data_dir, steps))
        plain.append(plain_loop(recipe, splits, steps))
    e, b = statistics.median(ours), statistics.median(plain)
    print(f"{recipe.model} on {name}, batch {recipe.batch_size}, {steps} steps × {args.repeats}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"  plain PyTorch loop : {b:8.1f} img/s  (runs: {', '.join(f'{v:.0f}' for v in plain)})")
    print(f"  keymodels engine   : {e:8.1f} img/s  (runs: {', '.join(f'{v:.0f}' for v in ours)})")
    print(f"  engine / plain     : {e / b:.3f}  (overhead {max(0.0, 1 - e / b):.1%}; target <= 5%)")


if __name__ == "__main__":
    main()
