"""What the database says about jobs: their statuses, results stored under an older numerics version,
the versions of their metrics, and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterable

from harness.db.store import Store
from harness.numerics import NUMERICS_VERSION
from harness.plugins import is_current


def statuses(store: Store, job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> done / failed / diverged, for the jobs among `job_ids` that the database has."""
    ids = list(job_ids)
    if not ids or not store.path.exists():
        return {}
    with store.reader() as con:
        rows = con.execute("SELECT job_id, status FROM jobs WHERE list_contains(?, job_id)", [ids]).fetchall()
    return dict(rows)


def stale(store: Store, jobs) -> dict[str, str]:
    """current job id -> the id under which older code stored the same spec, for each of `jobs` (JobSpecs)
    that has such a row: an older numerics version, or (for jobs that use a plugin) other plugin code. Its
    numbers came from code that computed differently."""
    jobs = list(jobs)
    older = {old: job.job_id for job in jobs for old in job.older_ids().values()}
    found = {older[old]: old for old in statuses(store, older)}
    specs = {json.dumps(job.to_dict(), sort_keys=True): job.job_id for job in jobs if job.plugins}
    if specs:
        with store.reader() as con:
            rows = con.execute("SELECT job_id, spec::VARCHAR FROM jobs WHERE plugins IS NOT NULL").fetchall()
        for job_id, spec in rows:
            current = specs.get(json.dumps(json.loads(spec), sort_keys=True))
            if current is not None and current != job_id:
                found.setdefault(current, job_id)
    return found


def plugin_stale(store: Store, sweep: str | None = None) -> set[str]:
    """Ids of the stored jobs (of `sweep`, or all) whose plugins are not installed now as they ran: the plugin's
    source or version changed, or it is gone. Their numbers came from other code; they stay queryable."""
    if not store.path.exists():
        return set()
    with store.reader() as con:
        rows = con.execute("SELECT job_id, plugins::VARCHAR FROM jobs WHERE plugins IS NOT NULL AND ($s IS NULL "
                           "OR sweep = $s OR job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $s))",
                           {"s": sweep}).fetchall()
    return {job_id for job_id, record in rows if not is_current(json.loads(record))}


def metric_versions(store: Store, job_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """(job_id, registry metric) -> the version its stored values were computed with; None where a plugin
    metric's values came from plugin code that is not installed now (so they count as missing)."""
    with store.reader() as con:
        rows = con.execute("""SELECT job_id, metric, max(version), any_value(plugin::VARCHAR) FROM metrics
                              WHERE list_contains(?, job_id) AND metric IS NOT NULL GROUP BY job_id, metric""",
                           [list(job_ids)]).fetchall()
    return {(job_id, metric): version if plugin is None or is_current({"metric": json.loads(plugin)}) else None
            for job_id, metric, version, plugin in rows}


def done(store: Store, numerics: int | None = NUMERICS_VERSION, sweep: str | None = None) -> list[str]:
    """Ids of the finished jobs (of one numerics version unless None; of one sweep's list if named)."""
    with store.reader() as con:
        return [row[0] for row in con.execute("""
            SELECT job_id FROM jobs WHERE status = 'done' AND ($n IS NULL OR numerics = $n)
                AND ($s IS NULL OR job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $s))
            ORDER BY job_id""", {"n": numerics, "s": sweep}).fetchall()]


def errors(store: Store, job_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(job_id, error) of the failed or diverged jobs among `job_ids`."""
    with store.reader() as con:
        return con.execute("""SELECT job_id, error FROM jobs WHERE list_contains(?, job_id)
                              AND status IN ('failed', 'diverged') ORDER BY job_id""", [list(job_ids)]).fetchall()
