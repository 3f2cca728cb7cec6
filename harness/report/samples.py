"""What a dataset looks like (`harness data info`): a grid of training images, or a scatter plot of 2-D
points coloured by class, drawn from a small stratified part of it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.datasets import Dataset, DatasetEntry, dataset_schemas, load_dataset
from harness.schema import resolve_options

SAMPLES = 64  # images in the grid


def sample(entry: DatasetEntry, root: Path | None) -> Dataset:
    """A small stratified part of the dataset: enough images for the grid, all points for vectors."""
    per_class = math.ceil(SAMPLES / len(entry.class_names))
    vectors = len(entry.example_shape) == 1
    raw = {"name": entry.name, "subset": 0 if vectors else per_class, "subset_mode": "stratified",
           "test_subset": SAMPLES}
    options = resolve_options("dataset", raw, "dataset", dataset_schemas())
    return load_dataset(options, str(root) if root is not None else None, "cpu", "float32")


def image_grid(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) in [0, 1] -> one image of `gap`-separated tiles (first channel), rows of sqrt(n)."""
    n, _, height, width = images.shape
    gap = 2
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (height + gap) - gap, cols * (width + gap) - gap), dtype=np.float32)
    for k in range(n):
        top, left = (k // cols) * (height + gap), (k % cols) * (width + gap)
        grid[top:top + height, left:left + width] = images[k, 0]
    return grid


def write_sample_png(dataset: Dataset, path: Path) -> None:
    """Write a grid of training images, or a scatter plot of 2-D points coloured by class, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = dataset.train_x.detach().cpu().float().numpy()
    if x.ndim == 4:
        axes.imshow(image_grid(x[:SAMPLES]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_axis_off()
    else:
        labels = dataset.train_y.cpu().numpy()
        for k, class_name in enumerate(dataset.class_names):
            axes.scatter(x[labels == k, 0], x[labels == k, 1], s=6, label=class_name)
        axes.set_aspect("equal")
        axes.legend(fontsize="small")
    axes.set_title(f"{dataset.name}" + (f" ({dataset.note})" if dataset.note else ""), fontsize="small", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
