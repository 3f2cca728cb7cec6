"""Results from different numerics versions never mix: a store that the first release wrote
(tests/fixtures/store_v1.tar.gz, numerics 1, made by commit 989b77e from tests/fixtures/legacy.toml)
shows its jobs as stale, stays queryable and rebuildable, and `sweep run` trains the current version
beside it."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db.store import run_query
from harness.numerics import CHANGELOG, NUMERICS_VERSION
from harness.spec import load_sweep

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY_IDS = {"4852e572ce84d277", "aaec73d7437dd92f"}  # the ids release 0.1.0 gave legacy.toml's jobs


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.output


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of the store the first release wrote: database, shards and sweep manifest."""
    with tarfile.open(FIXTURES / "store_v1.tar.gz") as archive:
        archive.extractall(tmp_path / "store", filter="data")
    return tmp_path / "store" / "harness.duckdb"


def test_every_version_has_a_changelog_line():
    assert sorted(CHANGELOG) == list(range(1, NUMERICS_VERSION + 1))
    assert all(len(line) > 40 for line in CHANGELOG.values())


def test_the_legacy_sweep_had_the_ids_of_the_old_store():
    jobs = load_sweep(FIXTURES / "legacy.toml").jobs
    assert {j.id_at(1) for j in jobs} == LEGACY_IDS
    assert not {j.job_id for j in jobs} & LEGACY_IDS


def test_an_old_store_shows_its_jobs_as_stale_and_stays_queryable(old_store):
    status = invoke("sweep", "status", "--store", str(old_store))
    row = next(line for line in status.splitlines() if "legacy" in line)
    assert [cell.strip() for cell in row.split("│")[3:10]] == ["2", "0", "0", "0", "0", "0", "2"]  # jobs .. stale
    plan = invoke("sweep", "plan", str(FIXTURES / "legacy.toml"), "--store", str(old_store))
    assert plan.count("stale") >= 3 and "2 of the pending jobs are stale" in plan
    assert "0 done" in plan
    _, rows = run_query(old_store, "SELECT job_id, numerics, status FROM runs ORDER BY job_id")
    assert {r[0] for r in rows} == LEGACY_IDS and all(r[1:] == (1, "done") for r in rows)


def test_an_old_store_rebuilds_from_its_shards(old_store):
    assert "1 sweeps, 2 jobs" in invoke("db", "rebuild", "--store", str(old_store))
    _, rows = run_query(old_store, "SELECT numerics, count(*) FROM jobs GROUP BY ALL")
    assert rows == [(1, 2)]


@pytest.mark.usefixtures("fashion_mnist_present")
def test_run_trains_the_current_version_beside_the_old_one(old_store, tmp_path):
    sweep = FIXTURES / "legacy.toml"
    output = invoke("sweep", "run", str(sweep), "--store", str(old_store))
    assert "0 already in the store, 2 to run" in output and "2 of them have results from older code" in output
    _, rows = run_query(old_store, "SELECT numerics, count(*) FILTER (WHERE status = 'done') FROM runs "
                                   "GROUP BY ALL ORDER BY ALL")
    assert rows == [(1, 2), (NUMERICS_VERSION, 2)]
    assert "2 done, 0 failed, 0 diverged, 0 pending" in invoke("sweep", "plan", str(sweep), "--store",
                                                               str(old_store))
    row = next(line for line in invoke("sweep", "status", "--store", str(old_store)).splitlines()
               if "legacy" in line)
    assert [cell.strip() for cell in row.split("│")[3:10]] == ["2", "2", "0", "0", "0", "0", "2"]

    # reports take the current version unless told otherwise
    out = tmp_path / "reports"
    invoke("report", "figures", "--store", str(old_store), "--out", str(out), "--only", "sparsity_vs_alpha")
    with open(out / "sparsity_vs_alpha-legacy.csv") as handle:
        assert {r["numerics"] for r in csv.DictReader(handle)} == {str(NUMERICS_VERSION)}
    invoke("report", "figures", "--store", str(old_store), "--out", str(out), "--only", "sparsity_vs_alpha",
           "--all-versions")
    with open(out / "sparsity_vs_alpha-legacy.csv") as handle:
        assert {r["numerics"] for r in csv.DictReader(handle)} == {"1", str(NUMERICS_VERSION)}
    invoke("report", "figures", "--store", str(old_store), "--out", str(out), "--only", "sparsity_vs_alpha",
           "--numerics", "1")
    with open(out / "sparsity_vs_alpha-legacy.csv") as handle:
        assert {r["numerics"] for r in csv.DictReader(handle)} == {"1"}

    # the shards carry the version, so a rebuild keeps old and new apart
    assert "1 sweeps, 4 jobs" in invoke("db", "rebuild", "--store", str(old_store))
    _, rows = run_query(old_store, "SELECT numerics, count(*) FROM jobs GROUP BY ALL ORDER BY ALL")
    assert rows == [(1, 2), (NUMERICS_VERSION, 2)]
