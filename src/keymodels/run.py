"""One training run's lifecycle, shared by the ViT and seq2seq engines.

:class:`Run` owns the run folder (claim and lock, stale temp files, resume, atomic last/best
checkpoints, best score, elapsed time and budget, metrics, the precision record); each engine
keeps only its own step loop.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatchError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .distributed import all_gather_objects
from .errors import KeymodelsError
from .metrics import MetricsLogger
from .rundir import checkpoint_meta, claim_run_folder
from .runguard import GracefulStop, NonFiniteLossError, TrainingInterrupted, remove_stale_temp_files
from .runtime import PrecisionChoice, choose_training_precision

__all__ = [
    "CheckpointMismatchError",
    "Run",
    "TrainingError",
    "check_compatible",
    "check_same_settings",
    "choose_precision",
    "epoch_line",
    "lr_factor",
]


class TrainingError(KeymodelsError):
    """A run that cannot start or continue (nothing to resume, a failed checkpoint write, …)."""


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup from ~0, then cosine to ``min_ratio``.

    With ``warmup_steps=0`` and ``min_ratio=0`` this is the plain cosine annealing to zero.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_line(
    epoch: int,
    epochs: int,
    *,
    train_loss: float,
    split: str,
    loss: float,
    metric: str,
    score: float,
    lr: float,
    seconds: float,
    extra: str = "",
) -> str:
    """One epoch's summary line, the same for both engines, e.g.
    ``epoch 3/10: train loss 1.2340, val loss 1.1110, val BLEU 30.10, lr 0.001, 12.3 s``.

    Args:
        epoch: the epoch just done (from 1); ``epochs``: how many the run trains.
        train_loss: the mean training loss of the epoch.
        split: the evaluated split, ``"val"`` or ``"test"``; ``loss``: its loss.
        metric: the score's name, ``"acc"`` (a percentage, printed with ``%``) or ``"BLEU"``.
        score: the evaluated split's score.
        lr: the learning rate at the end of the epoch.
        seconds: the epoch's time.
        extra: appended after a comma (e.g. ``"560 img/s"``).
    """
    shown = f"{score:.2f}%" if metric == "acc" else f"{score:.2f}"
    line = (
        f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, {split} loss {loss:.4f}, "
        f"{split} {metric} {shown}, lr {lr:.3g}, {seconds:.1f} s"
    )
    return f"{line}, {extra}" if extra else line


def choose_precision(
    requested: str,
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    device: torch.device,
    previous: dict[str, Any] | None = None,
    distributed: bool = False,
) -> PrecisionChoice:
    """A run's precision: measured on CPU (rank 0's choice for every rank under DDP, since ranks
    must agree), bf16 (or fp16 with loss scaling) autocast on CUDA unless fp32 is asked."""
    if device.type == "cuda":
        if requested == "fp32":
            return PrecisionChoice("fp32", requested, "as requested")
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not bf16:
            raise TrainingError(
                "this GPU has no bf16 support; use --precision auto (precision='auto', fp16) or "
                "fp32"
            )
        return PrecisionChoice("bf16" if bf16 else "fp16", requested, "CUDA mixed precision")
    choice = choose_training_precision(requested, model, loss_fn, device, previous)
    if distributed:
        choice = PrecisionChoice.from_dict(all_gather_objects(choice.to_dict())[0])
    return choice


def check_same_settings(
    what: str, stored: dict[str, Any], given: dict[str, Any], may_change: Iterable[str], where: Path
) -> None:
    """Refuse to resume a run with settings that differ from those it was trained with.

    A resumed run goes on with its own optimizer state and schedule, so a changed setting would
    be silently ignored (or, worse, recorded as if it had been used).

    Args:
        what: how the message names the settings, e.g. ``"recipe"``.
        stored: the settings the run was trained with (from its checkpoint).
        given: the settings asked for now.
        may_change: the keys that may differ (how long to train, what to do on a NaN loss).
        where: the checkpoint resumed from, for the message.

    Raises:
        TrainingError: naming each changed setting with its stored and given value.
    """
    # Through JSON, as the checkpoint stored them: a tuple given and its stored list are equal.
    stored, given = json.loads(json.dumps(stored)), json.loads(json.dumps(given))
    free = set(may_change)
    changed = [k for k in given if k in stored and k not in free and given[k] != stored[k]]
    if not changed:
        return
    diffs = "; ".join(f"{k}: the run has {stored[k]!r}, given {given[k]!r}" for k in changed)
    raise TrainingError(
        f"cannot resume {where} with a changed {what} ({diffs}): a resumed run goes on with the "
        f"settings it was trained with; only {', '.join(sorted(free))} may change. Give the "
        "stored values (or leave them out), or train a new run in another --out (out) folder"
    )


class Run:
    """The run folder of one training, used as a context manager around the whole training.

    Entering claims and locks the folder (``keymodels.rundir``), sweeps half-written temporary
    files and catches SIGINT/SIGTERM (:attr:`stop`); :meth:`resume` reads ``last.safetensors``;
    :meth:`save` writes it (and ``best.safetensors`` when the score improved) atomically.

    Args:
        out: the run folder.
        kind: ``"vit"`` or ``"seq2seq"`` (what the folder may hold).
        resume: continue the run in ``out``; ``force``: start it over (see ``claim_run_folder``).
        main: this process writes the folder (rank 0 under torchrun); the others only read it.
        budget_minutes: the training time allowed, resumed runs' earlier time included.
        clock: seconds from a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        out: str | Path,
        kind: str,
        *,
        resume: bool = False,
        force: bool = False,
        main: bool = True,
        budget_minutes: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.out = Path(out)
        self.kind, self.resuming, self.force, self.main = kind, resume, force, main
        self.budget_s = None if budget_minutes is None else budget_minutes * 60
        self.clock = clock or time.perf_counter
        self.last_path, self.best_path = (
            self.out / "last.safetensors",
            self.out / "best.safetensors",
        )
        self.stop = GracefulStop()
        self.best: float | None = None  # the best evaluation score so far
        self.epoch = 0  # whole epochs done
        self.partial: dict[str, Any] | None = None  # an epoch a stop interrupted, to finish first
        self.resumed: Checkpoint | None = None
        self.precision: PrecisionChoice | None = None
        self._logger: MetricsLogger | None = None
        self._stack = ExitStack()
        self._start = self.clock()

    # -- the folder --------------------------------------------------------------------------

    def __enter__(self) -> Run:
        with ExitStack() as stack:
            stack.enter_context(
                claim_run_folder(
                    self.out, self.kind, resume=self.resuming, force=self.force, main=self.main
                )
            )
            stack.enter_context(self.stop)
            if self.main:
                remove_stale_temp_files(self.out)
            self._stack = stack.pop_all()
        self._start = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None
        self._stack.close()

    def write_json(self, name: str, data: Any) -> None:
        """Write ``out/name`` (rank 0 only): the run's records beside its checkpoints."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / name).write_text(json.dumps(data, indent=2))

    # -- resume ------------------------------------------------------------------------------

    def resume(self, kind_check: Callable[[Checkpoint], bool] | None = None) -> Checkpoint | None:
        """Read ``last.safetensors`` when resuming (None otherwise) and take its epoch, best
        score, interrupted epoch and precision; the engine restores its own modules from it.

        Raises:
            TrainingError: resuming, but there is no ``last.safetensors`` or it is of another
                kind of run (``kind_check`` returns False).
        """
        if not self.resuming:
            return None
        if not self.last_path.is_file():
            raise TrainingError(
                f"nothing to resume: {self.last_path} does not exist; train without --resume "
                "(resume=False)"
            )
        ckpt = load_checkpoint(self.last_path)
        if kind_check is not None and not kind_check(ckpt):
            raise TrainingError(
                f"{self.last_path} is not a {self.kind} checkpoint; cannot resume from it"
            )
        state = ckpt.state
        self.epoch = int(state["epoch"])
        if "best" in state:  # None, or -inf in seq2seq runs before the Run object: no score yet
            best = state["best"]
        else:  # ViT runs before the Run object: "best_acc", -1.0 for no score yet
            best = state.get("best_acc", -1.0)
            best = None if best == -1.0 else best
        self.best = None if best is None or best == -math.inf else float(best)
        self.partial = state.get("partial")
        self.resumed = ckpt
        return ckpt

    def check_more_epochs(self, epochs: int) -> None:
        """Refuse to resume a run that has already trained ``epochs`` epochs or more.

        Raises:
            TrainingError: naming the epochs done and how to train longer.
        """
        if self.resuming and epochs <= self.epoch:
            raise TrainingError(
                f"{self.out} has already trained {self.epoch} epoch(s), so --epochs {epochs} "
                f"(epochs={epochs}) leaves nothing to train; to train longer, resume with "
                f"--epochs greater than {self.epoch}, e.g. --epochs {2 * self.epoch} "
                f"(epochs={2 * self.epoch})"
            )

    def restore_rng(self) -> None:
        """Put every random generator back where the resumed run saved it (after the engine has
        built what draws at construction, e.g. the model's initial weights)."""
        if self.resumed is not None:
            set_rng_state(self.resumed.state["rng"])

    def choose_precision(
        self,
        requested: str,
        model: nn.Module,
        loss_fn: Callable[[], Tensor],
        device: torch.device | str = "cpu",
        distributed: bool = False,
    ) -> PrecisionChoice:
        """:func:`choose_precision`, keeping a resumed run's choice (so resuming stays exact),
        recorded in ``precision.json``."""
        previous = self.resumed.state.get("precision") if self.resumed is not None else None
        self.precision = choose_precision(
            requested, model, loss_fn, torch.device(device), previous, distributed
        )
        self.write_json("precision.json", self.precision.to_dict())
        return self.precision

    # -- checkpoints -------------------------------------------------------------------------

    def state(self, epoch: int, **extra: Any) -> dict[str, Any]:
        """The training state every checkpoint holds: ``epoch`` whole epochs done, the best
        score, every random generator, the precision, and the engine's ``extra``."""
        precision = self.precision.to_dict() if self.precision is not None else None
        return {"epoch": epoch, "best": self.best, "rng": rng_state(), "precision": precision,
                **extra}  # fmt: skip

    def improved(self, score: float) -> bool:
        """Record an evaluation ``score`` (higher is better); True when it is the best so far."""
        better = self.best is None or score > self.best
        if better:
            self.best = score
        return better

    def save(self, ckpt: Checkpoint, best: bool = False, where: str = "") -> None:
        """Write ``last.safetensors`` (and ``best.safetensors`` if ``best``) atomically; rank 0 only.

        Raises:
            TrainingError: a write failed (e.g. a full disk); the previous files are intact.
        """
        if not self.main:
            return
        for path in (self.last_path, self.best_path) if best else (self.last_path,):
            try:
                save_checkpoint(path, ckpt)
            except CheckpointError as e:
                raise TrainingError(
                    f"{where or 'checkpoint'}: {e}. Free some space and run again with --resume "
                    "(resume=True)"
                ) from e

    def interrupted(self, where: str) -> TrainingInterrupted:
        """The error to raise once a stopped run's state is in ``last.safetensors``."""
        return self.stop.interrupted(self.last_path, where)

    def nonfinite(self, reason: str, hint: str) -> NonFiniteLossError:
        """The error that stops a run whose loss went NaN/inf: ``reason``, what is kept, ``hint``."""
        meta = checkpoint_meta(self.last_path) if self.last_path.is_file() else None
        if meta is None:
            kept = "no checkpoint had been written yet"
        else:
            epoch = f" (epoch {meta['epoch']})" if meta.get("epoch") is not None else ""
            kept = f"the last good checkpoint {self.last_path}{epoch} is kept"
        return NonFiniteLossError(f"{reason}; training stopped, {kept}. {hint}")

    # -- time and metrics --------------------------------------------------------------------

    def credit(self, seconds: float) -> None:
        """Count ``seconds`` of training done before this process (a resumed run's) as elapsed."""
        self._start -= seconds

    def elapsed(self) -> float:
        """Seconds of training so far, earlier processes' included."""
        return self.clock() - self._start

    def over_budget(self, next_epoch_s: float) -> bool:
        """Whether one more epoch of ``next_epoch_s`` seconds would overrun the time budget."""
        return self.budget_s is not None and self.elapsed() + next_epoch_s > self.budget_s

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        """Append ``row`` to ``metrics.csv`` (and TensorBoard); a resumed run rewrites later rows."""
        if not self.main:
            return
        if self._logger is None:
            self._logger = MetricsLogger(self.out)
        self._logger.log(epoch, **{k: v for k, v in row.items() if k != "epoch"})

    def close_metrics(self) -> None:
        """Flush and close the metrics writers (before plotting ``metrics.csv``)."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None
