"""The IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.datasets import sources
from harness.datasets.base import DataCorrupt, DataUnavailable

_DTYPES = {0x08: np.uint8}


def parse_idx(data: bytes, what: str) -> np.ndarray:
    """Parse an unzipped IDX file into a numpy array (uint8)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataCorrupt(f"{what}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataCorrupt(f"{what}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_dir(directory: Path, checksums: dict[str, str], dataset: str, how_to_get: str) -> dict[str, np.ndarray]:
    """Every IDX file named in `checksums` (stem -> md5 of the UNZIPPED file), .gz or not, each checked."""
    arrays = {}
    for stem, md5 in checksums.items():
        path = sources.find_file(directory, stem)
        if path is None:
            raise DataUnavailable(how_to_get)
        data = sources.read_maybe_gz(path)
        if sources.md5_of(data) != md5:
            raise DataCorrupt(f"{path}: md5 of the unzipped file is not {md5}; the file is damaged or not "
                              f"{dataset}. Delete it and fetch again.")
        arrays[stem] = parse_idx(data, str(path))
    return arrays
