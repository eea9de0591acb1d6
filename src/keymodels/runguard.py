"""Training runs that lose nothing, for both engines: SIGINT/SIGTERM finish the step and checkpoint,
NaN losses stop the run or skip the step, files half-written by a killed run are swept away."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from .errors import InvalidInputError, KeymodelsError

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")
CRASH_ENV = "KEYMODELS_CRASH_AT"


class TrainingInterrupted(KeymodelsError):
    """SIGINT or SIGTERM stopped a run after a step; its state is in ``checkpoint``."""

    def __init__(self, message: str, checkpoint: Path, signum: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.signum = signum


class NonFiniteLossError(KeymodelsError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


class GracefulStop:
    """While active, SIGINT and SIGTERM only set :attr:`signum`; the loop checks :attr:`requested`
    after each step, writes a checkpoint and stops. A second SIGINT stops at once, as usual.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists: no waiting for the step to end
        self.signum = signum
        log.warning(
            "%s received: stopping after this step and writing a checkpoint "
            "(press Ctrl-C again to stop at once)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def interrupted(self, checkpoint: Path, where: str) -> TrainingInterrupted:
        """The error to raise once the checkpoint of the stopped run is written."""
        assert self.signum is not None
        name = signal.Signals(self.signum).name
        return TrainingInterrupted(
            f"{name} received: training stopped after {where}; its state is saved in "
            f"{checkpoint}. Run the same command with --resume (resume=True) to continue exactly from "
            "there",
            checkpoint,
            self.signum,
        )


class NonFiniteGuard:
    """What to do when the loss is NaN or infinite: ``stop`` the run or ``skip`` the step.

    Skipped steps are logged and counted; more than ``max_consecutive`` in a row means the
    weights themselves went bad, and the run stops all the same.
    """

    def __init__(self, policy: str = "stop", max_consecutive: int = 20) -> None:
        if policy not in NONFINITE_POLICIES:
            raise InvalidInputError(
                f"on_nonfinite must be one of {NONFINITE_POLICIES}; got {policy!r}"
            )
        self.policy = policy
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0

    def should_skip(self, loss: float, where: str) -> bool:
        """True: skip this step (no update). Raises the caller's error through ``stop``."""
        if math.isfinite(loss):
            self.consecutive = 0
            return False
        if self.policy == "skip" and self.consecutive < self.max_consecutive:
            self.skipped += 1
            self.consecutive += 1
            log.warning("loss is %s at %s: step skipped (%d so far)", loss, where, self.skipped)
            return True
        return False


def crash_point(name: str, writing: Path | None = None) -> None:
    """Kill this process at a named place when ``KEYMODELS_CRASH_AT`` asks for it (for tests).

    ``KEYMODELS_CRASH_AT="train_step:30"`` sends SIGKILL at the 30th call of
    ``crash_point("train_step")``; ``"train_step:30:SIGINT"`` sends SIGINT instead (a graceful
    stop). ``writing`` is a file being written: it is cut to half its size first, as a kill in
    the middle of the write would leave it. Unset, as in normal use, this costs one lookup.
    """
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name:
        return
    counts = _CRASH_COUNTS
    counts[name] = counts.get(name, 0) + 1
    if counts[name] == int(parts[1]):
        sig = getattr(signal, parts[2]) if len(parts) > 2 else signal.SIGKILL
        if writing is not None:
            os.truncate(writing, os.path.getsize(writing) // 2)
        os.kill(os.getpid(), sig)


_CRASH_COUNTS: dict[str, int] = {}


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) that a killed checkpoint write left behind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
        log.warning("removed %s, left half-written by a run that was killed", p)
    return stale
