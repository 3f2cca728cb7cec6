"""The IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import numpy as np

from harness.datasets.base import DataCorrupt

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
