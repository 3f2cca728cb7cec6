"""A full disk: the one write failure that stops a sweep instead of failing its jobs. A job that trained
well is not wrong because the disk filled while its shard was written; it is unfinished, and runs (or
resumes) once space is freed. DiskFull carries one line naming what could not be written."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FULL = {errno.ENOSPC, errno.EDQUOT}
# how the libraries that write without an errno say it: DuckDB ("Could not write file ...: No space left
# on device"), safetensors ("IoError(Os { code: 28, kind: StorageFull, ... })")
FULL_TEXT = ("No space left on device", "Disk quota exceeded", "StorageFull")


class DiskFull(OSError):
    """The disk (or quota) under the store is full: stop, keep what is stored, mark nothing failed."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, is a full disk or quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in FULL):
            return True
        if any(text in str(exc) for text in FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def full_disk(exc: BaseException, what: str | None = None) -> DiskFull:
    """DiskFull for `exc` (a full disk, see is_full) met while doing `what` (by default: writing the file
    that the error names), in one line."""
    if isinstance(exc, DiskFull):
        return exc
    if what is None:
        named = _file_named(exc)
        what = f"writing {named}" if named else "writing a file"
    detail = " ".join(str(exc).split())
    return DiskFull(f"the disk is full: {what} failed ({detail[:300]})")


def _file_named(exc: BaseException | None) -> str | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.filename:
            return str(exc.filename)
        exc = exc.__cause__ or exc.__context__
    return None


_IN_FLIGHT: set[Path] = set()  # the temporary files this process is writing now (replacing)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` when the block ends, and removed where the
    block raises (a full disk, Ctrl-C) or the process is told to stop (remove_in_flight): readers see the old
    file or the new one, and no temporary file stays behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _IN_FLIGHT.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _IN_FLIGHT.discard(tmp)


def remove_in_flight() -> None:
    """Remove the temporary files that this process is writing now: for a signal handler that then exits at
    once (a worker that its driver stops), so that none stays behind."""
    for tmp in list(_IN_FLIGHT):
        tmp.unlink(missing_ok=True)
