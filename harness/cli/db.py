"""`harness db`: query the store read-only, rebuild it from the shards."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.table import Table

from harness.cli.common import DEFAULT_STORE, StoreOption, console, fail, report_quarantined
from harness.db.ingest import rebuild
from harness.db.store import QueryInterrupted, ReadOnlyError, Store, StoreUnavailable, run_query

app = typer.Typer(help="Query the store with SQL (read-only) and rebuild it from the job shards.",
                  no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def query(sql: Annotated[str, typer.Argument(help="One SELECT statement; use ? for parameters.")],
          store: StoreOption = DEFAULT_STORE,
          param: Annotated[list[str] | None, typer.Option("--param", "-p",
                                                          help="A value for each ? in the SQL, in order.")] = None,
          fmt: Annotated[Format | None, typer.Option("--format", "-f", help="How to write the result (default: "
                                                      "from --out's extension, else a table).", show_default=False)]
          = None,
          out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of the "
                                                                       "terminal.")] = None,
          timeout: Annotated[float | None, typer.Option("--timeout", min=0.001, help="Stop the query after this "
                                                        "many seconds.", show_default=False)] = None) -> None:
    """Run one read-only SQL statement against the store; writes are refused.

    Example: harness db query "SELECT alpha, beta, gamma, avg(hoyer) AS hoyer FROM runs GROUP BY ALL ORDER BY ALL"

    Tables: runs (one row per job with its test metrics), jobs, epochs, metrics, latent_stats,
    artifacts, sweeps, sweep_jobs, schema_migrations. Column `numerics` of jobs and runs says which
    computation produced a job's numbers; filter on it to compare like with like.
    """
    import polars as pl

    if fmt is None:
        suffix = out.suffix.lower().lstrip(".") if out is not None else ""
        if out is not None and suffix not in ("csv", "json", "parquet"):
            fail(f"--out {out}: cannot tell the format from '.{suffix}'; give --format csv, json or parquet", 2)
        fmt = Format(suffix) if out is not None else Format.table
    try:
        Store(store).ensure_current()  # a store an older release wrote gains today's columns first
        columns, rows = run_query(store, sql, list(param or []), timeout)
    except QueryInterrupted as exc:
        fail(str(exc), 130 if "interrupted" in str(exc) else 1)
    except (ReadOnlyError, FileNotFoundError, StoreUnavailable) as exc:
        fail(str(exc), 2 if isinstance(exc, ReadOnlyError) else 1)
    except duckdb.Error as exc:
        lines = str(exc).splitlines()
        hints = [line.strip() for line in lines[1:] if line.strip().startswith(("Did you mean", "Candidate"))]
        fail(f"SQL error: {' '.join([lines[0], *hints])}", 2)
    if fmt is Format.table:
        if out is not None:
            fail("--format table prints to the terminal; use csv, json or parquet with --out", 2)
        table = Table(show_lines=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_cell(v) for v in row])
        console.print(table)
        console.print(f"{len(rows)} rows")
        return
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    if fmt is Format.parquet and out is None:
        fail("--format parquet needs --out FILE", 2)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            {"csv": frame.write_csv, "json": frame.write_json, "parquet": frame.write_parquet}[fmt.value](out)
        except OSError as exc:
            fail(f"--out {out}: cannot write ({exc.strerror or exc})")
        console.print(f"wrote {len(rows)} rows to {out}")
    else:
        sys.stdout.write(frame.write_csv() if fmt is Format.csv else frame.write_json() + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@app.command("rebuild")
def rebuild_command(store: StoreOption = DEFAULT_STORE) -> None:
    """Recreate the database from the job shards and sweep manifests beside it.

    Example: harness db rebuild --store runs/harness.duckdb
    """
    if not (Path(store).parent / "jobs").exists() and not (Path(store).parent / "sweeps").exists():
        fail(f"no shards next to {store} (expected {Path(store).parent / 'jobs'})")
    try:
        rebuilt = rebuild(Store(store))
    except StoreUnavailable as exc:
        fail(str(exc))
    console.print(f"rebuilt {store}: {rebuilt.sweeps} sweeps, {rebuilt.jobs} jobs")
    report_quarantined(rebuilt.quarantined)
