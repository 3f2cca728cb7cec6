"""What the database says about jobs: their statuses, results stored under an older numerics version,
the versions of their metrics, and their errors."""

from __future__ import annotations

from collections.abc import Iterable

from harness.db.store import Store
from harness.numerics import NUMERICS_VERSION


def statuses(store: Store, job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> done / failed / diverged, for the jobs among `job_ids` that the database has."""
    ids = list(job_ids)
    if not ids or not store.path.exists():
        return {}
    with store.reader() as con:
        rows = con.execute("SELECT job_id, status FROM jobs WHERE list_contains(?, job_id)", [ids]).fetchall()
    return dict(rows)


def stale(store: Store, jobs) -> dict[str, str]:
    """current job id -> the id under which an older numerics version stored the same spec, for each
    of `jobs` (JobSpecs) that has such a row: its numbers came from code that computed differently."""
    older = {old: job.job_id for job in jobs for old in job.older_ids().values()}
    found = statuses(store, older)
    return {older[old]: old for old in found}


def metric_versions(store: Store, job_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """(job_id, registry metric) -> the version its stored values were computed with."""
    with store.reader() as con:
        rows = con.execute("""SELECT job_id, metric, max(version) FROM metrics
                              WHERE list_contains(?, job_id) AND metric IS NOT NULL GROUP BY ALL""",
                           [list(job_ids)]).fetchall()
    return {(job_id, metric): version for job_id, metric, version in rows}


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
