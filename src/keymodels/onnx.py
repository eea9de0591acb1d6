"""ONNX export of a ViT with a dynamic batch axis, and a check of it in onnxruntime.

The export goes through ``torch.export`` (``torch.onnx.export(dynamo=True)``) into a temporary
directory, then is renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InvalidInputError, KeymodelsError
from .layers import to_2tuple
from .rundir import check_writable_output

INPUT_NAME, OUTPUT_NAME = "images", "logits"
BATCH_AXIS = "batch"  # the name of the dynamic first axis of both
_MAX_SINGLE_FILE = 1_900_000_000  # protobuf's 2 GB limit, with room for the graph


class OnnxError(KeymodelsError):
    """An export or onnxruntime check that failed."""


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int | None = None,
    force: bool = False,
    class_names: Sequence[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (images [B, C, H, W] -> logits [B, K]) to ``path`` with a dynamic batch.

    The batch axis of input ``images`` and output ``logits`` is named ``batch``. The model's
    ``metadata_props`` record, as JSON strings, ``input_size`` [C, H, W] and, where given,
    ``class_names``, ``mean``, ``std`` and ``tta`` (see docs/conversion.md for onnxruntime use). Models
    over ~2 GB (ViT-H) keep their weights beside the graph in ``<path>.data``.

    Args:
        model: a keymodels ``VisionTransformer`` (anything with ``config.in_chans/img_size``).
        path: the ``.onnx`` file to write.
        opset: ONNX opset version (None: the exporter's default).
        force: overwrite an existing ``path``; otherwise that is an error.
        class_names: one name per output class, in order.
        preprocessing: ``{"mean": [...], "std": [...]}`` the inputs are normalized with; with
            ``"tta": True`` (a run trained with ``recipe.tta``) the metadata's ``tta`` is
            ``"mirror"``: average the logits of each image and its mirror, as the run did.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise InvalidInputError(f"the ONNX file name should end in .onnx; got {path}")
    check_writable_output(path, force, what="ONNX file")
    config = model.config
    h, w = to_2tuple(config.img_size)
    example = torch.randn(2, config.in_chans, h, w)
    model = model.eval()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(tmp / path.name),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
                opset_version=opset,
                dynamo=True,
                external_data=size > _MAX_SINGLE_FILE,
                verbose=False,
            )
        metadata = {"input_size": [config.in_chans, h, w]}
        if class_names is not None:
            metadata["class_names"] = list(class_names)
        for key in ("mean", "std"):
            if (preprocessing or {}).get(key) is not None:
                metadata[key] = list(preprocessing[key])
        if (preprocessing or {}).get("tta"):  # the graph is one pass: the caller averages
            metadata["tta"] = "mirror"
        _add_metadata(tmp / path.name, metadata)
        # The graph names its weights file, so the data goes into place first, the graph last.
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):
            os.replace(f, path.parent / f.name)
    except Exception as e:
        if isinstance(e, KeymodelsError):
            raise
        raise OnnxError(f"ONNX export to {path} failed: {str(e).splitlines()[0]}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _add_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` in the ONNX file's ``metadata_props``, each value as a JSON string."""
    import onnx  # the exporter needs it, so it is installed when exporting works

    proto = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata_props`` that :func:`export_onnx` wrote, decoded from JSON."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def onnx_session(
    path: str | os.PathLike, threads: int | None = None, spin: bool = True
):  # -> onnxruntime.InferenceSession
    """An onnxruntime CPU session for ``path``.

    Args:
        threads: intra-op threads (None: onnxruntime's default, one per core).
        spin: let idle worker threads spin for the next run (onnxruntime's default); turn it off
            when PyTorch runs in the same process, or the spinning threads slow it down.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise OnnxError(
            "running ONNX models needs onnxruntime: pip install 'keymodels[onnx]'"
        ) from e
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(
    model: nn.Module, path: str | os.PathLike, batch_sizes: Sequence[int] = (1, 3)
) -> float:
    """Largest |logits difference| between ``model`` and its ONNX export over random batches."""
    session = onnx_session(path)
    config = model.config
    h, w = to_2tuple(config.img_size)
    worst = 0.0
    for b in batch_sizes:
        images = torch.randn(b, config.in_chans, h, w)
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        with torch.no_grad():
            expected = model.eval()(images)
        if logits.shape != tuple(expected.shape):
            raise OnnxError(
                f"ONNX logits have shape {logits.shape}, expected {tuple(expected.shape)}"
            )
        worst = max(worst, (torch.from_numpy(logits) - expected).abs().max().item())
    return worst
