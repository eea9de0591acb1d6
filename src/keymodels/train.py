"""The training engine: a recipe and a data folder (or your own tensors) in, a trained image
classifier and its run folder out.

AdamW (no decay on norms, biases, embeddings), warmup + cosine, clipping, EMA, bf16 autocast
where measured faster (``keymodels.runtime``), torchrun DDP; the run folder, its atomic
checkpoints and exact resume are ``keymodels.run.Run``'s. Loading a trained ViT is
``keymodels.runs``'s.

Model selection is honest: a validation split held out of the training data (stratified, fixed
by the recipe seed) is evaluated after every epoch and picks ``best.safetensors`` (``val_acc``);
the test split is evaluated once, at the end, with the best checkpoint's weights.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import Checkpoint, check_compatible, load_checkpoint, rng_state
from .checkpoint import set_rng_state as restore_rng_state
from .data import (
    ArrayDataset,
    Augment,
    DataError,
    DataSplits,
    Recipe,
    batch_mix,
    collate_skip,
    dataset_transform,
    eval_transform,
    load_dataset,
    mean_std,
    split_train,
)
from .data.datasets import check_labels
from .distill import Teacher, distillation_loss, load_teacher, require_distilled, same_teacher
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
)
from .layers import to_2tuple
from .metrics import plot_curves
from .plotting import pyplot, save_figure
from .registry import create_model, get_config
from .run import Run, TrainingError, check_same_settings, epoch_line, lr_factor
from .runguard import GracefulStop, NonFiniteGuard, NonFiniteLossError, crash_point
from .runs import evaluate
from .runtime import compile_or_eager

log = logging.getLogger(__name__)

NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token")  # as DeiT/timm
NONFINITE_HINT = (
    "Lower --lr (recipe.lr), lengthen --warmup-epochs (recipe.warmup_epochs) or keep "
    "--clip-grad (recipe.clip_grad) on, then --resume (resume=True), or pass --on-nonfinite skip "
    "(on_nonfinite='skip')"
)
MISMATCH_HINT = (
    "Resume with the recipe and model it was trained with, or use a new --out (out) folder"
)


# The recipe fields a resumed run may change; the others must stay as the run was trained
# (train()'s own parameters, e.g. precision and on_nonfinite, may change too).
RESUME_MAY_CHANGE = ("epochs",)


def _flat_recipe(d: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict with its ``augment`` fields as ``augment.NAME``, to name a changed one."""
    augment = d.get("augment") or {}
    rest = {k: v for k, v in d.items() if k != "augment"}
    return {**rest, **{f"augment.{k}": v for k, v in augment.items()}}


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and where everything was written."""

    model: nn.Module  # with the best checkpoint's weights (the last ones if no epoch finished)
    out: Path
    best_val_acc: float | None  # the best validation accuracy after an epoch (None: no epoch)
    test_acc: float | None  # the test split's, with the best weights (None: no test split)
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


# -- pieces -------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and conv kernels only, never on norms, biases,
    position embeddings or the class token (as DeiT/timm)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def compute_loss(logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy with label smoothing; ``targets`` are class indices [B] or mixed soft labels [B, K]."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def _stats(splits: DataSplits, img_size: tuple[int, int]) -> tuple[list[float], list[float]]:
    if isinstance(splits.train, ArrayDataset):
        return mean_std(splits.train.images)
    # Image files: statistics of up to 256 evenly spaced training images, resized as in training.
    ds = splits.train
    to_tensor = eval_transform(img_size, [0.0] * splits.in_chans, [1.0] * splits.in_chans, True)
    picks = np.linspace(0, len(ds) - 1, min(256, len(ds))).astype(int)
    saved, ds.transform = ds.transform, to_tensor
    try:
        images = [item[0] for i in picks if (item := ds[int(i)]) is not None]
    finally:
        ds.transform = saved
    if not images:
        raise TrainingError("no readable training image to compute normalization statistics from")
    x = (torch.stack(images) * 255).round().to(torch.uint8)
    return mean_std(x)


def _unreadable_files(splits: DataSplits) -> int:
    """The distinct image files of both splits found unreadable so far (each warned about once
    by its data set); unlike the images an epoch skipped, this does not depend on which batch
    ``drop_last`` left out. In-memory arrays have none."""
    return sum(getattr(ds, "unreadable_files", 0) for ds in (splits.train, splits.val, splits.test))


CustomSplit = (
    Any  # a torch Dataset of (image [C, H, W], label), or (images [N, C, H, W], labels [N])
)


def _as_arrays(split: CustomSplit, name: str) -> tuple[Tensor, Tensor]:
    """One split of :func:`train`'s ``data`` as uint8 images ``[N, C, H, W]`` and labels ``[N]``."""
    if isinstance(split, (tuple, list)) and len(split) == 2 and isinstance(split[0], Tensor):
        images, labels = split[0], torch.as_tensor(split[1])
    else:
        try:
            items = [split[i] for i in range(len(split))]
        except TypeError as e:
            raise DataError(
                f"data: the {name} split must be a torch Dataset of (image, label) or a tuple "
                f"(images [N, C, H, W], labels [N]); got {type(split).__name__}"
            ) from e
        if not items:
            raise DataError(f"data: the {name} split is empty")
        shapes = {tuple(torch.as_tensor(x).shape) for x, _ in items}
        if len(shapes) > 1:
            raise DataError(f"data: the {name} split's images differ in shape: {sorted(shapes)}")
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
    if images.ndim != 4:
        raise DataError(
            f"data: the {name} images must be [N, C, H, W] (each [C, H, W]); got shape "
            f"{list(images.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(images) or labels.is_floating_point():
        raise DataError(
            f"data: the {name} split needs one integer label per image; got {len(images)} "
            f"images and labels of shape {list(labels.shape)} ({labels.dtype})"
        )
    if images.is_floating_point():  # [0, 1] floats: stored as uint8, as every data set is
        low, high = images.min().item(), images.max().item()
        if not (0.0 <= low and high <= 1.0):  # also NaN
            raise DataError(
                f"data: the {name} images are floats in [{low:.3g}, {high:.3g}], expected [0, 1] "
                "(raw pixels scaled by 1/255, not normalized: the engine normalizes with the "
                "training split's mean and std); or pass uint8 images"
            )
        images = (images * 255).round().to(torch.uint8)
    elif images.dtype != torch.uint8:
        raise DataError(f"data: the {name} images must be uint8 or float; got {images.dtype}")
    return images, labels.long()


def custom_splits(data: Sequence[CustomSplit]) -> DataSplits:
    """``(train, val)`` or ``(train, val, test)`` of :func:`train`'s ``data`` as :class:`DataSplits`.

    Class names come from the train split's ``.classes`` if it has one, else "0".."K-1".
    """
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise DataError("data must be (train, val) or (train, val, test)")
    names = ("train", "val", "test")
    arrays = [_as_arrays(d, n) for d, n in zip(data, names)]
    shape = tuple(arrays[0][0].shape[1:])
    for (images, _), name in zip(arrays[1:], names[1:]):
        if tuple(images.shape[1:]) != shape:
            raise DataError(
                f"data: the {name} images are [C, H, W] = {list(images.shape[1:])}, the train "
                f"images {list(shape)}; every split needs the same channels and size"
            )
    if shape[0] not in (1, 3):
        raise DataError(f"data: images need 1 or 3 channels; got {shape[0]}")
    classes = getattr(data[0], "classes", None)
    k = len(classes) if classes is not None else max(int(y.max()) for _, y in arrays) + 1
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    for (_, labels), name in zip(arrays, names):
        check_labels(labels, k, f"data ({name} split)")
    ds = [ArrayDataset(x, y) for x, y in arrays]
    return DataSplits(ds[0], ds[2] if len(ds) == 3 else None, classes, shape[0], val=ds[1])


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path) -> Path:
    """A PNG of the confusion matrix, row-normalized, with counts when the classes are few."""
    plt = pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * k + 2), max(4.5, 0.45 * k + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {acc:.2%})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


# -- the engine ---------------------------------------------------------------------------------


def _loader(
    dataset: Any, batch_size: int, recipe: Recipe, sampler: Any, train: bool, device: torch.device
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=recipe.workers,
        collate_fn=collate_skip,
        pin_memory=device.type == "cuda",
        drop_last=train,
        generator=getattr(sampler, "generator", None),
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    recipe: Recipe,
    *,
    device: torch.device,
    mix: Any = None,
    ema: AveragedModel | None = None,
    amp_dtype: torch.dtype | None = None,
    max_steps: int | None = None,
    desc: str = "",
    progress: bool = True,
    partial: dict[str, Any] | None = None,
    stop: GracefulStop | None = None,
    guard: NonFiniteGuard | None = None,
    teacher: Teacher | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, Any]:
    """One pass over ``loader``; returns loss, accuracy, img/s, steps, skipped images and
    ``batches`` (how far it got: all of them unless ``max_steps`` or ``stop`` ended it early).

    ``partial`` continues an epoch that a stop interrupted: its first ``batches`` batches are
    read again without training (so every random draw of the data pipeline repeats), then the
    random generators and running sums are restored to where the stop left them.
    """
    model.train()
    guard = guard or NonFiniteGuard()
    sums = {"loss_sum": 0.0, "correct": 0, "seen": 0, "skipped": 0, "steps": 0, "batches": 0,
            "nonfinite": 0, "time": 0.0, "stopped": False}  # fmt: skip
    # tqdm.auto's constructor calls iter(loader) once itself, which draws from the sampler's
    # generator: a resumed epoch must iterate the loader exactly as an uninterrupted one does.
    bar = tqdm(
        loader, desc=desc, unit="batch", disable=not progress, leave=False, dynamic_ncols=True
    )
    batches = iter(bar)
    if partial:
        for _ in range(partial["batches"]):
            next(batches)
        rngs = partial["rngs"]
        restore_rng_state(
            rngs[dist.get_rank()] if dist.is_initialized() and len(rngs) > 1 else rngs[0]
        )
        sums.update({k: partial[k] for k in sums if k in partial})
    start = time.perf_counter() - sums["time"]
    for images, labels, n_skipped in batches:
        sums["batches"] += 1
        sums["skipped"] += n_skipped
        if not len(labels):
            continue
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        targets = labels
        if mix is not None:
            images, targets = mix(images, labels)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = model(images)
            if teacher is not None:  # a distilled model in distilled_training gives both heads
                loss = distillation_loss(logits, targets, teacher(images), recipe.label_smoothing)
                logits = (logits[0] + logits[1]) / 2  # what the model predicts at eval
            else:
                loss = compute_loss(logits.float(), targets, recipe.label_smoothing)
        loss_value = loss.item()
        stop_now = False
        if dist.is_initialized():
            # All ranks must take the same decisions (skip, stop), or the others would wait
            # forever in the next collective operation: a signal to one rank stops them all.
            signum = stop.signum if stop is not None else None
            flags = [loss_value, signum == signal.SIGINT, signum == signal.SIGTERM]
            total, sigints, sigterms = all_reduce_sum(
                torch.tensor(flags, dtype=torch.float64, device=device)
            ).tolist()
            loss_value = loss_value if math.isfinite(total) else total
            stop_now = bool(sigints or sigterms)
            if stop_now and stop is not None and not stop.requested:
                stop.signum = signal.SIGINT if sigints else signal.SIGTERM
        where = f"step {sums['steps'] + 1} of {desc}"
        if guard.should_skip(loss_value, where):
            sums["nonfinite"] += 1
        elif not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss became {loss_value} at {where}")
        else:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(_unwrap(model))
            sums["steps"] += 1
            sums["loss_sum"] += loss_value * len(labels)
            sums["correct"] += int(
                (logits.argmax(1) == (targets.argmax(1) if targets.ndim == 2 else targets)).sum()
            )
            sums["seen"] += len(labels)
            crash_point("train_step")
        seen = max(sums["seen"], 1)
        if progress and (sums["steps"] % 10 == 0 or sums["batches"] == len(loader)):
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{sums['loss_sum'] / seen:.4f}", acc=f"{sums['correct'] / seen:.3f}",
                img_s=f"{rate:.0f}",
            )  # fmt: skip
        if not dist.is_initialized():
            stop_now = stop is not None and stop.requested  # a signal during this very step
        if stop_now or (max_steps is not None and sums["steps"] >= max_steps):
            sums["stopped"] = stop_now
            break
    bar.close()
    sums["time"] = time.perf_counter() - start
    seen = max(sums["seen"], 1)
    return {
        **sums,
        "loss": sums["loss_sum"] / seen,
        "acc": sums["correct"] / seen,
        "img_per_s": sums["seen"] / max(sums["time"], 1e-9),
    }


# The running sums of an interrupted epoch that its checkpoint keeps (see train_one_epoch).
PARTIAL_KEYS = ("loss_sum", "correct", "seen", "skipped", "steps", "batches", "nonfinite", "time")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def train(
    recipe: Recipe,
    out: str | Path,
    data_dir: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    precision: str = "auto",
    compile: bool = False,
    deterministic: bool = False,
    download: bool = False,
    on_error: str = "skip",
    on_nonfinite: str = "stop",
    max_steps: int | None = None,
    progress: bool = True,
    data: Sequence[CustomSplit] | None = None,
) -> TrainResult:
    """Train ``recipe`` on the data in ``data_dir``; write checkpoints, metrics and plots to ``out``.

    After every epoch the validation split is evaluated and picks ``best.safetensors``; at the
    end the test split is evaluated once with the best checkpoint's weights.

    Args:
        recipe: model, augmentation and schedule (``keymodels.data.get_recipe``).
        out: run folder: ``last.safetensors``, ``best.safetensors``, ``metrics.csv``,
            ``train_curves.png``, ``confusion_matrix.png``, ``results.json``.
        data_dir: the data set's files (not needed for ``digits``).
        data: your own data instead of ``recipe.dataset``: ``(train, val)`` or
            ``(train, val, test)``, each a torch Dataset of ``(image [C, H, W], label)`` or a
            tuple ``(images [N, C, H, W], labels [N])``; images uint8 or float in [0, 1]. Class
            names from the train split's ``.classes``, else "0".."K-1". Recorded as "custom".
        resume: continue from ``out/last.safetensors`` exactly where it stopped.
        force: start over in a folder that holds a trained run (its outputs are removed first);
            without it (or ``resume``) such a folder is refused (``keymodels.rundir``).
        device: "cpu", "cuda" or None (CUDA when available); under torchrun, one GPU per process.
        precision: "auto" (time a few training steps in fp32 and bf16 autocast and keep the
            faster; a resumed run keeps its choice, so resuming stays exact), "fp32" or "bf16".
            Weights, optimizer state and checkpoints stay fp32. On CUDA "auto" is bf16 where
            supported, else fp16 with loss scaling. The choice goes to ``precision.json``.
        compile: run the model through ``torch.compile``.
        deterministic: ask torch for deterministic kernels (``use_deterministic_algorithms``).
        download: fetch MNIST/Fashion-MNIST/CIFAR through torchvision first (needs internet).
        on_error: unreadable image files: "skip" (counted and logged) or "fail" (error naming it).
        on_nonfinite: a NaN or infinite loss "stop"s the run (the last good checkpoint is kept)
            or "skip"s the step (logged and counted in ``metrics.csv``).
        max_steps: stop after this many optimizer steps in total (quick trials, benchmarks).
        progress: show tqdm progress bars (rank 0 only).

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; the step was finished and the state
            saved in ``out/last.safetensors``, from which ``resume=True`` continues exactly.
        NonFiniteLossError: the loss became NaN or infinite (``on_nonfinite="stop"``).
        CheckpointMismatchError: ``resume`` with a recipe whose model is not the run's.
        TrainingError: nothing to resume, a resume with no epochs left (``recipe.epochs`` not
            above the epochs done) or with a recipe field other than ``epochs`` changed, a
            checkpoint that could not be written.
        DataError: bad data (nothing is written to ``out``): missing files, a validation share
            or ``train_subset`` that leaves a class empty, mismatched custom splits.
    """
    out = Path(out)
    # The data first: a data error leaves the run folder untouched.
    if data is not None:
        recipe = replace(recipe, dataset="custom")
        splits = split_train(custom_splits(data), recipe.seed, train_subset=recipe.train_subset)
        data_dir = None
    else:
        splits = load_dataset(
            recipe.dataset, data_dir, seed=recipe.seed, download=download,
            val_fraction=recipe.val_fraction, val_size=recipe.val_size,
            train_subset=recipe.train_subset, in_chans=recipe.in_chans or 3, on_error=on_error,
        )  # fmt: skip
    teacher = None
    if recipe.teacher:  # checked before the run folder is touched, like the data
        # absolute: a resume from another working directory must find the same teacher
        recipe = replace(recipe, teacher=str(Path(recipe.teacher).resolve()))
        require_distilled(get_config(recipe.model, **recipe.model_overrides), recipe.model)
        teacher = load_teacher(
            recipe.teacher, class_names=splits.classes, in_chans=splits.in_chans,
            img_size=_model_overrides(recipe, splits)["img_size"],
        )  # fmt: skip
    guard = NonFiniteGuard(on_nonfinite)
    dist_info: DistInfo = init_distributed(device)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        _check_before_writing(recipe, splits, dist_info.world_size)
        # Only rank 0 writes the run folder, so only it checks and locks it.
        with Run(out, "vit", resume=resume, force=force, main=dist_info.is_main) as run:
            return _train(
                recipe, run, splits, data_dir, dist_info, guard, precision=precision,
                compile=compile, max_steps=max_steps, progress=progress, teacher=teacher,
            )  # fmt: skip
    finally:
        cleanup()


def _check_before_writing(recipe: Recipe, splits: DataSplits, world_size: int) -> None:
    """What can be wrong with the recipe for this data, found before the run folder is touched."""
    if recipe.in_chans and recipe.in_chans != splits.in_chans:
        raise TrainingError(
            f"data set {recipe.dataset!r} has {splits.in_chans} channel(s); "
            f"in_chans={recipe.in_chans} only applies to image folders"
        )
    if len(splits.train) < recipe.batch_size * world_size:
        raise TrainingError(
            f"{len(splits.train)} training images are fewer than one batch of {recipe.batch_size} "
            f"× {world_size} process(es); lower --batch-size (recipe.batch_size)"
        )
    # a bad override (a field the model family lacks, a bad value) fails here
    get_config(recipe.model, **_model_overrides(recipe, splits))


def _model_overrides(recipe: Recipe, splits: DataSplits) -> dict[str, Any]:
    """The registered model's overrides for this recipe and data: size, channels, classes."""
    img_size = to_2tuple(recipe.img_size or get_config(recipe.model).img_size)
    return {**recipe.model_overrides, "img_size": img_size, "in_chans": splits.in_chans,
            "num_classes": len(splits.classes)}  # fmt: skip


def _train(
    recipe: Recipe,
    run: Run,
    splits: DataSplits,
    data_dir: str | Path | None,
    dist_info: DistInfo,
    guard: NonFiniteGuard,
    *,
    precision: str,
    compile: bool,
    max_steps: int | None,
    progress: bool,
    teacher: tuple[nn.Module, dict[str, Any]] | None,
) -> TrainResult:
    main, dev, out = dist_info.is_main, dist_info.device, run.out
    seed_everything(recipe.seed)

    # Normalization from the training set's own statistics.
    assert splits.val is not None  # load_dataset and split_train always give one
    overrides = _model_overrides(recipe, splits)
    img_size = overrides["img_size"]
    config = get_config(recipe.model, **overrides)
    mean, std = _stats(splits, img_size)
    splits.train.transform = dataset_transform(splits.train, recipe.augment, img_size, mean, std)
    for ds in (splits.val, splits.test):
        if ds is not None:
            ds.transform = dataset_transform(ds, Augment(), img_size, mean, std)

    # Model (any registered image classifier), optimizer, warmup + cosine schedule, EMA.
    model = create_model(recipe.model, **overrides).to(dev)
    steps_per_epoch = len(splits.train) // (recipe.batch_size * dist_info.world_size)
    total_steps = steps_per_epoch * recipe.epochs
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    min_ratio = recipe.min_lr / recipe.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, min_ratio)
    )
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)
        if recipe.ema
        else None
    )

    # Resume: the weights (with EMA, the raw ones are "train_model"), optimizer, schedule, RNG.
    step, scaler_state = 0, None
    if (ckpt := run.resume()) is not None:
        if ckpt.meta.get("eval_split") != "val":
            raise TrainingError(
                f"{run.last_path} was trained before validation splits (it chose its best "
                "checkpoint on the test split) and cannot be resumed; train again in a new --out "
                "(out) folder, or keep it as it is"
            )
        weights = ckpt.state.get("train_model", ckpt.model)
        check_compatible(model, weights, str(run.last_path), MISMATCH_HINT)
        if "recipe" in ckpt.meta:  # runs saved before recipes were stored cannot be compared
            check_same_settings(
                # A run saved before `tta` existed evaluated without mirrors.
                "recipe", _flat_recipe({"tta": False, **ckpt.meta["recipe"]}),
                _flat_recipe(recipe.to_dict()),
                RESUME_MAY_CHANGE, run.last_path,
            )  # fmt: skip
        if teacher is not None:
            same_teacher(ckpt.meta.get("teacher"), teacher[1], str(run.last_path))
        # What is wrong with the run comes first; how long to go on, after.
        run.check_more_epochs(recipe.epochs)
        model.load_state_dict(weights)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        if ema is not None:
            if "train_model" not in ckpt.state:
                raise TrainingError(
                    f"{run.last_path} was trained without EMA; resume with --ema 0 (recipe.ema=0)"
                )
            ema.module.load_state_dict(ckpt.model)
            ema.n_averaged.fill_(int(ckpt.state["ema_n"]))
        run.restore_rng()
        step, scaler_state = ckpt.state["step"], ckpt.state.get("scaler")
        if main:
            where = f", batch {run.partial['batches']}" if run.partial else ""
            log.info("resumed from %s after epoch %d%s", run.last_path, run.epoch, where)

    distiller = None
    if teacher is not None:
        distiller = Teacher(teacher[0], mean, std, teacher[1]["mean"], teacher[1]["std"]).to(dev)
        model.set_distilled_training(True)  # training steps get (class, distillation) logits

    def timing_loss(net: nn.Module = model) -> Tensor:  # a step on a random training-shape batch
        images = torch.randn(recipe.batch_size, config.in_chans, *img_size, device=dev)
        labels = torch.randint(config.num_classes, (recipe.batch_size,), device=dev)
        if distiller is not None:
            return distillation_loss(net(images), labels, distiller(images), 0.0)
        return F.cross_entropy(net(images).float(), labels)

    choice = run.choose_precision(precision, model, timing_loss, dev, dist_info.enabled)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice.precision]
    memory_format = torch.channels_last if choice.channels_last else torch.contiguous_format
    for net in (model, ema.module if ema is not None else None, distiller):
        if net is not None:
            net.to(memory_format=memory_format)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    if scaler_state:
        scaler.load_state_dict(scaler_state)

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if compile and dist_info.enabled:
        train_model = torch.compile(train_model)  # a trial step would need every rank at once
    elif compile:
        train_model = compile_or_eager(train_model, timing_loss)
    mix = batch_mix(recipe.augment, config.num_classes)
    val_loader = _loader(splits.val, recipe.eval_batch_size, recipe, None, False, dev)
    eval_model = ema.module if ema is not None else model
    config_dict = config.to_dict() if hasattr(config, "to_dict") else asdict(config)
    meta = {
        "model_name": recipe.model, "config": config_dict, "class_names": splits.classes,
        "recipe": recipe.to_dict(), "mean": mean, "std": std, "img_size": list(img_size),
        "in_chans": config.in_chans, "weights": "ema" if ema else "model",
        "keymodels_version": __version__, "world_size": dist_info.world_size,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "eval_split": "val",
        "dataset": recipe.dataset,
        "teacher": {k: teacher[1][k] for k in ("checkpoint", "model_name", "epoch", "sha256")}
        if teacher else None,
        "split_sizes": {"train": len(splits.train), "val": len(splits.val),
                        "test": len(splits.test) if splits.test is not None else None},
    }  # fmt: skip
    run.write_json("recipe.json", meta)

    def checkpoint(epochs: int, **extra: Any) -> Checkpoint:
        """Everything resume needs after ``epochs`` whole epochs (and ``partial``, if given)."""
        state = run.state(
            epochs, step=step, optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), **extra,
        )  # fmt: skip
        if ema is not None:
            state["train_model"] = model.state_dict()
            state["ema_n"] = int(ema.n_averaged)
        return Checkpoint(
            model=eval_model.state_dict(), state=state,
            meta={**meta, "epoch": epochs, "val_acc": val.get("acc"), "val_loss": val.get("loss")},
        )  # fmt: skip

    def evaluate_on(loader: DataLoader) -> dict[str, Any]:
        with torch.autocast(dev.type, amp_dtype or torch.float32, enabled=bool(amp_dtype)):
            return evaluate(eval_model, loader, config.num_classes, dev, tta=recipe.tta)

    history: list[dict[str, Any]] = []
    val: dict[str, Any] = {}
    for epoch in range(run.epoch, recipe.epochs):
        if max_steps is not None and step >= max_steps:
            break
        partial, run.partial = run.partial, None
        step_before = step - (partial["steps"] if partial else 0)  # steps before this epoch
        remaining = None if max_steps is None else max_steps - step_before
        # Reseeding per epoch (and per rank) makes every epoch independent of what ran before it,
        # so a resumed run draws the same shuffles and augmentations as an uninterrupted one.
        seed_everything(recipe.seed + 1009 * (epoch + 1) + dist_info.rank)
        generator = torch.Generator().manual_seed(recipe.seed + epoch)
        if dist_info.enabled:
            sampler: Any = DistributedSampler(
                splits.train, dist_info.world_size, dist_info.rank, shuffle=True,
                seed=recipe.seed, drop_last=True,
            )  # fmt: skip
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(splits.train, generator=generator)
        loader = _loader(splits.train, recipe.batch_size, recipe, sampler, True, dev)
        try:
            stats = train_one_epoch(
                train_model, loader, optimizer, scheduler, scaler, recipe, device=dev, mix=mix,
                ema=ema, amp_dtype=amp_dtype, max_steps=remaining,
                desc=f"epoch {epoch + 1}/{recipe.epochs}", progress=progress and main,
                partial=partial, stop=run.stop, guard=guard, teacher=distiller,
                memory_format=memory_format,
            )  # fmt: skip
        except NonFiniteLossError as e:
            raise run.nonfinite(str(e), NONFINITE_HINT) from None
        step = step_before + stats["steps"]
        if stats["stopped"]:
            # SIGINT/SIGTERM: the step is done; save the epoch so far, to be finished on resume.
            # Every rank's random state goes in (each draws its own augmentations), so that a
            # resumed run repeats them all; rank 0 writes.
            rngs = all_gather_objects(rng_state())
            keep = {k: v for k, v in stats.items() if k in PARTIAL_KEYS}
            run.save(checkpoint(epoch, partial={**keep, "rngs": rngs}), where=f"epoch {epoch}")
            barrier()
            where = f"step {step} (epoch {epoch + 1}, batch {stats['batches']}/{len(loader)})"
            raise run.interrupted(where)
        run.epoch = epoch + 1
        if main:
            val = evaluate_on(val_loader)
            row = {
                "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
                "val_acc": val["acc"], "lr": optimizer.param_groups[0]["lr"],
                "img_per_s": stats["img_per_s"], "epoch_time": stats["time"],
                "skipped": _unreadable_files(splits), "nonfinite_steps": stats["nonfinite"],
                "precision": choice.precision,
            }  # fmt: skip
            history.append({"epoch": epoch + 1, **row})
            run.log(epoch + 1, row)
            line = epoch_line(
                epoch + 1, recipe.epochs, train_loss=stats["loss"], split="val",
                loss=val["loss"], metric="acc", score=100 * val["acc"], lr=row["lr"],
                seconds=stats["time"], extra=f"{stats['img_per_s']:.0f} img/s",
            )  # fmt: skip
            log.info("%s", line)
            best = run.improved(val["acc"])
            run.save(checkpoint(epoch + 1), best=best, where=f"epoch {epoch + 1}")
        barrier()

    results: dict[str, Any] = {}
    test_acc = None
    if main:
        run.close_metrics()
        if history or (out / "metrics.csv").exists():
            plot_curves(
                out / "metrics.csv", out / "train_curves.png",
                [["train_loss", "val_loss"], ["train_acc", "val_acc"]],
                title=f"{recipe.name}: {recipe.model}",
            )  # fmt: skip
        # The test split, once, with the weights the validation split chose.
        best_epoch = None
        if run.best_path.is_file():
            best_ckpt = load_checkpoint(run.best_path)
            eval_model.load_state_dict(best_ckpt.model)
            best_epoch = best_ckpt.meta.get("epoch")
        val = evaluate_on(val_loader)
        test = None
        if splits.test is not None:
            test_loader = _loader(splits.test, recipe.eval_batch_size, recipe, None, False, dev)
            test = evaluate_on(test_loader)
            test_acc = test["acc"]
        shown = test or val
        plot_confusion(shown["confusion"], splits.classes, out / "confusion_matrix.png")
        results = {
            "recipe": recipe.name, "model": recipe.model, "dataset": recipe.dataset,
            "epochs": run.epoch, "steps": step, "best_epoch": best_epoch,
            "val_acc": val["acc"], "val_loss": val["loss"],
            "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
            "per_class_acc": dict(zip(splits.classes, test["per_class_acc"])) if test else None,
            "confusion": test["confusion"] if test else None, "class_names": splits.classes,
            "split_sizes": meta["split_sizes"], "teacher": meta["teacher"],
            "params": sum(p.numel() for p in model.parameters()), "precision": choice.precision,
            "tta": recipe.tta,
            "train_img_per_s": (
                sum(h["img_per_s"] for h in history) / len(history) if history else None
            ), "unreadable_images": _unreadable_files(splits),
        }  # fmt: skip
        if test is None:
            results["note"] = (
                "the data has no test split: test fields are null; confusion_matrix.png shows "
                "the validation split, which chose the checkpoint (an optimistic estimate)"
            )
        run.write_json("results.json", results)
    if distiller is not None:
        model.set_distilled_training(False)  # one logit vector from now on, as at inference
    eval_model.eval().to(memory_format=torch.contiguous_format)  # as any model handed out
    return TrainResult(eval_model, out, run.best, test_acc, run.epoch, history, results)
