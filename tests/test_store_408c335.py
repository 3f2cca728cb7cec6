"""A store written by commit 408c335, the last release before the store was split by concern
(tests/fixtures/store_408c335.tar.gz, made from tests/fixtures/store_408c335.toml: one sweep run locally, one
on submitit's local cluster, then `harness eval` of hoyer, class_magnitudes and tsne). It must open as it is
and `db rebuild` must give back the very tables that release wrote: results, evaluations and submissions."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db.store import open_read_only, run_query

FIXTURES = Path(__file__).resolve().parent / "fixtures"
JOBS = {"store408": {"6bf2c61311a63823", "fd8d150b2fe085d0"},
        "store408_slurm": {"c1e6f4393943e230", "e42ac1515eed2ed0"}}
WHEN = {"sweeps": {"updated"}, "schema_migrations": {"applied"}}  # when a row was written, not what it says


@pytest.fixture
def store_408(tmp_path) -> Path:
    with tarfile.open(FIXTURES / "store_408c335.tar.gz") as archive:
        archive.extractall(tmp_path / "store", filter="data")
    return tmp_path / "store" / "harness.duckdb"


def _cell(value):
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def tables(path: Path) -> dict[str, list[tuple]]:
    """Every base table's rows, sorted, without the columns that only say when a row was written."""
    con = open_read_only(path)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
        found = {}
        for name in names:
            cursor = con.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cursor.description]
            keep = [i for i, c in enumerate(columns) if c not in WHEN.get(name, set())]
            found[name] = sorted((tuple(_cell(row[i]) for i in keep) for row in cursor.fetchall()), key=repr)
        return found
    finally:
        con.close()


def test_the_old_store_opens_as_it_is(store_408):
    status = CliRunner().invoke(app, ["sweep", "status", "--store", str(store_408)])
    assert status.exit_code == 0, status.output + status.stderr
    for name in JOBS:
        row = next(line for line in status.output.splitlines() if f" {name} " in line)
        # jobs, done, failed, diverged, running, pending, stale: written at numerics 3, so stale since version 4
        assert [cell.strip() for cell in row.split("│")[3:10]] == ["2", "0", "0", "0", "0", "0", "2"]
    _, rows = run_query(store_408, "SELECT sweep, job_id, status FROM runs ORDER BY ALL")
    assert {(s, j) for s, j, _ in rows} == {(s, j) for s, ids in JOBS.items() for j in ids}
    _, rows = run_query(store_408, "SELECT metric, count(*) FROM points GROUP BY ALL")
    assert rows == [("tsne", 400)]


def test_the_old_store_rebuilds_to_the_same_tables(store_408):
    before = tables(store_408)
    assert {len(before[t]) > 0 for t in ("jobs", "epochs", "metrics", "dim_stats", "points", "submissions")} == {True}
    result = CliRunner().invoke(app, ["db", "rebuild", "--store", str(store_408)])
    assert result.exit_code == 0 and "2 sweeps, 4 jobs" in result.output, result.output + result.stderr
    assert result.stderr == ""  # nothing set aside
    after = tables(store_408)
    assert after.keys() == before.keys()
    for name in before:
        if name == "schema_migrations":  # the rebuilt store is at the newest schema: 408c335's steps, then ours
            assert set(before[name]) <= set(after[name])
            continue
        if name == "schema_views":  # a digest of today's view definitions, which follow the metric registry
            continue
        # migration 9 adds the checkpoints' sha256, migration 10 the plugin identities (of jobs and of metrics),
        # none of which 408c335 recorded: a last column of NULLs
        if name in ("artifacts", "jobs", "metrics"):
            assert [row[:-1] for row in after[name]] == before[name] and {row[-1] for row in after[name]} == {None}
            continue
        assert after[name] == before[name], name


def test_rebuild_sets_aside_damaged_side_files_and_leaves_nothing_behind(store_408):
    """A truncated sweep manifest or evaluation shard is quarantined like a damaged result shard; the rest
    rebuilds, and no temporary file is left beside the store."""
    root = store_408.parent
    manifest = root / "sweeps" / "store408.json"
    manifest.write_text(manifest.read_text()[:50])
    evaluation = next(root.glob("jobs/*/eval/hoyer.json"))
    evaluation.write_text(evaluation.read_text()[:30])
    result = CliRunner().invoke(app, ["db", "rebuild", "--store", str(store_408)])
    assert result.exit_code == 0 and "1 sweeps, 4 jobs" in result.output, result.output + result.stderr
    assert result.stderr.count("set aside") == 2 and "Traceback" not in result.output
    assert not manifest.exists() and not evaluation.exists()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
