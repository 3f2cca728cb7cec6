"""What every command group shares: the consoles, the store option, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# outside a terminal (a pipe, a log file) nothing may be cut: wide tables, whole ids and numbers
console = Console(soft_wrap=True) if Console().is_terminal else Console(soft_wrap=True, width=250)
errors = Console(stderr=True)

DEFAULT_STORE = Path("runs/harness.duckdb")

StoreOption = Annotated[Path, typer.Option("--store", envvar="HARNESS_STORE", readable=False,  # the store says why
                                           help="DuckDB store; shards and checkpoints live beside it.")]
DataRootOption = Annotated[Path | None, typer.Option(
    "--data-root", envvar="HARNESS_DATA", help="Directory searched first for datasets (derived files go to "
    "DIR/cache, else ~/.cache/harness/cache).", show_default=False)]


def plain(text: object) -> str:
    """User text (a description, a sweep name, an id) made safe to print: control characters written as
    escapes (\\x1b, \\x00), so nothing reaches the terminal raw, and rich's markup escaped, so that brackets
    print as typed."""
    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit with `code` (2: bad input, 1: anything else)."""
    errors.print(f"[bold red]error:[/] {plain(' '.join(str(message).split()))}", highlight=False,
                 soft_wrap=True)
    raise typer.Exit(code)


def output_dir(out: Path, option: str = "--out") -> Path:
    """`out` as a folder that exists and can be written to, or one line naming it and exit 2."""
    try:
        if out.exists() and not out.is_dir():
            fail(f"{option} {out} is a file, not a folder", 2)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".harness-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        fail(f"{option} {out} cannot be written to ({exc.strerror or exc})", 2)
    return out


def data_root_str(root: Path | None) -> str | None:
    if root is None:
        return None
    if root.exists() and not root.is_dir():
        fail(f"--data-root {root} is not a directory", 2)
    return str(root)


def load_sweep_file(path: Path):
    """The sweep in `path` (harness.spec.Sweep), or what is wrong with it as one line and exit 2."""
    from harness.schema import SpecError
    from harness.spec import load_sweep

    try:
        return load_sweep(path)
    except SpecError as error:
        fail(error.render(), 2)


def report_quarantined(set_aside) -> None:
    """One line per shard that could not be ingested and was set aside (its job counts as not done): each
    with its shard, target and reason (harness.db.ingest.SetAside, harness.driver.Quarantined)."""
    for item in set_aside:
        then = ("`harness sweep run` of its file registers the sweep again" if Path(item.shard).parent.name == "sweeps"
                else "its job will run again")
        errors.print(f"[yellow]set aside[/] {plain(item.shard)}: {plain(item.reason)} (moved to "
                     f"{plain(item.target)}; {then})", highlight=False, soft_wrap=True)
