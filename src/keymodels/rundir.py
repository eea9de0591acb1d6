"""The run folder: what it holds, who writes to it.

A training writes its checkpoints, metrics and plots into one folder (``--out``). Before it
starts, :func:`claim_run_folder` makes sure that nothing already there is lost:

* a folder that holds a trained run is continued (``resume=True``) or, only when asked
  (``force=True``), started over; otherwise the training is refused;
* a folder that holds another kind of run (a ViT classifier's, a seq2seq model's, a saved model)
  is never trained into;
* one training at a time: a lock on ``OUT/.lock`` (``fcntl.flock``, which the system releases
  when its process dies, so a killed run never leaves a stale lock) names the process that
  holds it.

:func:`check_writable_output` is the one ``--force`` rule of every command that writes a file or
a model folder (``explain --out``, ``translate --show-attention``, ``export-onnx``, ``convert``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, KeymodelsError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then checked but not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
CHECKPOINT_NAMES = ("last.safetensors", "best.safetensors")
# The value of "kind" in a seq2seq checkpoint's meta (keymodels.seq2seq.train.KIND); kept here
# so that looking at a folder does not import the seq2seq trainer.
SEQ2SEQ_KIND = "keymodels.seq2seq"

# What a folder can hold, as the messages name it (after "a").
KINDS = {
    "vit": "ViT classifier run (`keymodels train`)",
    "seq2seq": "seq2seq run (`keymodels seq2seq train`)",
    "model": "saved model or another config.json (not a training run)",
    "checkpoint": "keymodels checkpoint of neither a ViT classifier nor a seq2seq model",
}

# What each trainer writes into its run folder. Starting over (force=True) removes these first,
# so that the folder never mixes two runs; anything else in the folder is left alone.
RUN_OUTPUTS = {
    "vit": (
        *CHECKPOINT_NAMES, "metrics.csv", "results.json", "recipe.json", "precision.json",
        "train_curves.png", "confusion_matrix.png", "tensorboard",
    ),
    "seq2seq": (
        *CHECKPOINT_NAMES, "metrics.csv", "config.json", "precision.json", "tensorboard",
    ),
}  # fmt: skip


class OutputExistsError(KeymodelsError, FileExistsError):
    """An output file or model folder would be overwritten without permission (``force``)."""


class RunFolderError(KeymodelsError):
    """A run folder that this training must not write into (a trained run, another kind, a file)."""


class RunFolderBusyError(RunFolderError):
    """Another process is training into the run folder now."""


# -- one --force rule for every output ---------------------------------------------------------


def check_writable_output(
    path: str | os.PathLike,
    force: bool = False,
    *,
    names: Iterable[str] | None = None,
    what: str = "output path",
) -> Path:
    """Refuse to overwrite an existing output unless ``force``.

    Args:
        path: the file to write or, with ``names``, the folder to write into.
        force: overwrite what is there (``--force`` on the command line).
        names: the files that will be written into the folder ``path``: only those of them that
            exist count (a folder that holds other files is fine).
        what: how the message names the output, e.g. ``"--out"``.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputExistsError: something would be overwritten and ``force`` is False.
    """
    path = Path(path)
    if force:
        return path
    if names is None:
        if path.exists():
            raise OutputExistsError(
                f"{path} exists; pass --force to overwrite it (force=True in Python), "
                f"or choose another {what}"
            )
        return path
    existing = [n for n in names if (path / n).exists()] if path.is_dir() else []
    if existing:
        raise OutputExistsError(
            f"{path} already holds {', '.join(existing)}; pass --force to overwrite "
            f"{'it' if len(existing) == 1 else 'them'} (force=True in Python), or choose "
            f"another {what}"
        )
    return path


# -- what a folder holds -----------------------------------------------------------------------


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The meta of a keymodels checkpoint, read from the file's header without its tensors.

    Returns None for a missing, unreadable or non-keymodels file.
    """
    from safetensors import safe_open

    from .checkpoint import FORMAT

    try:
        with safe_open(str(path), framework="numpy") as f:  # reads the header only
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            return None
        meta = json.loads(metadata.get("meta") or "{}")
    except Exception:  # a truncated or foreign file: it does not say what it is
        return None
    return meta if isinstance(meta, dict) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _kind_of_meta(meta: dict[str, Any]) -> str:
    if meta.get("kind") == SEQ2SEQ_KIND:
        return "seq2seq"
    if "class_names" in meta:
        return "vit"
    return "checkpoint"


def folder_kind(path: str | os.PathLike) -> str | None:
    """What the folder ``path`` holds: a key of :data:`KINDS`, or None (missing, empty, other).

    The checkpoints say it; a run stopped before its first checkpoint is known by the file its
    trainer writes first (a ViT run's ``recipe.json``, a seq2seq run's ``config.json``).
    """
    path = Path(path)
    if not path.is_dir():
        return None
    for name in CHECKPOINT_NAMES:
        meta = checkpoint_meta(path / name)
        if meta is not None:
            return _kind_of_meta(meta)
    recipe = _read_json(path / "recipe.json")
    if recipe is not None and "class_names" in recipe:
        return "vit"
    if (path / "config.json").exists():
        config = _read_json(path / "config.json") or {}
        return "seq2seq" if {"model", "train"} <= config.keys() else "model"
    return None


def _trained(path: Path) -> str | None:
    """A short description of the trained run in ``path`` (epoch, score), None if untrained."""
    present = [n for n in CHECKPOINT_NAMES if (path / n).is_file()]
    if not present:
        return None
    meta = checkpoint_meta(path / present[0]) or {}
    details = list(present)
    if meta.get("epoch") is not None:
        details.append(f"epoch {meta['epoch']}")
    scores = recorded_accuracies(path / present[0], meta)
    for key, label in (("val_acc", "validation accuracy"), ("test_acc", "test accuracy")):
        if isinstance(scores[key], (int, float)):
            details.append(f"{label} {scores[key]:.2%}")
    return ", ".join(details)


def recorded_accuracies(checkpoint: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any]:
    """The validation and test accuracy recorded for a classifier's checkpoint, each None when
    not known: ``{"val_acc": ..., "test_acc": ...}``.

    Runs with a validation split record ``eval_split`` (``"val"``) in their checkpoints: their
    ``val_acc`` is the validation split's, and the test split is evaluated once, at the end, into
    the run's ``results.json`` (with the best weights: its ``test_acc`` is this checkpoint's only
    when the epochs match). Older runs had no validation split and no ``eval_split``: the
    ``val_acc`` they recorded is the test split's (and some recorded ``test_acc`` itself).
    """
    split = meta.get("eval_split")
    acc = meta.get("val_acc")
    if split is None:  # runs before the validation split: evaluated on the test split
        return {"val_acc": None, "test_acc": meta.get("test_acc", acc)}
    scores = {"val_acc": acc if split == "val" else None, "test_acc": meta.get("test_acc")}
    if split == "test" and scores["test_acc"] is None:
        scores["test_acc"] = acc
    if scores["test_acc"] is None:
        results = _read_json(Path(checkpoint).parent / "results.json") or {}
        tested_epoch = results.get("best_epoch")
        if tested_epoch is None:  # no best checkpoint: the test split saw the last weights
            tested_epoch = results.get("epochs")
        if tested_epoch is not None and tested_epoch == meta.get("epoch"):
            scores["test_acc"] = results.get("test_acc")
    return scores


# -- who writes to it --------------------------------------------------------------------------


def lock_holder(out: str | os.PathLike) -> dict[str, Any] | None:
    """What ``OUT/.lock`` says about the process that holds (or last held) the lock."""
    return _read_json(Path(out) / LOCK_NAME)


def _busy_message(out: Path) -> str:
    holder: dict[str, Any] | None = None
    for _ in range(20):  # the holder writes its details just after it takes the lock
        holder = lock_holder(out)
        if holder:
            break
        time.sleep(0.05)
    who = "another process"
    if holder:
        who = f"process {holder.get('pid')} on {holder.get('host')}"
        if holder.get("since"):
            who += f" (since {holder['since']}"
            who += f": {holder['command']})" if holder.get("command") else ")"
    return (
        f"{out} is in use: {who} is training into it. Wait for it to finish (or stop it), or "
        "choose another --out"
    )


def _lock(out: Path) -> int | None:
    """Take the lock on ``out`` and write who holds it; the open file descriptor, or None when
    the system has no ``flock``."""
    if fcntl is None:
        return None
    path = out / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderBusyError(_busy_message(out)) from None
        # The previous holder removes the file as it lets go: a lock on the removed file is
        # no lock, so check that the file we locked is still the one at ``path``.
        with suppress(FileNotFoundError):
            here, ours = os.stat(path), os.fstat(fd)
            if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                break
        os.close(fd)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd


def _unlock(out: Path, fd: int | None) -> None:
    if fd is None:
        return
    # Remove the file before letting go (see _lock), so no later reader names a finished run.
    with suppress(FileNotFoundError):
        os.unlink(out / LOCK_NAME)
    os.close(fd)


def _start_over(out: Path, kind: str) -> None:
    for name in RUN_OUTPUTS.get(kind, ()):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _claim(out: Path, kind: str, resume: bool, force: bool) -> int | None:
    """Check ``out`` and lock it; the lock's file descriptor (see :func:`_lock`)."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(
            f"--out {out} is a file, not a folder; a run folder holds the checkpoints, metrics "
            "and plots. Choose a folder (it is created if missing)"
        )
    out.mkdir(parents=True, exist_ok=True)
    fd = _lock(out)  # first, so that what is checked below cannot change under us
    try:
        held = folder_kind(out)
        if held is not None and held != kind:
            raise RunFolderError(
                f"{out} holds a {KINDS[held]}, not a {KINDS[kind]}; training into it would mix "
                "the two. Choose another --out (--force only starts over a run of the same kind)"
            )
        trained = _trained(out)
        if trained and not resume and not force:
            raise RunFolderError(
                f"{out} already holds a trained {KINDS[kind]}: {trained}. A new run would "
                "replace it. Pass --resume (resume=True) to continue it, --force (force=True) to "
                "start over, or choose another --out"
            )
        if force and (held == kind or trained):
            _start_over(out, kind)
    except BaseException:
        _unlock(out, fd)
        raise
    return fd


@contextmanager
def claim_run_folder(
    out: str | os.PathLike,
    kind: str,
    *,
    resume: bool = False,
    force: bool = False,
    main: bool = True,
) -> Iterator[Path]:
    """Hold the run folder ``out`` for one training of ``kind``, or refuse with a clear error.

    Args:
        out: the run folder (created if missing).
        kind: what the training writes: ``"vit"`` or ``"seq2seq"``.
        resume: the training continues the run in ``out``.
        force: the training starts over: the run in ``out`` (checkpoints, metrics, plots,
            TensorBoard logs) is removed first.
        main: this process writes the folder. Under torchrun only rank 0 checks and locks it;
            every rank then learns its answer, so that all of them stop together on a refusal.

    Yields:
        ``out`` as a Path, locked against other trainings until the block ends.

    Raises:
        RunFolderError: ``out`` is a file, holds another kind of run, or holds a trained run
            and neither ``resume`` nor ``force`` was given.
        RunFolderBusyError: another process holds the lock; the message names its pid.
        InvalidInputError: both ``resume`` and ``force``.
    """
    out = Path(out)
    if kind not in RUN_OUTPUTS:
        raise InvalidInputError(f"kind must be one of {', '.join(RUN_OUTPUTS)}; got {kind!r}")
    if resume and force:
        raise InvalidInputError(
            "--resume (resume=True) continues the run and --force (force=True) starts it over; "
            "pass one of them"
        )
    fd, error = None, None
    if main:
        try:
            fd = _claim(out, kind, resume, force)
        except (RunFolderError, OSError) as e:
            error = e
    from .distributed import all_gather_objects

    # Every rank waits here for rank 0's answer: one that refused alone would hang the others.
    answers = [a for a in all_gather_objects(None if error is None else str(error)) if a]
    if error is None and answers:  # a rank other than the one that checked
        error = RunFolderError(answers[0])
    if error is not None:
        raise error
    try:
        yield out
    finally:
        _unlock(out, fd)
