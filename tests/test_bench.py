"""`harness bench`: runs are stored with their machine fingerprint, and compare catches a planted
slowdown while passing a run within noise."""

from __future__ import annotations

from typer.testing import CliRunner

from harness.bench import Verdict, compare
from harness.cli import app
from harness.db import benchmarks
from harness.db.store import Store

SUITE = """
import os
import time


def test_sleepy(benchmark):
    benchmark.pedantic(time.sleep, args=(float(os.environ["BENCH_DELAY"]),), rounds=5, iterations=1)
"""


def test_compare_flags_only_what_noise_cannot_explain():
    before = [{"suite": "s", "case_name": "a", "mean": 1.0, "stddev": 0.01},
              {"suite": "s", "case_name": "b", "mean": 1.0, "stddev": 0.2}]
    after = [{"suite": "s", "case_name": "a", "median": 1.2}, {"suite": "s", "case_name": "b", "median": 1.5},
             {"suite": "s", "case_name": "new", "median": 9.0}]
    assert compare(before, after) == [Verdict("a", 1.0, 0.01, 1.2, True), Verdict("b", 1.0, 0.2, 1.5, False)]


def test_bench_run_then_compare_catches_a_planted_slowdown(tmp_path, monkeypatch):
    suite = tmp_path / "bench_sleepy.py"
    suite.write_text(SUITE)
    store = str(tmp_path / "h.duckdb")
    runner = CliRunner()

    def run(delay: str):
        monkeypatch.setenv("BENCH_DELAY", delay)
        result = runner.invoke(app, ["bench", "run", "--suite", str(suite), "--store", store])
        assert result.exit_code == 0, result.output + result.stderr
        return result

    assert "test_sleepy" in run("0.01").output
    assert runner.invoke(app, ["bench", "compare", "--store", store]).exit_code == 2  # nothing to compare with
    run("0.1")  # ten times slower
    slower = runner.invoke(app, ["bench", "compare", "--store", store])
    assert slower.exit_code == 1 and "SLOWER" in slower.output and "test_sleepy" in slower.output
    run("0.1")
    same = runner.invoke(app, ["bench", "compare", "--store", store])
    assert same.exit_code == 0 and "1 cases within noise" in same.output
    from harness.bench import fingerprint, machine

    runs = benchmarks.runs(Store(store), fingerprint(machine()))
    assert len(runs) == 3
    row = benchmarks.rows(Store(store), runs[0][0])[0]
    assert row["numerics"] >= 2 and row["rounds"] == 5 and '"cpus"' in row["machine"]


def test_a_copy_without_the_suites_is_told_to_name_one(tmp_path, monkeypatch):
    """An installed copy has no tests/: `bench run` says to give --suite instead of failing inside pytest."""
    from harness import bench

    monkeypatch.setattr(bench, "SUITES", tmp_path / "no-tests")
    result = CliRunner().invoke(app, ["bench", "run", "--store", str(tmp_path / "h.duckdb")])
    assert result.exit_code == 2 and "give --suite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "h.duckdb").exists()
