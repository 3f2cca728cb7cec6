"""The `harness` command line: one Typer sub-app per noun, thin over the library."""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer

from harness.cli import bench, data, db, report, sweep
from harness.cli.common import fail
from harness.cli.eval import evaluate
from harness.cli.plugins import plugins
from harness.db import store
from harness.disk import full_disk, is_full

app = typer.Typer(
    name="harness",
    help="Run, store, query and plot structured-prior VAE experiments (Mathieu et al., ICML 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sweep.app, name="sweep")
app.add_typer(db.app, name="db")
app.add_typer(report.app, name="report")
app.add_typer(data.app, name="data")
app.add_typer(bench.app, name="bench")
app.command("eval")(evaluate)
app.command("plugins")(plugins)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from harness.numerics import NUMERICS_VERSION

        typer.echo(f"harness {version('harness')} (numerics version {NUMERICS_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                     help="Print the version and exit.")] = False) -> None:
    """Run, store, query and plot structured-prior VAE experiments (Mathieu et al., ICML 2019)."""


def main() -> None:
    """The `harness` command. A full disk met anywhere is one line (what failed, and that space must be freed),
    never a traceback: the store's writes are atomic, so what was stored before is kept."""
    try:
        app()
    except SystemExit as stop:
        if store.INTERRUPTED_STATEMENTS:  # DuckDB's threads may still be finishing their piece of work
            _leave_now(stop.code)
        raise
    except Exception as exc:
        if not is_full(exc):
            raise
        try:
            fail(f"{full_disk(exc)}; free some space and run the same command again")
        except typer.Exit as stop:
            raise SystemExit(stop.exit_code) from None


def _leave_now(code: int | str | None) -> NoReturn:
    """Exit without closing anything: after an interrupted query, closing the read-only database waits
    for DuckDB's threads to finish the piece of work they hold (minutes for a large join, seen in CI).
    Nothing is written in such a command, so nothing is lost."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
