"""Named queries that reports use; each returns a polars DataFrame."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from harness.db.store import open_read_only


def _frame(store: str | Path, sql: str, params: list | dict | None = None) -> pl.DataFrame:
    con = open_read_only(store)
    try:
        cursor = con.execute(sql, params or [])
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    return pl.DataFrame(rows, schema=columns, orient="row")


def sparsity_runs(store: str | Path, numerics: int | None, dataset: str = "fashion_mnist") -> pl.DataFrame:
    """Finished sparse-prior runs on `dataset` computed under numerics version `numerics` (None: every
    version): alpha, beta, gamma, seed, normalised Hoyer, numerics version and job id."""
    return _frame(store, """
        SELECT job_id, numerics, alpha, beta, gamma, seed, hoyer, hoyer_raw, elbo, recon_mse
        FROM runs
        WHERE status = 'done' AND prior = 'sparse' AND dataset = $dataset AND hoyer IS NOT NULL
            AND ($numerics IS NULL OR numerics = $numerics)
        ORDER BY numerics, beta, gamma, alpha, seed""", {"dataset": dataset, "numerics": numerics})


def class_magnitudes(store: str | Path, job_id: str) -> pl.DataFrame:
    """Per-class, per-dimension mean |posterior mean| of one job (test set)."""
    return _frame(store, """
        SELECT class_index, class_name, dim, mean_abs_loc FROM latent_stats
        WHERE job_id = ? AND split = 'test' ORDER BY class_index, dim""", [job_id])
