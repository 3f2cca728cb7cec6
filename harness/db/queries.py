"""Named queries that reports use; each returns a polars DataFrame. All SQL of the reports is here."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from harness.db.jobs import plugin_stale
from harness.db.store import Store, damaged, open_read_only


def _frame(store: str | Path, sql: str, params: list | dict | None = None) -> pl.DataFrame:
    con = open_read_only(store)
    try:
        cursor = con.execute(sql, params or [])
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        error = damaged(Path(store), exc)
        if error is None:
            raise
        raise error from exc
    finally:
        con.close()
    return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)


def sweeps(store: str | Path) -> list[str]:
    """The names of the sweeps in the store, sorted."""
    return _frame(store, "SELECT name FROM sweeps ORDER BY name")["name"].to_list()


def sweep_descriptions(store: str | Path) -> dict[str, str]:
    """Each sweep's description, as its file's [sweep] table gives it."""
    frame = _frame(store, "SELECT name, coalesce(description, '') AS description FROM sweeps ORDER BY name")
    return dict(zip(frame["name"].to_list(), frame["description"].to_list(), strict=True)) if frame.height else {}


def finished_runs(store: str | Path, sweep: str, numerics: int | None) -> pl.DataFrame:
    """One row per finished job of `sweep` (listed by it now, or run under its name before) computed under
    numerics version `numerics` (None: every version): the `runs` columns plus the spec, the learnt-or-not
    anisotropic option and the commit that trained it."""
    return _frame(store, """
        SELECT r.*, j.spec, j.git_commit, json_extract(j.spec, '$.prior.learn')::BOOLEAN AS learn
        FROM runs r JOIN jobs j USING (job_id)
        WHERE r.status = 'done' AND ($numerics IS NULL OR r.numerics = $numerics)
            AND (j.sweep = $sweep OR j.job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $sweep))
            AND NOT list_contains($other, r.job_id)
        ORDER BY r.job_id""", {"sweep": sweep, "numerics": numerics, "other": _other_code(store, sweep)})


def _other_code(store: str | Path, sweep: str | None) -> list[str]:
    """The jobs (of `sweep`) that plugin code no longer installed made: never read as today's results."""
    return sorted(plugin_stale(Store(store), sweep))


def dim_stats(store: str | Path, job_ids: list[str], metric: str, stat: str) -> pl.DataFrame:
    """Per-dimension rows of one metric's statistic for `job_ids` (test split, or the whole factor grid for the
    metrics that read it): job_id, dim, key, value."""
    return _frame(store, """
        SELECT job_id, dim, key, key_index, value FROM dim_stats
        WHERE list_contains($ids, job_id) AND split IN ('test', 'grid') AND metric = $metric AND stat = $stat
        ORDER BY job_id, key_index, dim""", {"ids": job_ids, "metric": metric, "stat": stat})


def points(store: str | Path, job_ids: list[str], metric: str) -> pl.DataFrame:
    """2-D points of one metric for `job_ids` (test split): job_id, idx, x, y, value, label, factor."""
    return _frame(store, """
        SELECT job_id, idx, x, y, value, label, factor FROM points
        WHERE list_contains($ids, job_id) AND split IN ('test', 'grid') AND metric = $metric
        ORDER BY job_id, idx""", {"ids": job_ids, "metric": metric})


def epoch_timings(store: str | Path, sweep: str) -> pl.DataFrame:
    """Per finished job of `sweep`: device, pack size, CPU threads and workers (0 where not recorded: a GPU,
    or a job from before they were), commit and arch, with its median epoch seconds, seconds per
    model-epoch (a pack's epoch trains pack_size models) and samples per second."""
    return _frame(store, """
        SELECT j.job_id, j.device, j.pack_size,
            coalesce(TRY_CAST(json_extract(j.run_options, '$.threads') AS INTEGER), 0) AS threads,
            coalesce(TRY_CAST(json_extract(j.run_options, '$.workers') AS INTEGER), 0) AS workers,
            coalesce(left(j.git_commit, 7), '') AS git_commit,
            median(e.seconds) AS epoch_seconds, median(e.seconds) / j.pack_size AS seconds_per_model_epoch,
            median(e.samples_per_second) AS samples_per_second, count(*) AS epochs
        FROM jobs j JOIN epochs e USING (job_id)
        WHERE j.status = 'done'
            AND (j.sweep = $sweep OR j.job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $sweep))
        GROUP BY j.job_id, j.device, j.pack_size, j.run_options, j.git_commit
        ORDER BY j.device, j.pack_size, threads, workers, git_commit, j.job_id""", {"sweep": sweep})


def finished_jobs(store: str | Path, sweep: str | None, numerics: int | None, commit: str | None) -> pl.DataFrame:
    """One row per finished job, optionally only of `sweep`, numerics version `numerics` and a commit whose
    hash starts with `commit` (None: any): job_id, sweep, numerics, git_commit, device, seed, spec."""
    return _frame(store, """
        SELECT j.job_id, coalesce($sweep, j.sweep) AS sweep, j.numerics, coalesce(j.git_commit, '') AS git_commit,
            j.device, j.seed, j.spec::VARCHAR AS spec
        FROM jobs j
        WHERE j.status = 'done' AND ($numerics IS NULL OR j.numerics = $numerics)
            AND ($commit IS NULL OR starts_with(j.git_commit, $commit))
            AND ($sweep IS NULL OR j.sweep = $sweep
                 OR j.job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $sweep))
            AND NOT list_contains($other, j.job_id)
        ORDER BY j.job_id""", {"sweep": sweep, "numerics": numerics, "commit": commit,
                               "other": _other_code(store, sweep)})


def job_values(store: str | Path, job_ids: list[str]) -> pl.DataFrame:
    """Every scalar test-split value of `job_ids` in long form (job_id, name, value): the metrics and the
    test ELBO family, and seconds_per_model_epoch (the median epoch's seconds over the pack's size)."""
    return _frame(store, """
        SELECT job_id, name, value FROM metrics
        WHERE list_contains($ids, job_id) AND split IN ('test', 'grid') AND value IS NOT NULL
        UNION ALL
        SELECT e.job_id, 'seconds_per_model_epoch', median(e.seconds) / any_value(j.pack_size)
        FROM epochs e JOIN jobs j USING (job_id)
        WHERE list_contains($ids, e.job_id)
        GROUP BY e.job_id
        ORDER BY 1, 2""", {"ids": job_ids})
