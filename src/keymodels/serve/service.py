"""What ``keymodels serve`` serves: each run loaded once, its requests queued and run in batches.

An image run answers top-k with attention maps, a translation run n-best with alignments, as
JSON-ready dicts, so that the web app (``app.py``) stays a thin layer and tests need no server.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data import decode_image, preprocess_images
from ..errors import InvalidInputError, KeymodelsError
from ..explain import attend, check_index, grad_rollout, head_maps, rollout, token_grid
from ..metrics import read_metrics
from ..runs import LoadedRun, check_finite_outputs, load, mirror_mean, run_tta
from ..runtime import check_precision, optimize
from ..seq2seq.data import pad_batch
from ..seq2seq.train import choose_decode_precision, load_task
from ..seq2seq.transformer import Transformer
from ..seq2seq.translate import Translation, prepare_source, translate
from ..seq2seq.vocab import detokenize

log = logging.getLogger(__name__)

IMAGE_METHODS = ("rollout", "heads", "grad-rollout", "patch")
# A server's pixel cap: the models read 8-224 px, and one 89-Mpx PNG (training's cap) of a few
# hundred kB decodes to 1.5 GB; 16 Mpx is a 4000×4000 photo.
SERVE_MAX_PIXELS = 16_000_000
# Uploads decode on the request threads (up to 40): at most this many at once, so that a burst
# of large images cannot hold 40 decoded copies in memory together.
_DECODING = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
MAX_QUEUE = 256  # requests waiting for one model; more are refused (503) rather than stall all
MAX_TEXT_CHARS = 2000  # a sentence, not a book: longer text is refused before tokenizing
MAX_BEAM = 16
MAX_TOP_K = 100
MAX_ALPHA = 5.0  # the length penalty's exponent: ((5 + n) / 6) ** α overflows far beyond this


class NotFoundError(KeymodelsError):
    """A run, sample or page that the server does not have (HTTP 404)."""


class ServerBusyError(KeymodelsError):
    """Too many requests wait for one model (HTTP 503): try again shortly."""


class Batcher:
    """One worker thread per model: requests wait in a queue and the waiting ones run together.

    ``handle(key, payloads)`` gets the payloads of the jobs with one ``key`` (those that can share
    a forward pass) and returns one result per payload; its exception fails only that group.
    A single model instance serves every request, and a burst of requests costs one batched
    forward pass instead of one pass each.
    """

    def __init__(
        self,
        handle: Callable[[Hashable, list[Any]], list[Any]],
        max_batch: int = 16,
        name: str = "model",
        max_queue: int = MAX_QUEUE,
    ) -> None:
        if max_batch < 1:
            raise InvalidInputError(f"max_batch must be at least 1; got {max_batch}")
        self.handle, self.max_batch, self.max_queue = handle, max_batch, max_queue
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # for the load benchmark's report
        self._queue: queue.Queue[tuple[Hashable, Any, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"serve-{name}", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, payload: Any) -> Future:
        if not self._thread.is_alive():  # closed: nothing would ever answer
            raise ServerBusyError("this model's worker has stopped (the server is shutting down)")
        if self._queue.qsize() >= self.max_queue:
            raise ServerBusyError(
                f"{self._queue.qsize()} requests are waiting for this model (the limit is "
                f"{self.max_queue}); try again in a moment"
            )
        future: Future = Future()
        self._queue.put((key, payload, future))
        return future

    def run(self, key: Hashable, payload: Any) -> Any:
        """Submit and wait for the result (raising the handler's exception)."""
        return self.submit(key, payload).result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # close() while jobs were waiting: finish them, then stop
                    self._queue.put(None)
                    break
                jobs.append(job)
            groups: dict[Hashable, list[tuple[Any, Future]]] = {}
            for key, payload, future in jobs:
                groups.setdefault(key, []).append((payload, future))
            for key, group in groups.items():
                self._run_group(key, group)

    def _run_group(self, key: Hashable, group: list[tuple[Any, Future]]) -> None:
        self.batch_sizes.append(len(group))
        try:
            results = self.handle(key, [payload for payload, _ in group])
            if len(results) != len(group):  # a handler bug must not leave requests waiting
                raise RuntimeError(f"{len(results)} results for {len(group)} requests")
        except Exception as e:  # handed to the waiting requests, which report it
            for _, future in group:
                future.set_exception(e)
            return
        for (_, future), result in zip(group, results):
            future.set_result(result)


def read_curves(folder: Path) -> dict[str, Any]:
    """``metrics.csv`` as ``{"columns": [...], "rows": [[...], ...]}`` for JSON: blanks and
    non-finite numbers (which JSON cannot hold) become None."""
    rows = read_metrics(folder / "metrics.csv")
    columns = list(rows[0]) if rows else []
    return {"columns": columns, "rows": [[_json_value(row[c]) for c in columns] for row in rows]}


def _json_value(value: Any) -> Any:
    if value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def run_folder(path: str | Path) -> Path:
    """The folder of a run given as its folder or one of its checkpoint files."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def _grid_list(maps: Tensor) -> list:
    """A map (or stack of maps) as nested lists rounded to 6 decimals: the JSON stays small."""
    return np.round(maps.detach().float().cpu().numpy().astype(np.float64), 6).tolist()


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _index(name: str, value: int | None, size: int, what: str) -> int | None:
    """``value`` in range (negative from the end) or None (not given)."""
    return None if value is None else check_index(name, value, size, what)


@dataclass
class _ImageJob:
    x: Tensor  # [1, C, H, W]
    method: str = "predict"
    top_k: int = 5
    layer: int | None = None
    head: int | None = None
    patch: int | None = None
    class_index: int | None = None


class ImageRun:
    """An image classifier run (a ViT of any registered config, or a CNN without maps)."""

    kind = "image"

    def __init__(
        self,
        folder: str | Path,
        name: str,
        loaded: tuple[torch.nn.Module, dict[str, Any]],
        precision: str = "auto",
        max_pixels: int = SERVE_MAX_PIXELS,
        max_batch: int = 16,
    ) -> None:
        self.folder, self.name, self.max_pixels = run_folder(folder), name, max_pixels
        self.model, self.info = loaded
        self.has_attention = callable(getattr(self.model, "forward_attention", None))
        H, W = self.info["img_size"]
        # A fixed random batch to time precisions on and to self-check the fast path against.
        example = torch.randn(
            16, self.info["in_chans"], H, W, generator=torch.Generator().manual_seed(0)
        )
        self.fast = optimize(self.model, precision, "off", example)
        self.precision = self.fast.precision
        self.tta = run_tta(self.info)  # predictions as the run evaluated: image and mirror
        if self.has_attention:
            self.grid = token_grid(self.model, example)
            self.layers = len(self.model.blocks)
            self.heads = self.model.blocks[0].attn.num_heads
        else:
            self.grid, self.layers, self.heads = None, 0, 0
        self.samples = self._find_samples()
        self.batcher = Batcher(self._handle, max_batch, name)

    # -- what the page shows before any request --------------------------------------------------

    def card(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": self.name,
            "kind": self.kind,
            "model": info["model_name"] or "vit",
            "parameters": _parameters(self.model),
            "config": info["config"],
            "classes": info["class_names"],
            "img_size": info["img_size"],
            "in_chans": info["in_chans"],
            "grid": list(self.grid) if self.grid else None,
            "layers": self.layers,
            "heads": self.heads,
            "has_attention": self.has_attention,
            "has_head": bool(getattr(self.model, "num_classes", 0)),
            "readout": self.readout_text(),
            "accuracy": {"val_acc": info.get("val_acc"), "test_acc": info.get("test_acc")},
            "epoch": info.get("epoch"),
            "recipe": info["recipe"].get("name") if isinstance(info["recipe"], dict) else None,
            "precision": self.precision,
            "tta": self.tta,
            "curves": read_curves(self.folder),
            "samples": sorted(self.samples),
        }

    def readout_text(self) -> str:
        """What the rollout and per-head maps are read from (models differ in what the head sees)."""
        if not self.has_attention:
            return "no attention: a convolutional network (top-k only)"
        prefix, pool = self.model.num_prefix_tokens, self.model.global_pool
        if pool == "seq":
            return "the sequence-pooling weights of this image (no class token)"
        if pool == "avg" or not prefix:
            return "the mean of the patch tokens' rows (average pooling, no class token read)"
        if prefix == 2:
            return "the mean of the class and distillation tokens' rows"
        return "the class token's row"

    def _find_samples(self) -> dict[str, Path]:
        # Only the files listed here can be served: a request names a key, never a path.
        folder = self.folder / "samples"
        if not folder.is_dir():
            return {}
        return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png"}

    def sample_bytes(self, name: str) -> bytes:
        if name not in self.samples:
            raise NotFoundError(
                f"run {self.name!r} has no sample {name!r}; its samples: "
                f"{', '.join(sorted(self.samples)) or 'none'}"
            )
        try:
            return self.samples[name].read_bytes()
        except OSError as e:  # removed or unreadable since the server started
            raise NotFoundError(f"run {self.name!r}: sample {name!r} cannot be read ({e})") from e

    # -- requests ----------------------------------------------------------------------------------

    def image_input(self, data: bytes | None, sample: str | None, filename: str = "") -> Tensor:
        """The model input [1, C, H, W] of an uploaded file or a sample."""
        if data is None and not sample:
            raise InvalidInputError(
                "send an image file (form field 'image') or the name of a sample (field 'sample')"
            )
        if data is None:
            data = self.sample_bytes(sample)
        mode = "L" if self.info["in_chans"] == 1 else "RGB"
        with _DECODING:
            image = decode_image(
                data, f"upload {filename!r}" if filename else "the upload", mode, self.max_pixels
            )
            return preprocess_images([image], self.info)

    def picture(self, x: Tensor) -> str:
        """The input as the model sees it (resized, cropped), as a PNG data URL."""
        mean = torch.tensor(self.info["mean"]).view(-1, 1, 1)
        std = torch.tensor(self.info["std"]).view(-1, 1, 1)
        pixels = ((x[0] * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    def predict(self, x: Tensor, top_k: int = 5) -> dict[str, Any]:
        """Top-k classes, the input picture, the rollout map and every layer's and head's map."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be 1..{MAX_TOP_K}; got {top_k}")
        answer = self.batcher.run("forward", _ImageJob(x, "predict", top_k=top_k))
        return {"input": self.picture(x), **answer}

    def explain(
        self,
        x: Tensor,
        method: str,
        layer: int | None = None,
        head: int | None = None,
        patch: int | None = None,
        class_index: int | None = None,
    ) -> dict[str, Any]:
        """One map: ``rollout``, ``heads`` (layer, head or mean of heads), ``grad-rollout`` (a class,
        or the predicted one) or ``patch`` (where that patch's token attends in layer/head)."""
        if not self.has_attention:
            raise InvalidInputError(
                f"run {self.name!r} is a {type(self.model).__name__}, which has no attention to "
                "show; only predictions are available"
            )
        if method not in IMAGE_METHODS:
            raise InvalidInputError(
                f"method must be one of {', '.join(IMAGE_METHODS)}; got {method!r}"
            )
        layer = _index("layer", -1 if layer is None else layer, self.layers, "blocks")
        head = _index("head", head, self.heads, "heads in each block")
        gh, gw = self.grid
        if method == "patch":
            if patch is None:
                raise InvalidInputError(
                    f"method 'patch' needs a patch index, 0..{gh * gw - 1} (row-major)"
                )
            if not 0 <= patch < gh * gw:
                raise InvalidInputError(
                    f"patch {patch} is out of range: the grid is {gh}×{gw}, so 0..{gh * gw - 1} "
                    "(row-major)"
                )
        if method == "grad-rollout":
            if not getattr(self.model, "num_classes", 0):
                raise InvalidInputError("grad-rollout needs a classifier head; this model has none")
            class_index = _index("class", class_index, self.model.num_classes, "classes")
            key = ("grad", class_index is None)
        else:
            key = "forward"
        job = _ImageJob(x, method, layer=layer, head=head, patch=patch, class_index=class_index)
        return self.batcher.run(key, job)

    # -- the worker --------------------------------------------------------------------------------

    def _handle(self, key: Hashable, jobs: list[_ImageJob]) -> list[dict[str, Any]]:
        x = torch.cat([job.x for job in jobs])
        if key == "forward":
            return self._forward(x, jobs)
        index = None if key[1] else [job.class_index for job in jobs]
        result = grad_rollout(self.model, x, index, self.precision)
        check_finite_outputs(result.logits.softmax(-1), self.info["checkpoint"])
        names = self.info["class_names"]
        return [
            {
                "method": "grad-rollout",
                "grid": list(self.grid),
                "map": _grid_list(result.maps[i]),
                "class_index": int(result.class_index[i]),
                "class": names[int(result.class_index[i])],
            }
            for i in range(len(jobs))
        ]

    def _forward(self, x: Tensor, jobs: list[_ImageJob]) -> list[dict[str, Any]]:
        if not self.has_attention:
            with torch.inference_mode():
                logits = self._mirrored(self.fast(x), x)
            return [self._predictions(logits[i], job.top_k) for i, job in enumerate(jobs)]
        logits, attentions, query = attend(self.model, x, self.precision)
        if any(job.method == "predict" for job in jobs):  # the maps stay the image's own
            logits = self._mirrored(logits, x)
        prefix, pool = self.model.num_prefix_tokens, self.model.global_pool
        answers = []
        for i, job in enumerate(jobs):
            attn = [a[i : i + 1] for a in attentions]
            q = query[i : i + 1]
            if job.method == "predict":
                heads = torch.stack(
                    [
                        head_maps(attn, self.grid, layer, None, prefix, pool, q)[0]
                        for layer in range(self.layers)
                    ]
                )
                answers.append(
                    {
                        **self._predictions(logits[i], job.top_k),
                        "grid": list(self.grid),
                        "rollout": _grid_list(rollout(attn, self.grid, prefix, pool, query=q)[0]),
                        "heads": _grid_list(heads),  # [L, H, gh, gw]
                        "layers": self.layers,
                        "heads_per_layer": self.heads,
                    }
                )
                continue
            if job.method == "rollout":
                maps = rollout(attn, self.grid, prefix, pool, query=q)[0]
            else:
                if job.method == "patch":  # the patch token's own row instead of the readout's
                    q = torch.zeros_like(q)
                    q[0, prefix + job.patch] = 1.0
                maps = head_maps(attn, self.grid, job.layer, job.head, prefix, pool, q)[0].mean(0)
            answers.append(
                {
                    "method": job.method,
                    "grid": list(self.grid),
                    "map": _grid_list(maps),
                    "layer": job.layer,
                    "head": job.head,
                    "patch": job.patch,
                }
            )
        return answers

    def _mirrored(self, logits: Tensor, x: Tensor) -> Tensor:
        """With the run's ``tta``, the mean of the image's and its mirror's logits (MirrorTTA)."""
        if not self.tta:
            return logits
        with torch.inference_mode():
            return mirror_mean(logits, self.fast(x.flip(-1)))

    def _predictions(self, logits: Tensor, top_k: int) -> dict[str, Any]:
        probs = logits.float().softmax(-1)
        check_finite_outputs(probs[None], self.info["checkpoint"])
        values, indices = probs.topk(min(top_k, probs.numel()))
        names = self.info["class_names"]
        return {
            "top": [
                {"class": names[int(i)], "index": int(i), "prob": float(p)}
                for p, i in zip(values, indices)
            ],
            "precision": self.precision,
        }


class TranslationRun:
    """A seq2seq run (RNN with or without attention, or Transformer)."""

    kind = "translation"

    def __init__(
        self,
        folder: str | Path,
        name: str,
        loaded: LoadedRun,
        precision: str = "auto",
        max_batch: int = 16,
    ) -> None:
        self.folder, self.name, self.run = run_folder(folder), name, loaded
        model = loaded.model
        self.is_transformer = isinstance(model, Transformer)
        self.layers = model.config.dec_layers if self.is_transformer else 1
        self.heads = model.config.num_heads if self.is_transformer else 1
        self.examples = self._examples()
        self.precision = self._choose_precision(precision)
        self.batcher = Batcher(self._handle, max_batch, name)

    def _choose_precision(self, precision: str) -> str:
        if precision != "auto":
            return precision
        words = (self.examples[0] if self.examples else "a").split()
        src, lengths = pad_batch([torch.tensor(self.run.src_vocab.encode(words))] * 4)
        return choose_decode_precision(
            "auto", self.run.model, self.run.tgt_vocab, src, lengths, 5
        ).precision

    def _examples(self, n: int = 6) -> list[str]:
        """A few validation sentences to try (none when the data is not on this machine)."""
        try:
            pairs = load_task(self.run.train_config, "val")[:n]
        except (KeymodelsError, OSError) as e:
            log.info("no example sentences for %s: %s", self.name, e)
            return []
        return [detokenize(src) for src, _ in pairs]

    def card(self) -> dict[str, Any]:
        meta = self.run.checkpoint.meta
        config = meta["config"]
        tc = meta["train_config"]
        if self.is_transformer:
            model = "transformer"
        else:
            model = f"rnn ({config.get('attention') or 'none'} attention)"
        curves = read_curves(self.folder)
        return {
            "name": self.name,
            "kind": self.kind,
            "model": model,
            "arch": "transformer" if self.is_transformer else "rnn",
            "parameters": _parameters(self.run.model),
            "config": config,
            "train_config": tc,
            "layers": self.layers,
            "heads": self.heads,
            "has_attention": self.is_transformer or config.get("attention") not in (None, "none"),
            "vocab": tc.get("vocab", "word"),
            "max_source_tokens": self.run.model.max_source_tokens,
            "accuracy": _best_validation(curves),
            "epoch": meta.get("epoch"),
            "precision": self.precision,
            "curves": curves,
            "examples": self.examples,
        }

    def translate(
        self,
        text: str,
        beam: int = 5,
        n_best: int = 1,
        alpha: float = 0.6,
        too_long: str = "error",
    ) -> dict[str, Any]:
        """The translation, its n-best list and the source × target attention."""
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a string; got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInputError(
                f"the text has {len(text):,} characters, more than the server's limit of "
                f"{MAX_TEXT_CHARS:,}; translate one sentence at a time"
            )
        if not 1 <= beam <= MAX_BEAM:
            raise InvalidInputError(f"beam must be 1..{MAX_BEAM}; got {beam}")
        if not 1 <= n_best <= beam:
            raise InvalidInputError(f"n_best must be 1..beam ({beam}); got {n_best}")
        if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_ALPHA):
            raise InvalidInputError(
                f"alpha, the length penalty's exponent, must be 0..{MAX_ALPHA:g} (e.g. 0.6); got {alpha}"
            )
        model = self.run.model
        limit = f"its position table holds {model.max_positions}" if self.is_transformer else ""
        # Checked here, on the request's thread, so that one bad sentence fails alone.
        prepare_source(text, self.run.src_vocab, model.max_source_tokens, too_long, limit)
        return self.batcher.run((beam, n_best, alpha, too_long), text)

    def _handle(self, key: Hashable, texts: list[str]) -> list[dict[str, Any]]:
        beam, n_best, alpha, too_long = key
        results = translate(
            self.run, texts, beam, alpha, n_best, too_long, precision=self.precision
        )
        return [self._answer(t) for t in results]

    def _answer(self, t: Translation) -> dict[str, Any]:
        src_vocab, tgt_vocab = self.run.src_vocab, self.run.tgt_vocab
        reached_eos = bool(t.ids) and t.ids[-1] == tgt_vocab.eos_id
        target_tokens = t.pieces + (["<eos>"] if reached_eos else [])
        source_tokens = [*t.source_pieces, "<eos>"]
        answer = {
            "translation": t.text,
            "score": t.score,
            "n_best": [{"text": t.text, "score": t.score}]
            + [{"text": text, "score": score} for text, score in t.alternatives],
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "attention": None
            if t.attention is None
            else _grid_list(t.attention[: len(target_tokens)]),
            "cross_attention": None,
            "layers": self.layers,
            "heads": self.heads,
            "unknown": t.unknown,
            "truncated": t.truncated,
        }
        if self.is_transformer and t.ids:
            answer["cross_attention"] = _grid_list(self._cross_attention(t, src_vocab, tgt_vocab))
        return answer

    @torch.no_grad()
    def _cross_attention(self, t: Translation, src_vocab: Any, tgt_vocab: Any) -> Tensor:
        """Every decoder layer's and head's weights over the source for the output: [L, H, T, S]."""
        src = torch.tensor([src_vocab.encode(t.source_tokens)])
        tgt_in = torch.tensor([[tgt_vocab.bos_id, *t.ids[:-1]]])
        weights = self.run.model.cross_attention(src, torch.tensor([src.shape[1]]), tgt_in)
        return weights[:, 0].float()


def _best_validation(curves: dict[str, Any]) -> dict[str, float | None]:
    """The best validation scores in the metrics (a seq2seq run has no test split in its card)."""
    best: dict[str, float | None] = {}
    for j, column in enumerate(curves["columns"]):
        if column.startswith("val_") and ("acc" in column or "bleu" in column):
            values = [row[j] for row in curves["rows"] if isinstance(row[j], float)]
            best[column] = max(values) if values else None
    return best


Service = ImageRun | TranslationRun


def run_names(folders: Sequence[str | Path]) -> list[str]:
    """A short unique name per run folder (its folder name; ``-2``, ``-3`` for repeats)."""
    names: list[str] = []
    for folder in folders:
        base = Path(os.path.abspath(folder)).name or "run"  # a symlink keeps its own name
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def load_services(
    folders: Sequence[str | Path],
    precision: str = "auto",
    max_pixels: int = SERVE_MAX_PIXELS,
    max_batch: int = 16,
) -> dict[str, Service]:
    """Load every run once: ``{name: ImageRun | TranslationRun}``.

    Raises:
        InvalidInputError: no run folders, or a bad precision.
        CheckpointError: a folder that holds no trained run (and the loaders' other errors).
    """
    check_precision(precision)
    if not folders:
        raise InvalidInputError("give at least one run folder to serve (e.g. runs/demo/vit-digits)")
    services: dict[str, Service] = {}
    for name, folder in zip(run_names(folders), folders):
        loaded = load(folder)
        if isinstance(loaded, LoadedRun):
            services[name] = TranslationRun(folder, name, loaded, precision, max_batch)
        else:
            services[name] = ImageRun(folder, name, loaded, precision, max_pixels, max_batch)
    return services


__all__ = [
    "IMAGE_METHODS",
    "MAX_TEXT_CHARS",
    "SERVE_MAX_PIXELS",
    "Batcher",
    "ImageRun",
    "NotFoundError",
    "ServerBusyError",
    "TranslationRun",
    "load_services",
    "read_curves",
    "run_names",
]
