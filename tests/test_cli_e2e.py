"""A tiny sweep through the real CLI into a temporary store: run, skip on rerun, query, figures, rebuild."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db.store import run_query

pytestmark = pytest.mark.usefixtures("fashion_mnist_present")


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny sweep (4 jobs: alpha 0/1000 x gamma 0/0.8, one seed; 10 training images per class, 2
    epochs of 2 steps) run once for the module."""
    from tests.conftest import write_tiny_sweep

    folder = tmp_path_factory.mktemp("e2e")
    sweep = write_tiny_sweep(folder, subset=10)
    store = folder / "store" / "harness.duckdb"
    result = invoke("sweep", "run", str(sweep), "--store", str(store))
    return sweep, store, result


def test_run_stores_every_job_with_its_metrics(finished):
    sweep, store, result = finished
    assert "4 to run" in result.output and "4 done, 0 failed" in result.output
    columns, rows = run_query(store, "SELECT status, hoyer, elbo, recon_mse, epochs FROM runs ORDER BY job_id")
    assert len(rows) == 4 and all(r[0] == "done" for r in rows)
    assert all(0 <= r[1] <= 1 and r[2] < 0 and 0 <= r[3] <= 1 for r in rows)
    _, epochs = run_query(store, "SELECT count(*), count(DISTINCT job_id) FROM epochs")
    assert epochs[0] == (8, 4)
    _, stats = run_query(store, "SELECT count(DISTINCT class_index), count(DISTINCT dim) FROM latent_stats")
    assert stats[0] == (10, 6)
    _, artifacts = run_query(store, "SELECT kind, count(*) FROM artifacts GROUP BY kind ORDER BY kind")
    assert artifacts == [("spec", 4), ("weights", 4)]


def test_rerun_skips_finished_jobs(finished):
    sweep, store, _ = finished
    result = invoke("sweep", "run", str(sweep), "--store", str(store))
    assert "4 already in the store, 0 to run" in result.output


def test_plan_and_status_show_counts(finished):
    sweep, store, _ = finished
    assert "4 done, 0 failed, 0 diverged, 0 pending" in invoke("sweep", "plan", str(sweep), "--store",
                                                               str(store)).output
    status = invoke("sweep", "status", "--store", str(store)).output
    assert "tiny" in status and "│    4 │    4 │" in status


def test_figures_are_built_from_the_store_with_their_numbers(finished, tmp_path):
    _, store, _ = finished
    out = tmp_path / "reports"
    output = invoke("report", "figures", "--store", str(store), "--out", str(out)).output
    assert "claims checked" in output and (out / "index.html").exists()
    for name in ("sparsity_vs_alpha-tiny", "class_magnitudes-tiny"):
        for suffix in ("png", "pdf", "csv"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    rows = list(csv.DictReader((out / "sparsity_vs_alpha-tiny.csv").open()))
    assert len(rows) == 4  # (beta, gamma, alpha) points, one seed each
    assert all(r["n"] == "1" and r["prior_label"] in ("Gaussian (gamma 0)", "spike-and-slab, gamma 0.8") for r in rows)
    _, expected = run_query(store, "SELECT alpha, gamma, hoyer, job_id FROM runs")
    by_setting = {(a, g): (h, j) for a, g, h, j in expected}
    for row in rows:
        hoyer, job_id = by_setting[(float(row["alpha"]), float(row["gamma"]))]
        assert float(row["hoyer_mean"]) == pytest.approx(hoyer, rel=1e-9)
        assert row["job_ids"] == job_id
    bars = list(csv.DictReader((out / "class_magnitudes-tiny.csv").open()))
    assert {r["key"] for r in bars} == {"Trouser", "Dress", "Shirt"} and len(bars) == 2 * 3 * 6
    # the sparse, largest-alpha run next to the same setting at alpha 0
    assert {(float(r["alpha"]), float(r["gamma"])) for r in bars} == {(1000.0, 0.8), (0.0, 0.8)}


def test_query_formats(finished, tmp_path):
    _, store, _ = finished
    sql = "SELECT alpha, gamma, hoyer FROM runs ORDER BY alpha, gamma"
    table = invoke("db", "query", sql, "--store", str(store)).output
    assert "hoyer" in table and "4 rows" in table
    printed = invoke("db", "query", sql, "--store", str(store), "--format", "csv").output
    assert printed.splitlines()[0] == "alpha,gamma,hoyer" and len(printed.splitlines()) == 5
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / f"q.{fmt}"
        invoke("db", "query", sql, "--store", str(store), "--format", fmt, "--out", str(out))
        assert out.stat().st_size > 0
    assert len(json.loads((tmp_path / "q.json").read_text())) == 4
    import polars as pl

    assert pl.read_parquet(tmp_path / "q.parquet").shape == (4, 3)
    with_param = invoke("db", "query", "SELECT count(*) AS n FROM runs WHERE alpha = ?", "--param", "1000",
                        "--store", str(store), "--format", "csv").output
    assert with_param.splitlines() == ["n", "2"]


@pytest.mark.parametrize("sql", [
    "INSERT INTO jobs (job_id) VALUES ('x')",
    "DELETE FROM jobs",
    "DROP TABLE jobs",
    "CREATE TABLE t AS SELECT 1",
    "COPY jobs TO '/tmp/harness_leak.csv'",
    "UPDATE jobs SET status = 'failed'",
    "SELECT 1; DELETE FROM jobs",
])
def test_query_refuses_writes(finished, sql):
    _, store, _ = finished
    result = CliRunner().invoke(app, ["db", "query", sql, "--store", str(store)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    _, count = run_query(store, "SELECT count(*) FROM jobs WHERE status = 'done'")
    assert count == [(4,)]


def test_rebuild_recreates_the_same_database(finished):
    _, store, _ = finished
    sql = "SELECT job_id, status, hoyer, elbo FROM runs ORDER BY job_id"
    before = run_query(store, sql)
    epochs = run_query(store, "SELECT * FROM epochs ORDER BY job_id, epoch")
    result = invoke("db", "rebuild", "--store", str(store))
    assert "1 sweeps, 4 jobs" in result.output
    assert run_query(store, sql) == before
    assert run_query(store, "SELECT * FROM epochs ORDER BY job_id, epoch") == epochs


def test_missing_store_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["db", "query", "SELECT 1", "--store", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1 and "no store at" in result.stderr
