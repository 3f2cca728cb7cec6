"""dSprites (Matthey et al. 2017), the real file: dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz.

It cannot be fetched offline; put it in the data root (or DIR/dsprites/) or use `shapes2d`, the
procedural stand-in over the same factor grid. The file is pinned by md5 7da33b31b13a06f4b04a70402ce90c2e,
the checksum that torchvision-style loaders of many independent projects use for DeepMind's published
file; no sha256 of it could be confirmed from a public source, so none is pinned (a made-up one would
only reject the real file). The arrays are also checked: keys, shapes, dtypes, and that
latents_classes enumerates the grid in the order this harness assumes (posY fastest).

The 737,280 images decompress to 3 GB of uint8; a load streams the `imgs` member of the archive and
keeps only the rows it needs, so a subset never holds the whole array. The split, subsets and
`stride` are those of shapes2d (see there): test is a seeded random 10,000 of the same images.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from harness.datasets import shapes2d
from harness.datasets.base import DataCorrupt, Dataset, DataUnavailable
from harness.schema import Options

FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
LATENT_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")

HOW_TO_GET = (
    f"dSprites not found: put {FILENAME} (from https://github.com/deepmind/dsprites-dataset) in DIR or "
    "DIR/dsprites and pass --data-root DIR or set HARNESS_DATA=DIR; offline, use the dataset 'shapes2d' "
    "(procedural stand-in for dSprites) instead."
)


def _candidates(root: Path | None) -> list[Path]:
    if root is None:
        return []
    return [root / FILENAME, root / "dsprites" / FILENAME, root / "dsprites-dataset" / FILENAME]


def locate(root: Path | None) -> str | None:
    for path in _candidates(root):
        if path.is_file():
            return str(path)
    return None


def fetch(root: Path | None) -> str:
    found = locate(root)
    if found:
        return f"already present in {found}"
    raise DataUnavailable(HOW_TO_GET)


def check_md5(path: Path, expected: str = MD5) -> None:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise DataCorrupt(f"{path}: md5 is {digest.hexdigest()}, expected {expected} (DeepMind's published "
                          "file); it is damaged or a different version. Delete it and copy it again.")


def _open_member(archive: zipfile.ZipFile, key: str):
    try:
        return archive.open(f"{key}.npy")
    except KeyError as exc:
        raise DataCorrupt(f"{archive.filename}: no array '{key}'") from exc


def _read_header(handle, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = read[version](handle)
    except (ValueError, KeyError) as exc:
        raise DataCorrupt(f"{where}: not a .npy array ({exc})") from exc
    if fortran or dtype.hasobject:
        raise DataCorrupt(f"{where}: expected a C-ordered array of numbers")
    return shape, dtype


def read_rows(path: Path, key: str, rows: np.ndarray, chunk_rows: int = 8192) -> np.ndarray:
    """Rows `rows` (n,) of array `key` in the .npz at `path`, in that order, streaming the member once."""
    wanted, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    with zipfile.ZipFile(path) as archive, _open_member(archive, key) as handle:
        shape, dtype = _read_header(handle, f"{path}:{key}")
        if len(wanted) and (wanted[0] < 0 or wanted[-1] >= shape[0]):
            raise IndexError(f"rows outside 0..{shape[0] - 1}")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        picked = np.empty((len(wanted), *shape[1:]), dtype=dtype)
        done = 0
        for start in range(0, shape[0], chunk_rows):
            if done == len(wanted):
                break
            count = min(chunk_rows, shape[0] - start)
            data = handle.read(count * row_bytes)
            if len(data) != count * row_bytes:
                raise DataCorrupt(f"{path}:{key} is truncated")
            here = wanted[done:][wanted[done:] < start + count]  # the wanted rows in this chunk
            block = np.frombuffer(data, dtype=dtype).reshape(count, *shape[1:])
            picked[done:done + len(here)] = block[here - start]
            done += len(here)
    return picked[inverse]


def check_arrays(path: Path) -> None:
    """Keys, shapes and dtypes of the real file, and that its latents follow the shapes2d grid order."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = {"imgs", "latents_classes"} - set(stored.files)
            if missing:
                raise DataCorrupt(f"{path}: missing arrays {sorted(missing)}")
            latents = stored["latents_classes"]
        with zipfile.ZipFile(path) as archive, _open_member(archive, "imgs") as handle:
            shape, dtype = _read_header(handle, f"{path}:imgs")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataCorrupt(f"{path}: not a readable .npz archive ({exc})") from exc
    if shape != (shapes2d.N_IMAGES, 64, 64) or dtype != np.uint8:
        raise DataCorrupt(f"{path}: imgs is {dtype} {shape}, expected uint8 ({shapes2d.N_IMAGES}, 64, 64)")
    if latents.shape != (shapes2d.N_IMAGES, len(LATENT_NAMES)):
        raise DataCorrupt(f"{path}: latents_classes is {latents.shape}, expected ({shapes2d.N_IMAGES}, 6)")
    if not np.array_equal(latents[:, 1:], shapes2d.factors_of(np.arange(shapes2d.N_IMAGES))):
        raise DataCorrupt(f"{path}: latents_classes does not enumerate the factor grid in dSprites' order")


def checked_path(root: Path | None) -> Path:
    found = locate(root)
    if found is None:
        raise DataUnavailable(HOW_TO_GET)
    path = Path(found)
    check_md5(path)
    check_arrays(path)
    return path


def verify(root: Path | None) -> str:
    path = checked_path(root)
    return f"md5 {MD5} and array layout ok ({path})"


def load(options: Options, root: Path | None, device, dtype) -> Dataset:
    path = checked_path(root)
    stride = options.get("stride", 1)
    return shapes2d.make_dataset("dsprites", shapes2d.split(options), stride,
                                 lambda indices: read_rows(path, "imgs", indices), device, dtype,
                                 source=str(path), note=f"real dSprites (stride {stride})")
