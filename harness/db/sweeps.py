"""Sweeps in the store: each registered with its TOML text and job list (in the database and in a
manifest file, sweeps/<name>.json, which `db rebuild` reads back), and what each sweep's jobs have come to."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from harness.db import claims
from harness.db.jobs import plugin_stale
from harness.db.store import Store, atomic_write_json, insert_rows
from harness.numerics import NUMERICS_VERSION


class SweepConflict(ValueError):
    """Another sweep file already uses this sweep name in the store."""


def register(store: Store, name: str, path: str, description: str, toml: str, job_ids: list[str]) -> int:
    """Record the sweep and its job list (database and manifest file); returns how many of the jobs
    the sweep did not list before (0 for a new sweep). A sweep of the same name from another file
    with another text and other jobs is refused (SweepConflict): it would silently replace the first
    one's list."""
    manifest = store.sweep_manifest(name)
    added = 0
    if manifest.exists():
        try:
            before = json.loads(manifest.read_text())
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict) or not isinstance(before.get("job_ids", []), list):
            # a damaged manifest: the database's record of the sweep decides, and the manifest is rewritten
            known = text(store, name) if store.path.exists() else None
            before = {} if known is None else {"path": known[0], "toml": known[1],
                                               "job_ids": _job_ids(store, name)}
        if not before:
            before = {"path": path, "toml": toml, "job_ids": job_ids}
        # the same file (perhaps edited), or the same text (perhaps moved or cloned elsewhere)
        same = Path(before.get("path", "")).resolve() == Path(path).resolve() or before.get("toml") == toml
        if not same and set(before.get("job_ids", [])) != set(job_ids):
            raise SweepConflict(f"{path}: sweep name '{name}' is already used in this store by "
                                f"{before.get('path')} with other jobs; give this file another [sweep] name")
        if before.get("toml") != toml:
            added = len(set(job_ids) - set(before.get("job_ids", [])))
    atomic_write_json(manifest, {"name": name, "path": path, "description": description, "toml": toml,
                                 "job_ids": job_ids})
    with store.connect() as con:
        write(con, name, path, description, toml, job_ids)
    return added


def write(con, name: str, path: str, description: str, toml: str, job_ids: list[str]) -> None:
    """The sweep's row and job list, replacing what the database had for it."""
    con.execute("BEGIN TRANSACTION")
    con.execute("""INSERT OR REPLACE INTO sweeps (name, path, description, toml, updated)
                   VALUES (?, ?, ?, ?, current_timestamp)""", [name, path, description, toml])
    con.execute("DELETE FROM sweep_jobs WHERE sweep = ?", [name])
    insert_rows(con, "sweep_jobs", ("sweep", "job_id"), [[name, j] for j in job_ids])
    con.execute("COMMIT")


def _job_ids(store: Store, name: str) -> list[str]:
    with store.reader() as con:
        return [r[0] for r in con.execute("SELECT job_id FROM sweep_jobs WHERE sweep = ? ORDER BY job_id",
                                          [name]).fetchall()]


def text(store: Store, name: str) -> tuple[str, str] | None:
    """(path, TOML text) of the sweep as the store registered it, or None where it has no such sweep."""
    with store.reader() as con:
        row = con.execute("SELECT path, toml FROM sweeps WHERE name = ?", [name]).fetchone()
    return None if row is None else (row[0], row[1])


def counts(store: Store, busy: Iterable[str] = ()) -> list[tuple[str, str, int, int, int, int, int, int, int]]:
    """(sweep, description, total, done, failed, diverged, running, pending, stale) for every sweep in the
    store.

    done, failed and diverged count the current numerics version only; running counts the jobs without
    a result that a live driver has claimed or that is in `busy` (e.g. in a cluster task still queued or
    running), pending the others; stale counts the sweep's rows stored under an older numerics version or
    made by plugin code that is not installed now (kept and queryable, but not current results).
    """
    busy = set(busy)
    store.ensure_current()
    other_code = sorted(plugin_stale(store))  # made by plugin code that is not installed now: not results
    with store.reader() as con:
        rows = con.execute("""
            SELECT s.name, s.description, count(sj.job_id) AS total,
                count(*) FILTER (WHERE j.status = 'done' AND j.numerics = $v) AS done,
                count(*) FILTER (WHERE j.status = 'failed' AND j.numerics = $v) AS failed,
                count(*) FILTER (WHERE j.status = 'diverged' AND j.numerics = $v) AS diverged,
                coalesce(list(sj.job_id) FILTER (WHERE j.status IS NULL AND sj.job_id IS NOT NULL), []),
                (SELECT count(*) FROM jobs o WHERE o.sweep = s.name
                    AND (o.numerics < $v OR list_contains($other, o.job_id))) AS stale
            FROM sweeps s LEFT JOIN sweep_jobs sj ON sj.sweep = s.name
                LEFT JOIN jobs j ON j.job_id = sj.job_id AND NOT list_contains($other, j.job_id)
            GROUP BY s.name, s.description ORDER BY s.name""", {"v": NUMERICS_VERSION, "other": other_code}).fetchall()
    found = []
    for name, description, total, done, failed, diverged, waiting, stale in rows:
        running = len(claims.running(store, (j for j in waiting if j not in busy)) | busy.intersection(waiting))
        found.append((name, description, total, done, failed, diverged, running, len(waiting) - running, stale))
    return found
