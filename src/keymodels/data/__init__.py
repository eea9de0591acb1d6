"""Data for training image classifiers: loaders, safe image decoding, transforms, recipes.

``load_dataset(name, data_dir)`` gives train/val/test splits; ``get_recipe(name)`` a full training recipe.
"""

from .datasets import (
    DATASETS,
    ArrayDataset,
    DataError,
    DataSplits,
    ImageFileDataset,
    collate_skip,
    dataset_transform,
    load_dataset,
    read_cifar_batch,
    read_idx,
    scan_image_folder,
    split_train,
    stratified_split,
    subset,
)
from .images import MAX_PIXELS, ImageDecodeError, decode_image, load_image, to_mode
from .recipes import RECIPES, Recipe, get_recipe, list_recipes
from .transforms import (
    Augment,
    BatchTransform,
    batch_mix,
    eval_transform,
    mean_std,
    preprocess_images,
    train_transform,
)

__all__ = [
    "DATASETS",
    "MAX_PIXELS",
    "RECIPES",
    "ArrayDataset",
    "Augment",
    "BatchTransform",
    "DataError",
    "DataSplits",
    "ImageDecodeError",
    "ImageFileDataset",
    "Recipe",
    "batch_mix",
    "collate_skip",
    "dataset_transform",
    "decode_image",
    "eval_transform",
    "get_recipe",
    "list_recipes",
    "load_dataset",
    "load_image",
    "mean_std",
    "preprocess_images",
    "read_cifar_batch",
    "read_idx",
    "scan_image_folder",
    "split_train",
    "stratified_split",
    "subset",
    "to_mode",
    "train_transform",
]
