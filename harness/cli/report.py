"""`harness report`: every figure and table, rebuilt from the store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.common import DEFAULT_STORE, StoreOption, console, fail
from harness.db.store import Store, StoreLocked
from harness.numerics import NUMERICS_VERSION

app = typer.Typer(help="Rebuild figures and tables from the store.", no_args_is_help=True)


@app.command()
def figures(store: StoreOption = DEFAULT_STORE,
            out: Annotated[Path, typer.Option("--out", "-o", help="Folder for PNG, PDF and CSV files.")] = Path(
                "reports"),
            only: Annotated[list[str] | None, typer.Option("--only", help="Build just this figure (repeatable).")]
            = None,
            numerics: Annotated[int, typer.Option("--numerics", min=1, max=NUMERICS_VERSION,
                                                  help="Use the jobs computed under this numerics version.")]
            = NUMERICS_VERSION,
            all_versions: Annotated[bool, typer.Option("--all-versions", help="Use the jobs of every numerics "
                                                       "version, each plotted apart.")] = False) -> None:
    """Write every figure the store has data for (PNG, PDF and the CSV of the plotted numbers).

    Figures use the jobs of the current numerics version only (see harness/numerics.py), unless
    --numerics or --all-versions says otherwise.

    Example: harness report figures --store runs/harness.duckdb --out reports
    """
    from harness.report.figures import FIGURES, build_all

    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    unknown = [name for name in only or [] if name not in FIGURES]
    if unknown:
        fail(f"unknown figure '{unknown[0]}'; known: {', '.join(FIGURES)}", 2)
    try:
        Store(store).ensure_current()
    except StoreLocked as exc:
        fail(str(exc))
    built = build_all(Path(store), out, only, None if all_versions else numerics)
    for name, figure in built.items():
        if figure is None:
            console.print(f"{name}: no data in the store yet"
                          + ("" if all_versions else f" (numerics {numerics}; --all-versions for older results)"))
        else:
            console.print(f"{name}: {', '.join(str(p) for p in figure.paths)} ({figure.jobs} jobs)")
