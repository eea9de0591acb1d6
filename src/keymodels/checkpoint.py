"""Checkpoints that are never half-written and never run code when loaded.

One ``.safetensors`` file holds every tensor (weights, optimizer moments, RNG states) and, in its
metadata, the JSON of everything else; it is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import secrets
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import KeymodelsError
from .runguard import crash_point

FORMAT = "keymodels.checkpoint/1"


class CheckpointError(KeymodelsError):
    """A checkpoint that cannot be written or read (disk full, truncated, wrong format, …)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose weights (or vocabularies) do not fit the model they are loaded into."""


def check_compatible(
    model: torch.nn.Module, weights: dict[str, Tensor], source: str, hint: str = ""
) -> None:
    """Raise :class:`CheckpointMismatchError` naming the mis-shaped, missing and unexpected keys.

    Args:
        model: the model the weights are for.
        weights: a state dict read from ``source`` (a file name, for the message).
        hint: what to do about it, appended to the message.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights))
        if weights[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        more = f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else ""
        parts.append("shape mismatch " + "; ".join(shapes[:3]) + more)
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{what} keys {keys[:3]}{more}")
    message = f"{source} holds weights of another model: {', '.join(parts)}"
    raise CheckpointMismatchError(f"{message}. {hint}" if hint else message)


@dataclass
class Checkpoint:
    """What a checkpoint holds: model weights, training state (nested, may hold tensors), metadata."""

    model: dict[str, Tensor]
    state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def temp_beside(path: Path, directory: bool = False) -> Path:
    """Create an empty file (or directory) ``.NAME.XXXXXXXX.tmp`` beside ``path`` and return it.

    It gets the permissions ``open(path, "w")`` (or ``mkdir``) would give: 0o666 (0o777) less
    the umask, which the kernel applies. ``tempfile.mkstemp``/``mkdtemp`` make it 0o600/0o700,
    and the rename would carry that over, leaving a run unreadable to other users or a server.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            if directory:
                tmp.mkdir(mode=0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name beside", str(path))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers see the old or the new file.

    The file gets the permissions of one written with ``open(path, "w")`` (0o666 less the umask).
    On any failure (a full disk, a kill) the previous file at ``path`` is untouched and the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temp_beside(path)
    # Some writers replace the file with a private one (safetensors 0.8 writes 0o600): the mode
    # the kernel gave the empty file is put back before the rename.
    mode = stat.S_IMODE(tmp_path.stat().st_mode)
    try:
        write(tmp_path)
        os.chmod(tmp_path, mode)
        crash_point("checkpoint_write", writing=tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(
                f"could not write {path}: {e.strerror or e}; the previous file there (if any) is intact"
            ) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Nested state -> JSON-able structure; tensors move to ``tensors`` under their path."""
    if isinstance(obj, (Tensor, np.ndarray)):
        # Paths can collide ({"a.b": x, "a": {"b": y}}); the JSON records the key, so any
        # unique one will do.
        key = prefix
        while key in tensors:
            key += "#"
        if isinstance(obj, Tensor):
            tensors[key] = obj.detach().cpu().contiguous()
            return {"__tensor__": key}
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}}
        return {
            "__items__": [
                [k, _flatten(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    return {k: _unflatten(v, tensors) for k, v in obj["__dict__"].items()}


def _unshare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses tensors that share storage (tied weights); store such tensors as copies.
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        out[k] = t.clone() if key in seen and t.numel() else t
        seen.add(key)
    return out


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically to ``path`` (a ``.safetensors`` file)."""
    tensors = {f"model.{k}": v for k, v in checkpoint.model.items()}
    state = _flatten(checkpoint.state, "state", tensors)
    metadata = {"format": FORMAT, "state": json.dumps(state), "meta": json.dumps(checkpoint.meta)}
    tensors = _unshare(tensors)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or of another format"
        ) from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a keymodels checkpoint (format {metadata.get('format')!r}); "
            "load plain weights with safetensors.torch.load_file or keymodels.convert"
        )
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    state = _unflatten(json.loads(metadata["state"]), tensors)
    return Checkpoint(model=model, state=state, meta=json.loads(metadata["meta"]))


def resolve_checkpoint(path: str | os.PathLike, train_command: str = "keymodels train") -> Path:
    """A run folder -> its ``best.safetensors`` (else ``last.safetensors``); a file -> itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path} holds no best.safetensors or last.safetensors; train into it with "
            f"`{train_command} --out {path}` or pass a checkpoint file"
        )
    if not path.is_file():
        raise CheckpointError(f"no run folder or checkpoint file at {path}")
    return path


def load_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    A pickle that would construct arbitrary objects or run code is refused with a clear error.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, not for users
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; what follows "WeightsUnpickler error:" says what it found.
        m = re.search(
            r"WeightsUnpickler error:\s*(.*?)\s*(Check the documentation|$)", str(e), re.S
        )
        found = " ".join((m.group(1) if m else str(e)).split()) or type(e).__name__
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor file ({found}). keymodels never "
            "unpickles code; convert the file to safetensors in a trusted environment"
        ) from e
    except Exception as e:  # torch.load fails on damaged files in many ways (EOF, index, zip)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"cannot read {path} as a PyTorch file ({first}); it is truncated or of another format"
        ) from e


def rng_state() -> dict[str, Any]:
    """Every random generator's state (Python, NumPy, torch CPU and CUDA), for exact resume."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": list(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
