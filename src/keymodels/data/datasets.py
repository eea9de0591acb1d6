"""Image classification data sets from local files: digits, MNIST, Fashion-MNIST, CIFAR, ImageFolder.

Every loader returns a :class:`DataSplits` (train, validation and test data sets without
transforms, class names, channel count); missing, truncated or inconsistent files raise
:class:`DataError` naming them. :func:`load_dataset` holds the validation split out of the
training data (stratified by class, fixed by the seed) unless the source has its own.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from ..errors import KeymodelsError, unknown_name
from ..layers import to_2tuple
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageDecodeError, load_image
from .transforms import Augment, BatchTransform, train_transform

log = logging.getLogger(__name__)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


class DataError(KeymodelsError):
    """A data set that is missing, truncated, inconsistent or unusable for training."""


class ArrayDataset(Dataset):
    """Images held in memory as uint8 ``[N, C, H, W]`` with integer labels ``[N]``."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Any = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """A DataLoader batch; a :class:`BatchTransform` transforms it in one call."""
        if not isinstance(self.transform, BatchTransform):
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.transform(self.images[index])
        return list(zip(images.unbind(0), self.labels[index].tolist(), strict=True))


def dataset_transform(
    ds: Dataset,
    augment: Augment,
    img_size: int | tuple[int, int],
    mean: list[float],
    std: list[float],
) -> BatchTransform | v2.Compose:
    """The transform ``ds`` applies, shared by training and evaluation (``Augment()``): a
    :class:`BatchTransform` for in-memory images of the model's size, a batch per call;
    torchvision per image for the rest (image files, other sizes, random resized crops,
    AutoAugment policies)."""
    resize = not isinstance(ds, ArrayDataset) or tuple(ds.images.shape[-2:]) != to_2tuple(img_size)
    if resize or augment.random_resized_crop or augment.auto_augment:
        return train_transform(augment, img_size, mean, std, resize)
    return BatchTransform(augment, mean, std)


class ImageFileDataset(Dataset):
    """Image files decoded lazily (in the loader's workers); bad files skipped or fatal.

    With ``on_error="skip"`` an unreadable file gives ``None``, which :func:`collate_skip` drops
    and counts; with ``"fail"`` the :class:`ImageDecodeError` naming the file propagates. Each
    unreadable file is warned about once, naming it, however many epochs read it again, and
    :attr:`unreadable_files` counts them (a number that does not depend on which batches an
    epoch happened to drop).
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        mode: str = "RGB",
        transform: Any = None,
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if on_error not in ("skip", "fail"):
            raise DataError(f"on_error must be 'skip' or 'fail'; got {on_error!r}")
        self.mode, self.transform = mode, transform
        self.on_error, self.max_pixels = on_error, max_pixels
        self.samples = samples

    @property
    def samples(self) -> list[tuple[Path, int]]:
        return self._samples

    @samples.setter
    def samples(self, samples: list[tuple[Path, int]]) -> None:
        self._samples = samples
        self.labels = torch.tensor([label for _, label in samples])
        # Which files failed to decode, in shared memory: the loader's worker processes (new
        # ones every epoch) mark them here, so a file is warned about once, not once an epoch.
        self._unreadable = torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    @property
    def unreadable_files(self) -> int:
        """How many distinct files have failed to decode so far."""
        return int(self._unreadable.sum())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        path, label = self.samples[i]
        try:
            image = load_image(path, self.mode, self.max_pixels)
        except ImageDecodeError as e:
            if self.on_error == "fail":
                raise
            if not self._unreadable[i]:
                self._unreadable[i] = True
                log.warning("skipping unreadable image (left out of every epoch): %s", e)
            return None
        return (self.transform(image) if self.transform else image), label


def collate_skip(batch: list[Any]) -> tuple[Tensor, Tensor, int]:
    """Collate a batch, dropping the ``None`` of skipped images: ``(images, labels, n_skipped)``."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    images, labels = default_collate(kept)
    return images, labels, len(batch) - len(kept)


@dataclass
class DataSplits:
    """Train, validation and test data sets (no transforms yet), class names and channel count.

    ``val`` picks the best checkpoint; ``test`` is evaluated once, at the end (None: the source
    has no test split). A loader may leave ``val`` None; :func:`load_dataset` then holds it out.
    """

    train: ArrayDataset | ImageFileDataset
    test: ArrayDataset | ImageFileDataset | None
    classes: list[str]
    in_chans: int
    val: ArrayDataset | ImageFileDataset | None = None


def subset(ds: ArrayDataset | ImageFileDataset, index: Tensor) -> ArrayDataset | ImageFileDataset:
    """The items ``index`` of ``ds``, as a data set of the same kind (no transform)."""
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.images[index], ds.labels[index])
    samples = [ds.samples[int(i)] for i in index]
    return ImageFileDataset(samples, ds.mode, on_error=ds.on_error, max_pixels=ds.max_pixels)


def stratified_split(
    labels: Tensor,
    n_pick: int,
    seed: int,
    classes: list[str],
    what: str,
    need_rest: bool = True,
    fraction: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Split indices ``0..N-1`` into ``(picked, rest)``: ``n_pick`` of them, stratified by class.

    Each class gives its share of ``n_pick`` (largest remainders rounded up, ties to the lower
    class index), or with ``fraction``, ``round(fraction × its count)`` and at least one; which
    items, is fixed by ``seed``. ``what`` names the picked part in errors.

    Raises:
        DataError: a class present in ``labels`` would have no picked or no remaining item.
    """
    labels = labels.long()
    n = len(labels)
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    if fraction is not None:  # per class, at least one (as long as one is left)
        take = [min(max(1, round(c * fraction)), c) for c in counts]
        n_pick = sum(take)
    else:
        exact = [c * n_pick / n for c in counts]
        take = [math.floor(e) for e in exact]
        order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - take[c]), c))
        for c in order[: n_pick - sum(take)]:
            take[c] += 1
    gen = torch.Generator().manual_seed(seed)
    picked, rest = [], []
    for c, (count, k) in enumerate(zip(counts, take)):
        if count == 0:
            continue
        if k == 0 or (need_rest and k == count):
            empty = f"no {what} image" if k == 0 else "no training image left"
            raise DataError(
                f"class {classes[c]!r} ({count} image(s)) would have {empty} when {n_pick} of "
                f"{n} images are taken for {what}; change the {what} share or add images"
            )
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(count, generator=gen)]
        picked.append(idx[:k])
        rest.append(idx[k:])
    return torch.sort(torch.cat(picked)).values, torch.sort(torch.cat(rest)).values


def check_labels(labels: Tensor, num_classes: int, source: str) -> None:
    """Raise :class:`DataError` if a label falls outside ``0..num_classes-1``."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataError(
            f"{source}: labels must be in 0..{num_classes - 1} ({num_classes} classes); found "
            f"{bad.numel()} out of range (e.g. {int(bad[0])})"
        )


# -- scikit-learn digits ------------------------------------------------------------------------


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's 1,797 8×8 digits (no download), split stratified and fixed by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    # 0..16 intensities -> 0..255, so every data set enters the transforms as uint8.
    images = torch.from_numpy(np.round(d.images * 255.0 / 16.0).astype(np.uint8))[:, None]
    labels = torch.from_numpy(d.target.astype(np.int64))
    tr, te = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=d.target
    )
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    classes = [str(i) for i in range(10)]
    return DataSplits(
        ArrayDataset(images[tr], labels[tr]), ArrayDataset(images[te], labels[te]), classes, 1
    )


# -- MNIST / Fashion-MNIST (IDX files) ----------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a uint8 array, checking its size against its header."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{path}: cannot read ({e}); the gzip file is truncated or corrupt, download it again"
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw):,} bytes (uncompressed) but its header {dims} needs {expected:,}; "
            "the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(data_dir: Path, stem: str) -> Path | None:
    for folder in (data_dir, data_dir / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(
    data_dir: str | os.PathLike, fashion: bool = False, download: bool = False
) -> DataSplits:
    """MNIST or Fashion-MNIST from the four official IDX files (``.gz`` or uncompressed).

    Looks in ``data_dir``, ``data_dir/raw`` and torchvision's ``data_dir/{FashionMNIST,MNIST}/raw``;
    with ``download=True`` fetches them through torchvision first (needs internet).
    """
    data_dir = Path(data_dir)
    name = "FashionMNIST" if fashion else "MNIST"
    if download:
        _download(name, data_dir)
    if _find(data_dir, IDX_FILES["train"][0]) is None and (data_dir / name).is_dir():
        data_dir = data_dir / name
    splits = {}
    for split, (img_stem, lbl_stem, count) in IDX_FILES.items():
        paths = [_find(data_dir, img_stem), _find(data_dir, lbl_stem)]
        if None in paths:
            files = [f"{s}.gz" for v in IDX_FILES.values() for s in v[:2]]
            raise DataError(
                f"{name} files not found in {data_dir}: place the official {', '.join(files)} "
                "there (gz or uncompressed), or pass --download (download=True) when online"
            )
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        for path, arr, ndim in ((paths[0], images, 3), (paths[1], labels, 1)):
            if arr.ndim != ndim:
                raise DataError(
                    f"{path}: holds items of shape {arr.shape[1:]}; expected "
                    f"{'images [N, H, W]' if ndim == 3 else 'labels [N]'}: it is the wrong file"
                )
            if len(arr) != count:  # a subset or an extension of the official data set
                log.info("%s: %d items (the official file holds %d)", path, len(arr), count)
        if len(images) != len(labels):
            raise DataError(
                f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels"
            )
        labels_t = torch.from_numpy(labels.astype(np.int64))
        check_labels(labels_t, 10, str(paths[1]))
        splits[split] = ArrayDataset(torch.from_numpy(images.copy())[:, None], labels_t)
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(10)]
    return DataSplits(splits["train"], splits["test"], list(classes), 1)


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        getattr(tvd, name)(str(root), train=True, download=True)
        getattr(tvd, name)(str(root), train=False, download=True)
    except Exception as e:  # urllib/HTTP errors of every kind: all mean "could not fetch"
        raise DataError(
            f"could not download {name} into {root} ({e}); when offline, place the official "
            f"files there yourself"
        ) from e


# -- CIFAR-10/100 (python pickles, unpickled with a whitelist) ----------------------------------

# A CIFAR batch is a dict of numpy arrays, lists, bytes and ints: nothing else may be built.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name} (only numpy arrays are allowed)"
        )


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """One CIFAR python batch as a dict with str keys, without ever running pickled code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as e:
        raise DataError(
            f"{path}: not a readable CIFAR batch ({e}); it is truncated, corrupt or not from the "
            "official cifar-*-python.tar.gz"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR batch, got {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar(
    data_dir: str | os.PathLike, num_classes: int = 10, download: bool = False
) -> DataSplits:
    """CIFAR-10 or CIFAR-100 from the official python batches (``cifar-10-batches-py`` etc.)."""
    data_dir = Path(data_dir)
    folder, train_files, meta_file, label_key, names_key = (
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "batches.meta",
         "labels", "label_names")
        if num_classes == 10
        else ("cifar-100-python", ["train"], "meta", "fine_labels", "fine_label_names")
    )  # fmt: skip
    if download:
        _download("CIFAR10" if num_classes == 10 else "CIFAR100", data_dir)
    if (data_dir / folder).is_dir():
        data_dir = data_dir / folder
    needed = [*train_files, "test_batch" if num_classes == 10 else "test", meta_file]
    missing = [n for n in needed if not (data_dir / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-{num_classes} files {missing} not found in {data_dir}: extract the official "
            f"cifar-{num_classes}-python.tar.gz there (giving {folder}/), or pass --download "
            "(download=True) when online"
        )
    meta = read_cifar_batch(data_dir / meta_file)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(names_key, [])]
    if len(classes) != num_classes:
        raise DataError(
            f"{data_dir / meta_file}: expected {num_classes} names under {names_key!r}, "
            f"found {len(classes)}"
        )

    def load(names: list[str]) -> ArrayDataset:
        images, labels = [], []
        for n in names:
            batch = read_cifar_batch(data_dir / n)
            data, lab = batch.get("data"), batch.get(label_key)
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(
                    f"{data_dir / n}: 'data' must be a uint8 array [N, 3072] (32×32×3 images); "
                    f"got {getattr(data, 'shape', type(data).__name__)}"
                )
            if lab is None or len(lab) != len(data):
                raise DataError(
                    f"{data_dir / n}: {len(data)} images but "
                    f"{'no' if lab is None else len(lab)} {label_key!r}"
                )
            labels_t = torch.as_tensor(np.asarray(lab, dtype=np.int64))
            check_labels(labels_t, num_classes, str(data_dir / n))
            images.append(torch.from_numpy(data.astype(np.uint8).reshape(-1, 3, 32, 32)))
            labels.append(labels_t)
        return ArrayDataset(torch.cat(images), torch.cat(labels))

    return DataSplits(load(needed[:-2]), load([needed[-2]]), classes, 3)


# -- ImageFolder trees --------------------------------------------------------------------------


def scan_image_folder(
    root: str | os.PathLike, min_classes: int = 2, allow_empty: bool = False
) -> tuple[list[tuple[Path, int]], list[str]]:
    """``root/<class>/<image>`` -> ``([(path, label)], classes)``; classes sorted by name.

    A class folder without images is an error naming it (it would silently drop a class and
    shift the labels of the others), unless ``allow_empty`` (a validation tree may lack a class).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes, samples, empty = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            samples += [(f, len(classes)) for f in files]
            classes.append(d.name)
        else:
            empty.append(str(d))
    if empty and samples and not allow_empty:
        raise DataError(
            f"class folder(s) {', '.join(empty)} hold no images (extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)"
        )
    if not samples:
        raise DataError(
            f"no images found under {root}: expected one folder per class, "
            f"root/<class>/<image> with extension {', '.join(IMAGE_EXTENSIONS)}"
        )
    if len(classes) < min_classes:
        raise DataError(
            f"{root} holds one class ({classes[0]!r}); a classifier needs at least 2 class folders"
        )
    return samples, classes


def load_image_folder(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    in_chans: int = 3,
    on_error: str = "skip",
    max_pixels: int = MAX_PIXELS,
) -> DataSplits:
    """A class-per-folder tree: ``root/train`` with ``root/val`` and/or ``root/test``, else ``root``.

    Without a ``val`` folder the validation split is left to :func:`load_dataset` (held out of
    the training images); without a ``test`` folder there is no test split.
    """
    root = Path(root)
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise DataError(f"image folders give 1 (greyscale) or 3 (RGB) channels; got {in_chans}")
    test_dir = root / "test" if (root / "test").is_dir() else None
    val_dir = root / "val" if (root / "val").is_dir() else None

    def files(folder: Path | None, classes: list[str]) -> ImageFileDataset | None:
        if folder is None:
            return None
        found, names = scan_image_folder(folder, min_classes=1, allow_empty=True)
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"{folder} has classes {extra} that the training images do not have")
        found = [(p, classes.index(names[label])) for p, label in found]
        return ImageFileDataset(found, mode, on_error=on_error, max_pixels=max_pixels)

    if (root / "train").is_dir() and (val_dir or test_dir):
        train, classes = scan_image_folder(root / "train")
    else:
        train, classes = scan_image_folder(root)
        val_dir = test_dir = None
    return DataSplits(
        ImageFileDataset(train, mode, on_error=on_error, max_pixels=max_pixels),
        files(test_dir, classes),
        classes,
        in_chans,
        val=files(val_dir, classes),
    )


DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    download: bool = False,
    val_fraction: float = 0.1,
    val_size: int | None = None,
    train_subset: int | None = None,
    in_chans: int = 3,
    on_error: str = "skip",
    max_pixels: int = MAX_PIXELS,
) -> DataSplits:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``data_dir``, with a validation split.

    Args:
        seed: fixes the validation hold-out and the training subset.
        val_fraction: share of the training data held out for validation (stratified by class)
            when the source has no validation split of its own; ``val_size`` (an image count)
            takes precedence.
        train_subset: keep only this many training images (stratified, after the hold-out).

    Raises:
        DataError: missing or bad files; a split that leaves a class without validation or
            training images (naming it); ``train_subset`` above the training images or below
            the number of classes.
    """
    if name not in DATASETS:
        raise unknown_name("data set", name, DATASETS)
    if name == "digits":
        splits = load_digits(seed=0)  # the test split stays fixed whatever the training seed
    elif data_dir is None:
        raise DataError(
            f"data set {name!r} needs --data-dir PATH (data_dir=PATH): the folder with its files"
        )
    elif name in ("mnist", "fashion-mnist"):
        splits = load_mnist(data_dir, fashion=name == "fashion-mnist", download=download)
    elif name in ("cifar10", "cifar100"):
        splits = load_cifar(data_dir, 10 if name == "cifar10" else 100, download=download)
    else:
        splits = load_image_folder(data_dir, val_fraction, seed, in_chans, on_error, max_pixels)
    return split_train(splits, seed, val_fraction, val_size, train_subset)


def split_train(
    splits: DataSplits,
    seed: int = 0,
    val_fraction: float = 0.1,
    val_size: int | None = None,
    train_subset: int | None = None,
) -> DataSplits:
    """Hold the validation split out of ``splits.train`` (unless it has one) and take the
    training subset; see :func:`load_dataset`."""
    labels, n = splits.train.labels, len(splits.train)
    if splits.val is None:
        if val_size is not None and not 0 < val_size < n:
            raise DataError(
                f"val_size={val_size} (--val-size): the validation split must hold between 1 "
                f"and {n - 1} of the {n} training images"
            )
        if val_size is None and not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1); got {val_fraction}")
        fraction = val_fraction if val_size is None else None
        val, rest = stratified_split(
            labels, val_size or 0, seed, splits.classes, "validation", fraction=fraction
        )
        splits.val, splits.train = subset(splits.train, val), subset(splits.train, rest)
    if train_subset is not None:
        n, k = len(splits.train), len(splits.classes)
        if train_subset > n:
            raise DataError(
                f"train_subset={train_subset} (--train-subset) is more than the {n} training "
                "images left after the validation hold-out"
            )
        if train_subset < k:
            raise DataError(
                f"train_subset={train_subset} (--train-subset) is fewer than the {k} classes: "
                "every class needs a training image"
            )
        if train_subset < n:
            picked, _ = stratified_split(
                splits.train.labels,
                train_subset,
                seed + 1,
                splits.classes,
                "training subset",
                need_rest=False,
            )
            splits.train = subset(splits.train, picked)
    return splits
