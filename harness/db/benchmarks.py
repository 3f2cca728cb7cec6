"""Benchmark runs (`harness bench`): every case of a pytest-benchmark run with its statistics, commit,
numerics version and machine fingerprint; runs are compared only on the same fingerprint."""

from __future__ import annotations

from typing import Any

from harness.db.store import Store, insert_rows

COLUMNS = ("run_id", "suite", "case_name", "params", "mean", "stddev", "median", "min", "max", "rounds",
           "git_commit", "numerics", "fingerprint", "machine", "extra")


def add(store: Store, rows: list[dict[str, Any]]) -> None:
    with store.connect() as con:
        insert_rows(con, "benchmarks", COLUMNS, [[row.get(c) for c in COLUMNS] for row in rows])


def runs(store: Store, fingerprint: str) -> list[tuple[str, str]]:
    """(run_id, commit) of the benchmark runs on this machine fingerprint, oldest first."""
    with store.reader() as con:
        return con.execute("""SELECT run_id, any_value(git_commit) FROM benchmarks WHERE fingerprint = ?
                              GROUP BY run_id ORDER BY min(created), run_id""", [fingerprint]).fetchall()


def rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every case of one run, as dicts of the table's columns."""
    with store.reader() as con:
        cursor = con.execute("SELECT * FROM benchmarks WHERE run_id = ? ORDER BY suite, case_name", [run_id])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
