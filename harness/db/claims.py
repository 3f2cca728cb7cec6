"""Claims: one driver per job. A driver claims the jobs it is about to run with a file naming its process
(claims/<job_id>.json), so that a second driver on the same store leaves them alone; the claims go when
it ends. A claim whose owner process is gone (same host, pid not running, or running but started at
another time: the pid was reused) is stale and taken over; one from another host is respected, since its
owner cannot be checked from here. No database: claims are files, so that they work while another
process holds the database."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.db.store import Store, StoreUnavailable
from harness.disk import full_disk, is_full


class ClaimsUnusable(StoreUnavailable):
    """The claims folder, or a claim in it, is not what the harness wrote (a file, a folder): one line."""


def claim(store: Store, job_ids: Iterable[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Claim jobs for this process. Returns (the ids now ours, id -> owner for those another live process
    holds).

    A claim file appears with its owner already in it (a hard link to a file written first), so a driver
    killed while claiming leaves no empty claim; one that names no owner (an older release's, cut short
    by a kill) is stale too."""
    folder = store.root / "claims"
    if folder.exists() and not folder.is_dir():
        raise ClaimsUnusable(f"{folder} is not a folder (the harness keeps its job claims there): move it away")
    folder.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "start": process_start(os.getpid())}
    mine, others = [], {}
    written = folder / f".{me['pid']}.{time.time_ns()}.tmp"
    try:
        written.write_text(json.dumps(me))
        for job_id in job_ids:
            path = store.claim_path(job_id)
            for _ in range(2):
                try:
                    os.link(written, path)
                except FileExistsError:
                    if path.is_dir():
                        raise ClaimsUnusable(f"{path} is a folder, not a claim: move it away") from None
                    owner = _read_owner(path)
                    if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                        mine.append(job_id)
                        break
                    if not owner or (owner.get("host") == me["host"] and not _alive(owner)):
                        path.unlink(missing_ok=True)  # stale: its driver died; take it over
                        continue
                    others[job_id] = owner
                    break
                mine.append(job_id)
                break
    except OSError as exc:
        if not is_full(exc):
            raise
        release(store, mine)
        raise full_disk(exc, f"claiming jobs in {folder}") from exc
    finally:
        written.unlink(missing_ok=True)
    return mine, others


def owner(store: Store, job_id: str) -> dict[str, Any]:
    """Who claimed the job ({pid, host, since}), or {} where nobody did."""
    return _read_owner(store.claim_path(job_id))


def running(store: Store, job_ids: Iterable[str]) -> set[str]:
    """The jobs among `job_ids` that a live driver has claimed: running, or about to."""
    found = set()
    for job_id in job_ids:
        holder = _read_owner(store.claim_path(job_id))
        if holder and (holder.get("host") != socket.gethostname() or _alive(holder)):
            found.add(job_id)
    return found


def clear_stale(store: Store, job_ids: Iterable[str]) -> None:
    """Remove the claims on `job_ids` left by drivers that died on this host."""
    for job_id in job_ids:
        path = store.claim_path(job_id)
        if not path.exists():
            continue
        holder = _read_owner(path)  # none named: cut short by a kill (see claim)
        if path.is_dir():
            continue  # not ours to remove; claim() says so when it meets it
        if not holder or (holder.get("host") == socket.gethostname() and not _alive(holder)):
            path.unlink(missing_ok=True)


def release(store: Store, job_ids: Iterable[str]) -> None:
    """Drop this process's claims on `job_ids` (others' claims are left alone)."""
    for job_id in job_ids:
        path = store.claim_path(job_id)
        holder = _read_owner(path)
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22): with the pid it names
    one process for ever, since a reused pid starts later. None where there is no /proc."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process a claim names still runs: its pid runs and, where the claim recorded when it
    started, it is the same process (not a later one that got the pid)."""
    pid = holder.get("pid")
    if not process_running(pid):
        return False
    start = holder.get("start")
    return start is None or process_start(pid) in (None, start)


def process_running(pid: Any) -> bool:
    """Whether process `pid` runs on this host (a zombie has exited)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):  # no /proc here, or it ended just now
        return Path("/proc").is_dir() is False
