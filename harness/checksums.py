"""sha256 of files and of JSON records: what checkpoints, resume states and shards record so that a later
read can tell whether the bytes or the numbers changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(record: dict[str, Any], seal: str) -> str:
    """The sha256 of a JSON record's content: every key but `seal` (where the record keeps this very value),
    as canonical JSON (sorted keys), so that it survives a write and a read back."""
    body = {k: v for k, v in record.items() if k != seal}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
