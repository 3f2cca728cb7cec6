"""Where datasets come from, offline first: an explicit root, Debian's packages, then the internet."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from harness.datasets.base import DataCorrupt, DataUnavailable
from harness.disk import replacing

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CACHE = Path("~/.cache/harness").expanduser()


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The user's data root: `--data-root`, else $HARNESS_DATA, else None."""
    chosen = explicit if explicit is not None else os.environ.get("HARNESS_DATA")
    if chosen in (None, ""):
        return None
    root = Path(chosen).expanduser()
    if root.exists() and not root.is_dir():
        raise DataUnavailable(f"data root {root} is not a directory; pass --data-root DIR or set HARNESS_DATA=DIR")
    return root


def cache_dir(root: Path | None) -> Path:
    """Where derived files (converted arrays, caches) go: under the data root, else ~/.cache/harness."""
    return (root if root is not None else DEFAULT_CACHE) / "cache"


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataCorrupt(f"{path}: cannot be read ({exc}); delete it and fetch again") from exc


def find_file(directory: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` inside `directory`."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
