"""`harness bench`: run the performance suites, store them, compare with earlier runs on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import DEFAULT_STORE, StoreOption, console, fail
from harness.db import benchmarks
from harness.db.store import Store, StoreUnavailable

app = typer.Typer(help="Performance regression checks: run, store and compare benchmarks.", no_args_is_help=True)


@app.command("run")
def run_command(store: StoreOption = DEFAULT_STORE,
                suite: Annotated[list[str] | None, typer.Option(
                    "--suite", help="A pytest-benchmark file or folder (repeatable; default: tests/benchmarks).")]
                = None,
                keyword: Annotated[str | None, typer.Option("-k", help="Only the cases matching this pytest "
                                                            "expression.", show_default=False)] = None) -> None:
    """Run the benchmark suites and store every case with its statistics, commit, numerics version and
    machine fingerprint.

    Example: harness bench run --store runs/harness.duckdb
    """
    from harness.bench import default_suites, run_suites

    try:
        suites = suite or default_suites()
    except RuntimeError as exc:
        fail(str(exc), 2)
    try:
        result = run_suites(suites, ["-k", keyword] if keyword else None)
    except RuntimeError as exc:
        fail(str(exc).splitlines()[0] + " (run the suite with pytest to see why)")
    try:
        benchmarks.add(Store(store), result.rows)
    except StoreUnavailable as exc:
        fail(str(exc))
    table = Table(title=f"benchmark run {result.run_id}", title_justify="left")
    for column in ("case", "median", "mean", "stddev", "rounds", "measured beside it"):
        table.add_column(column, justify="left" if column in ("case", "measured beside it") else "right")
    for row in result.rows:
        table.add_row(escape(row["case_name"]), _ms(row["median"]), _ms(row["mean"]), _ms(row["stddev"]),
                      str(row["rounds"]), escape(_extra(row.get("extra"))))
    console.print(table)


def _extra(extra: str | None) -> str:
    """A case's extra info (its ratios, for the CPU suite) as `key value` pairs."""
    values = json.loads(extra or "{}")
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(values.items()))


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:,.2f} ms"


@app.command()
def compare(store: StoreOption = DEFAULT_STORE,
            against: Annotated[str, typer.Option("--against", help="'latest' (the run before the newest) or a "
                                                 "commit (prefix).")] = "latest") -> None:
    """Compare the newest benchmark run on this machine with an earlier one on the same machine
    fingerprint; exit 1 when a case is slower than noise allows (its median above the earlier mean plus
    max(3 standard deviations, 10%)).

    Example: harness bench compare --against latest --store runs/harness.duckdb
    """
    from harness.bench import baseline, fingerprint, machine
    from harness.bench import compare as compare_runs

    if not Path(store).exists():
        fail(f"no store at {store}; run `harness bench run` first")
    stamp = fingerprint(machine())
    the_store = Store(store)
    try:
        runs = benchmarks.runs(the_store, stamp)
        if not runs:
            fail(f"no benchmark run on this machine (fingerprint {stamp}) in {store}; run `harness bench run`")
        newest, base = runs[-1], baseline(runs, against)
        if base is None:
            fail(f"--against {against}: no earlier run on this machine (fingerprint {stamp}) to compare with", 2)
        verdicts = compare_runs(benchmarks.rows(the_store, base[0]), benchmarks.rows(the_store, newest[0]))
    except StoreUnavailable as exc:
        fail(str(exc))
    table = Table(title=f"{newest[0]} ({(newest[1] or '?')[:7]}) against {base[0]} ({(base[1] or '?')[:7]})",
                  title_justify="left")
    for column in ("case", "before (mean ± sd)", "now (median)", "ratio", "verdict"):
        table.add_column(column, justify="left" if column in ("case", "verdict") else "right")
    for v in verdicts:
        table.add_row(escape(v.case), f"{_ms(v.before)} ± {_ms(v.spread)}", _ms(v.after), f"{v.ratio:.2f}",
                      "[red]SLOWER[/]" if v.slower else "ok")
    console.print(table)
    slower = [v.case for v in verdicts if v.slower]
    if slower:
        console.print(f"{len(slower)} of {len(verdicts)} cases are slower than noise allows: {', '.join(slower)}",
                      markup=False, highlight=False)
        raise typer.Exit(1)
    console.print(f"{len(verdicts)} cases within noise")
