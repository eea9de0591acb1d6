"""keymodels.data: loaders on real and broken files, safe image decoding, transforms, recipes."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from keymodels.data import (
    ArrayDataset,
    Augment,
    BatchTransform,
    DataError,
    ImageDecodeError,
    ImageFileDataset,
    collate_skip,
    dataset_transform,
    eval_transform,
    get_recipe,
    list_recipes,
    load_dataset,
    load_image,
    mean_std,
    preprocess_images,
    read_cifar_batch,
    read_idx,
    train_transform,
)
from keymodels.data.datasets import load_cifar
from keymodels.data.recipes import Recipe
from keymodels.errors import InvalidInputError

FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


# -- Fashion-MNIST (real files) -----------------------------------------------------------------


def test_fashion_mnist_shapes_counts_labels(shared_data: Path) -> None:
    splits = load_dataset("fashion-mnist", shared_data / "fashion-mnist", val_size=5000)
    assert splits.train.images.shape == (55000, 1, 28, 28)
    assert splits.val.images.shape == (5000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    # The official files hold exactly 6,000 / 1,000 images per class; the hold-out is stratified.
    assert torch.bincount(splits.train.labels).tolist() == [5500] * 10
    assert torch.bincount(splits.val.labels).tolist() == [500] * 10
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert splits.classes[0] == "T-shirt/top" and splits.classes[9] == "Ankle boot"
    image, label = splits.test[0]
    assert image.shape == (1, 28, 28) and label == 9  # the first test image is an ankle boot


def _fmnist_copy(shared_data: Path, tmp_path: Path, replace: dict[str, bytes]) -> Path:
    for name in FMNIST_FILES:
        if name in replace:
            (tmp_path / name).write_bytes(replace[name])
        else:
            os.symlink(shared_data / "fashion-mnist" / name, tmp_path / name)
    return tmp_path


def test_truncated_gz_names_the_file(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    d = _fmnist_copy(shared_data, tmp_path, {"t10k-labels-idx1-ubyte.gz": data[: len(data) // 2]})
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*truncated"):
        load_dataset("fashion-mnist", d)


def test_truncated_raw_idx_names_expected_size(shared_data: Path, tmp_path: Path) -> None:
    raw = gzip.decompress(
        (shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    )
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(raw[:5000])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 5,000 bytes .* needs 10,008"):
        read_idx(path)


def _write_idx(folder: Path, split: str, n: int, seed: int = 0) -> None:
    """Hand-written IDX files: ``n`` random 28×28 images, labels cycling over 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    (folder / f"{split}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()
    )
    (folder / f"{split}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, n) + labels.tobytes()
    )


def test_small_idx_files_load_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_idx(tmp_path, "train", 40)
    _write_idx(tmp_path, "t10k", 20, seed=1)
    with caplog.at_level("INFO", logger="keymodels.data.datasets"):
        splits = load_dataset("mnist", tmp_path, val_size=10)
    assert len(splits.train) == 30 and len(splits.val) == 10 and len(splits.test) == 20
    assert torch.bincount(splits.val.labels).tolist() == [1] * 10
    assert "40 items (the official file holds 60000)" in caplog.text
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    assert torch.equal(
        splits.test.images[:, 0],
        torch.from_numpy(np.frombuffer(raw[16:], np.uint8)).view(20, 28, 28),
    )
    # Images and labels that disagree, and a truncated file, are still refused.
    _write_idx(tmp_path, "t10k", 19)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError, match=r"holds 20 images but .*t10k-labels-idx1-ubyte 19 labels"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"15,691 bytes .*needs 15,696"):
        load_dataset("mnist", tmp_path)


def test_missing_files_say_what_to_place(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*--download"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("fashion-mnist")


def test_idx_labels_out_of_range(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    for split, n in (("train", 60000), ("t10k", 10000)):
        img = struct.pack(">IIII", 0x803, n, 28, 28) + np.zeros((n, 28, 28), np.uint8).tobytes()
        lab = np.full(n, 3, np.uint8)
        lab[7] = 12 if split == "t10k" else 3
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(img)
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + lab.tobytes()
        )
    del images
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte: labels must be in 0\.\.9.*e\.g\. 12"
    ):
        load_dataset("mnist", tmp_path)


# -- digits ------------------------------------------------------------------------------------


def test_digits_fixed_split() -> None:
    a, b = load_dataset("digits"), load_dataset("digits", seed=5)
    assert len(a.train) + len(a.val) == 1437 and len(a.test) == 360
    assert torch.equal(a.test.images, b.test.images)  # the test split does not follow the seed
    assert not torch.equal(a.val.images, b.val.images)  # the validation hold-out does
    assert torch.equal(a.val.images, load_dataset("digits").val.images)  # fixed by it
    assert torch.bincount(a.val.labels, minlength=10).min() >= 13  # 10% of each class
    assert a.train.images.max() == 255 and a.train.images.dtype == torch.uint8
    assert torch.bincount(a.test.labels).min() >= 35  # stratified


# -- CIFAR (synthetic pickles in the official layout) -------------------------------------------


def _write_cifar(root: Path, num_classes: int, n: int = 6, bad_label: bool = False) -> Path:
    rng = np.random.default_rng(0)
    if num_classes == 10:
        folder, files, meta_name = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "batches.meta",
        )
        label_key, names_key = b"labels", b"label_names"
    else:
        folder, files, meta_name = root / "cifar-100-python", ["train", "test"], "meta"
        label_key, names_key = b"fine_labels", b"fine_label_names"
    folder.mkdir(parents=True)
    for i, name in enumerate(files):
        labels = [int(v) for v in rng.integers(0, num_classes, n)]
        if bad_label and i == 0:
            labels[2] = num_classes
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: labels,
            b"filenames": [f"img{j}.png".encode() for j in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {names_key: [f"class{c}".encode() for c in range(num_classes)]}
    (folder / meta_name).write_bytes(pickle.dumps(meta, protocol=2))
    return folder


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_pickles(tmp_path: Path, num_classes: int) -> None:
    folder = _write_cifar(tmp_path, num_classes)
    splits = load_cifar(tmp_path, num_classes)  # the raw splits: too few images to hold out
    n_train = 30 if num_classes == 10 else 6
    assert splits.train.images.shape == (n_train, 3, 32, 32) and len(splits.test) == 6
    assert splits.classes[-1] == f"class{num_classes - 1}" and splits.in_chans == 3
    # Rows are 1024 red, then green, then blue values, row-major.
    first = read_cifar_batch(folder / ("data_batch_1" if num_classes == 10 else "train"))
    assert splits.train.images[0, 1, 0, 5] == first["data"][0, 1024 + 5]
    assert splits.train.images[0, 2, 31, 31] == first["data"][0, 3071]


def test_cifar_labels_out_of_range(tmp_path: Path) -> None:
    _write_cifar(tmp_path, 10, bad_label=True)
    with pytest.raises(DataError, match=r"data_batch_1: labels must be in 0\.\.9"):
        load_dataset("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_cifar_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path, 10)
    evil = _Evil()
    evil.path = str(tmp_path / "pwned")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": evil}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*refused to load global posix\.mkdir"):
        load_dataset("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing_files(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path, 10)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"\['data_batch_4'\] not found.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path)


# -- image folders and image decoding -----------------------------------------------------------


def _tree(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 10)) -> Path:
    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def test_image_folder_split(tmp_path: Path) -> None:
    _tree(tmp_path, {"cat": 10, "dog": 5})
    splits = load_dataset("imagefolder", tmp_path, val_fraction=0.2)
    assert splits.classes == ["cat", "dog"]
    assert len(splits.val) == 3 and len(splits.train) == 12  # 2 cats + 1 dog held out
    assert sorted(splits.val.labels.tolist()) == [0, 0, 1] and splits.test is None
    names = {p for p, _ in splits.train.samples} | {p for p, _ in splits.val.samples}
    assert len(names) == 15  # disjoint and complete
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (12, 10) and label == 0


def test_image_folder_train_val_dirs(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"a": 3, "b": 3})
    _tree(tmp_path / "val", {"b": 2})
    splits = load_dataset("imagefolder", tmp_path, in_chans=1)
    assert len(splits.train) == 6 and splits.val.labels.tolist() == [1, 1]
    assert splits.test is None and splits.train[0][0].mode == "L"
    # A test/ folder without val/: validation is held out of train/, test/ is the test split.
    (tmp_path / "val").rename(tmp_path / "test")
    splits = load_dataset("imagefolder", tmp_path, val_fraction=0.34)
    assert len(splits.train) == 4 and len(splits.val) == 2 and splits.test.labels.tolist() == [1, 1]


def test_image_folder_empty_or_one_class(tmp_path: Path) -> None:
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images found under .*empty"):
        load_dataset("imagefolder", tmp_path / "empty")
    _tree(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match=r"one class \('only'\).*at least 2"):
        load_dataset("imagefolder", tmp_path / "one")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "nowhere")


def test_corrupt_files_skip_or_fail(tmp_path: Path) -> None:
    _tree(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "b" / "0.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    transform = eval_transform(8, [0.5] * 3, [0.25] * 3, resize=True)

    skip = load_dataset("imagefolder", tmp_path, val_fraction=0.1)
    ds = skip.train
    ds.samples += skip.val.samples
    ds.transform = transform
    items = [ds[i] for i in range(len(ds))]
    assert sum(item is None for item in items) == 2
    images, labels, skipped = collate_skip(items)
    assert images.shape == (4, 3, 8, 8) and skipped == 2 and len(labels) == 4

    fail = load_dataset("imagefolder", tmp_path, val_fraction=0.1, on_error="fail")
    bad = next(
        i
        for i, (p, _) in enumerate(fail.train.samples + fail.val.samples)
        if "garbage" in p.name or "truncated" in p.name
    )
    ds = fail.train
    ds.samples += fail.val.samples
    with pytest.raises(ImageDecodeError, match=r"(garbage|truncated)\.png: cannot decode"):
        ds[bad]


def _png_with_header_size(width: int, height: int) -> bytes:
    """A 1×1 PNG whose header claims width×height: a decompression bomb as the decoder sees it."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(50_000, 50_000))
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: over the pixel cap.*2500000000 pixels"):
        load_image(path)
    path.write_bytes(_png_with_header_size(10_000, 10_000))  # over our cap, under Pillow's error
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: .*over the pixel cap"):
        load_image(path)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    with pytest.raises(
        ImageDecodeError, match=r"small\.png: 40×30 = 1,200 pixels is over the pixel cap of 1,000"
    ):
        load_image(small, max_pixels=1000)
    assert load_image(small, max_pixels=1200).size == (40, 30)


def test_modes_are_converted(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    r, g, b = load_image(cmyk).getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15

    p = tmp_path / "palette.png"
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(p, transparency=0)
    assert load_image(p).getpixel((0, 0)) == (0, 0, 255)

    rgba = tmp_path / "alpha.png"
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(rgba)
    out = load_image(rgba)
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (255, 0, 0)

    deep = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    assert np.asarray(load_image(deep, "L")).tolist() == [[0, 128, 255]]  # rescaled, not clipped


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 10))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (10, 20)
    assert out.getpixel((5, 2))[0] > 200 and out.getpixel((5, 17))[0] < 50  # white half on top


def test_preprocess_images_matches_eval_transform(tmp_path: Path) -> None:
    splits = load_dataset("digits")
    info = {"in_chans": 1, "img_size": [8, 8], "mean": [0.3], "std": [0.4]}
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(splits.test.images[i, 0].numpy(), "L").save(paths[-1])
    x = preprocess_images(paths, info)
    expected = (splits.test.images[:3].float() / 255 - 0.3) / 0.4
    torch.testing.assert_close(x, expected)
    # Any size and mode: a big RGBA photo becomes one grey 8×8 image.
    big = Image.new("RGBA", (300, 200), (10, 200, 30, 255))
    assert preprocess_images(big, info).shape == (1, 1, 8, 8)


# -- transforms and recipes ---------------------------------------------------------------------


def test_mean_std_matches_numpy() -> None:
    x = torch.randint(0, 256, (50, 3, 5, 7), dtype=torch.uint8)
    mean, std = mean_std(x)
    a = x.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, a.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(std, a.std(axis=(0, 2, 3)), atol=1e-6)


def test_train_transform_flips_only_when_asked() -> None:
    image = torch.zeros(1, 4, 4, dtype=torch.uint8)
    image[:, :, 0] = 255  # left column bright
    plain = train_transform(Augment(), 4, [0.0], [1.0])
    flip = train_transform(Augment(hflip=True), 4, [0.0], [1.0])
    torch.manual_seed(0)
    assert all(plain(image)[0, :, 0].eq(1).all() for _ in range(20))
    right = [flip(image)[0, :, 3].eq(1).all().item() for _ in range(40)]
    assert 5 < sum(right) < 35
    assert not get_recipe("digits").augment.hflip  # a mirrored 3 is not a 3
    assert get_recipe("fashion-mnist").augment.hflip


def test_batch_transform_without_augmentation_is_the_eval_transform() -> None:
    images = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    mean, std = [0.2, 0.5, 0.7], [0.3, 0.25, 0.1]
    batched = BatchTransform(Augment(), mean, std)
    per_image = torch.stack([eval_transform((5, 7), mean, std)(x) for x in images])
    torch.testing.assert_close(batched(images), per_image, rtol=0, atol=1e-6)
    torch.testing.assert_close(batched(images[2]), per_image[2], rtol=0, atol=1e-6)  # one image


def test_batch_transform_crops_and_flips_like_torchvision() -> None:
    # Distinct pixel values, so each output says which window (and mirror) it came from.
    image = torch.arange(1, 37, dtype=torch.uint8).view(1, 1, 6, 6)
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2)).float() / 255
    windows = {}
    for top in range(5):
        for left in range(5):
            window = padded[:, top : top + 6, left : left + 6]
            windows[top, left, False], windows[top, left, True] = window, window.flip(-1)
    torch.manual_seed(0)
    out = BatchTransform(Augment(crop_padding=2, hflip=True), [0.0], [1.0])(
        image.expand(2000, -1, -1, -1)
    )
    seen = []
    for x in out:
        match = [k for k, w in windows.items() if torch.equal(x, w)]
        assert len(match) == 1, "every output is one padded window, mirrored or not"
        seen.append(match[0])
    assert {k[:2] for k in seen} == {(t, c) for t in range(5) for c in range(5)}  # all offsets
    assert 0.45 < sum(k[2] for k in seen) / len(seen) < 0.55  # mirrored half the time


def test_batch_transform_erases_like_torchvision() -> None:
    n, p = 4000, 0.25
    images = torch.full((n, 1, 28, 28), 255, dtype=torch.uint8)  # normalized: 1 everywhere
    torch.manual_seed(0)
    batched = BatchTransform(Augment(random_erasing=p), [0.0], [1.0])(images)
    reference = train_transform(Augment(random_erasing=p), 28, [0.0], [1.0])
    per_image = torch.stack([reference(x) for x in images])
    for out in (batched, per_image):
        assert set(out.unique().tolist()) == {0.0, 1.0}
    erased = (batched == 0).flatten(1).sum(1)
    reference_erased = (per_image == 0).flatten(1).sum(1)
    # Erased images are the same share, and the areas have the same distribution.
    assert abs((erased > 0).float().mean() - p) < 0.025
    assert abs((erased > 0).float().mean() - (reference_erased > 0).float().mean()) < 0.03
    area = erased[erased > 0].float()
    assert abs(area.mean() / reference_erased[reference_erased > 0].float().mean() - 1) < 0.08
    assert 0.02 * 784 - 10 <= area.min() and area.max() <= 0.33 * 784 + 30
    for x in batched[erased > 0][:200]:  # each erased region is one axis-aligned rectangle
        rows, cols = (x[0] == 0).nonzero(as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h * w == len(rows)


def test_array_dataset_transforms_a_batch_at_once() -> None:
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    ds = ArrayDataset(images, torch.arange(10), BatchTransform(Augment(), [0.5], [0.5]))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_skip)
    x, y, skipped = next(iter(loader))
    assert y.tolist() == [0, 1, 2, 3] and skipped == 0
    torch.testing.assert_close(x, (images[:4].float() / 255 - 0.5) / 0.5)
    ds.transform = eval_transform(4, [0.5], [0.5])  # a per-image transform still works
    torch.testing.assert_close(next(iter(loader))[0], x)


def test_dataset_transform_batches_in_memory_images_of_the_model_size() -> None:
    arrays = ArrayDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4))
    stats = [0.5], [0.25]
    assert isinstance(
        dataset_transform(arrays, Augment(hflip=True), (8, 8), *stats), BatchTransform
    )
    assert isinstance(dataset_transform(arrays, Augment(), (8, 8), *stats), BatchTransform)
    per_image = [
        dataset_transform(arrays, Augment(), (16, 16), *stats),  # resized
        dataset_transform(arrays, Augment(random_resized_crop=0.5), (8, 8), *stats),
        dataset_transform(arrays, Augment(auto_augment="trivial"), (8, 8), *stats),
        dataset_transform(ImageFileDataset([], "L"), Augment(), (8, 8), *stats),  # files
    ]
    assert not any(isinstance(t, BatchTransform) for t in per_image)
    assert tuple(per_image[0](arrays.images[0]).shape) == (1, 16, 16)


def test_recipes_and_errors() -> None:
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder"} <= set(
        list_recipes()
    )
    r = get_recipe("fashion-mnist", epochs=3, augment={"mixup": 0.2})
    assert r.epochs == 3 and r.augment.mixup == 0.2 and r.augment.hflip
    with pytest.raises(
        InvalidInputError,
        match=r"unknown recipe 'fashion_mnist'.*Did you mean 'fashion-mnist'.*Known: cifar10",
    ):
        get_recipe("fashion_mnist")
    with pytest.raises(
        InvalidInputError,
        match=r"unknown image-classification model 'vit_nope'. Did you mean 'vit_nano_patch2_8'.*Known: ",
    ):
        get_recipe("digits", model="vit_nope")
    with pytest.raises(InvalidInputError, match=r"unknown recipe field\(s\) \['epoch'\]"):
        get_recipe("digits", epoch=3)
    with pytest.raises(
        InvalidInputError, match=r"unknown augment field\(s\) \['mix_up'\].*Did you mean 'mixup'"
    ):
        get_recipe("digits", augment={"mix_up": 0.2})
    d = get_recipe("digits").to_dict()
    assert Recipe.from_dict(d) == get_recipe("digits")
    with pytest.raises(InvalidInputError, match=r"unknown recipe field\(s\) \['lr_min'\]"):
        Recipe.from_dict({**d, "lr_min": 0.0})
    with pytest.raises(InvalidInputError, match=r"unknown augment field\(s\) \['flip'\]"):
        Recipe.from_dict({**d, "augment": {"flip": True}})
    with pytest.raises(InvalidInputError, match="unknown data set 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(InvalidInputError, match="auto_augment"):
        Augment(auto_augment="autoaugment")


def test_image_folder_names_an_empty_class_folder(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "b.png")
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder\(s\) .*dog hold no images"):
        load_dataset("imagefolder", tmp_path)


def test_recipe_refuses_img_size_0_and_negative_mixup() -> None:
    with pytest.raises(InvalidInputError, match="img_size must be >= 1"):
        get_recipe("digits", img_size=0)
    with pytest.raises(InvalidInputError, match="mixup must be >= 0"):
        get_recipe("digits", augment={"mixup": -1.0})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": float("inf")}, "lr must be a finite number > 0; got inf"),
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"lr": -0.1}, "lr must be a finite number > 0; got -0.1"),
        ({"min_lr": float("nan")}, "min_lr must be a finite number >= 0; got nan"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0; got inf"),
        ({"clip_grad": -1.0}, "clip_grad must be a finite number >= 0; got -1.0"),
        ({"ema": 1.0}, r"ema must be a finite number in \[0, 1\); got 1.0"),
        ({"val_fraction": 0.0}, r"val_fraction must be a finite number in \(0, 1\); got 0.0"),
    ],
)
def test_recipe_refuses_non_finite_and_out_of_range_numbers(overrides, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        get_recipe("digits", **overrides)


def test_unreadable_files_are_warned_once_each_with_a_stable_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tree(tmp_path, {"a": 4, "b": 4})
    for bad in ("a/garbage.png", "b/empty.png"):
        (tmp_path / bad).write_bytes(b"not an image" if "garbage" in bad else b"")
    splits = load_dataset("imagefolder", tmp_path, val_fraction=0.1)
    ds = splits.train
    ds.samples += splits.val.samples  # both bad files in one data set
    ds.transform = eval_transform(8, [0.5] * 3, [0.25] * 3, resize=True)
    with caplog.at_level("WARNING", logger="keymodels.data.datasets"):
        for _ in range(3):  # three epochs read every file
            assert sum(ds[i] is None for i in range(len(ds))) == 2
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 2, warned
    assert "empty.png" in warned[0] + warned[1] and "garbage.png" in warned[0] + warned[1]
    assert ds.unreadable_files == 2

    # Loader workers (new processes every epoch) share what they found: still 2 files.
    fresh = load_dataset("imagefolder", tmp_path, val_fraction=0.1).train
    fresh.samples += splits.val.samples
    fresh.transform = ds.transform
    loader = torch.utils.data.DataLoader(
        fresh, batch_size=4, num_workers=2, collate_fn=collate_skip
    )
    for _ in range(2):
        assert sum(skipped for _, _, skipped in loader) == 2
    assert fresh.unreadable_files == 2


# -- validation hold-out and training subsets ---------------------------------------------------


def test_train_subset_is_stratified_seeded_and_after_the_hold_out() -> None:
    full = load_dataset("digits")
    a = load_dataset("digits", train_subset=50)
    b = load_dataset("digits", train_subset=50, seed=3)
    assert len(a.train) == 50 and torch.bincount(a.train.labels).tolist() == [5] * 10
    assert torch.equal(a.val.images, full.val.images)  # the subset leaves validation alone
    assert not torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.train.images, load_dataset("digits", train_subset=50).train.images)


def test_split_errors_name_numbers_and_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train_subset=5000 .*more than the 1295 training"):
        load_dataset("digits", train_subset=5000)
    with pytest.raises(DataError, match=r"train_subset=9 .*fewer than the 10 classes"):
        load_dataset("digits", train_subset=9)
    _tree(tmp_path, {"cat": 10, "dog": 1})
    with pytest.raises(DataError, match=r"class 'dog' \(1 image\(s\)\) would have no training"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DataError, match=r"class 'dog' \(1 image\(s\)\) would have no validation"):
        load_dataset("imagefolder", tmp_path, val_size=2)
