"""Fashion-MNIST: Debian's `dataset-fashion-mnist`, a user's directory, or torchvision's download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.datasets import sources
from harness.datasets.base import Dataset, DataUnavailable
from harness.datasets.idx import read_idx_dir
from harness.schema import Options

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")

# md5 of the UNZIPPED files (Debian recompressed the .gz files, so their own md5s differ).
FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

HOW_TO_GET = (
    "Fashion-MNIST not found. Any one of these works: "
    "(1) `apt-get install dataset-fashion-mnist` (Debian; files land in /usr/share/datasets/fashion-mnist); "
    "(2) put the four IDX files (.gz or unzipped) in DIR/fashion-mnist and pass --data-root DIR "
    "or set HARNESS_DATA=DIR; "
    "(3) with internet, `harness data fetch fashion_mnist` downloads them with torchvision."
)


def _candidates(root: Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs += [root / "fashion-mnist", root / "fashion_mnist", root / "FashionMNIST" / "raw", root]
    dirs.append(sources.DEBIAN_FASHION_MNIST)
    dirs.append(sources.cache_dir(root).parent / "FashionMNIST" / "raw")
    return dirs


def locate(root: Path | None) -> str | None:
    """The first directory holding all four files, or None."""
    for directory in _candidates(root):
        if all(sources.find_file(directory, stem) for stem in FILES):
            return str(directory)
    return None


def fetch(root: Path | None) -> str:
    found = locate(root)
    if found:
        return f"already present in {found}"
    target = sources.cache_dir(root).parent
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception as exc:  # no internet, or the mirror refused
        raise DataUnavailable(f"{HOW_TO_GET} (download failed: {type(exc).__name__})") from exc
    return f"downloaded with torchvision into {target / 'FashionMNIST' / 'raw'}"


def read_arrays(directory: Path) -> dict[str, np.ndarray]:
    """The four arrays, each checked against its published md5."""
    return read_idx_dir(directory, FILES, "Fashion-MNIST", HOW_TO_GET)


def verify(root: Path | None) -> str:
    """Check the four IDX files against the published md5s (read_arrays does); returns a line saying where."""
    found = locate(root)
    if found is None:
        raise DataUnavailable(HOW_TO_GET)
    read_arrays(Path(found))
    return f"md5 of the four unzipped IDX files matches the published Fashion-MNIST ({found})"


def images_to_tensor(images: np.ndarray, size: int, device, dtype) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, size, size) in [1e-6, 1 - 1e-6], resized once, bilinear."""
    x = torch.from_numpy(images.copy()).to(device=device).unsqueeze(1).to(dtype) / 255.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(1e-6, 1 - 1e-6)


def load(options: Options, root: Path | None, device, dtype) -> Dataset:
    found = locate(root)
    if found is None:
        raise DataUnavailable(HOW_TO_GET)
    arrays = read_arrays(Path(found))
    size = options.get("size", 32)
    return Dataset(
        name="fashion_mnist",
        train_x=images_to_tensor(arrays["train-images-idx3-ubyte"], size, device, dtype),
        train_y=torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)).to(device),
        test_x=images_to_tensor(arrays["t10k-images-idx3-ubyte"], size, device, dtype),
        test_y=torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)).to(device),
        class_names=CLASS_NAMES,
        source=found,
    )
