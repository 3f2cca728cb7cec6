"""`harness report`: every figure and table, rebuilt from the store alone."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from harness.cli.common import DEFAULT_STORE, DataRootOption, StoreOption, console, data_root_str, fail
from harness.db.store import Store, StoreUnavailable
from harness.numerics import NUMERICS_VERSION

app = typer.Typer(help="Rebuild figures, claims and the HTML report from the store.", no_args_is_help=True)

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG, PDF and CSV files and index.html.")]
SweepOption = Annotated[list[str] | None, typer.Option(
    "--sweep", "-s", help="Only this sweep (repeatable; default: every sweep in the store, each apart).")]
NumericsOption = Annotated[int, typer.Option("--numerics", min=1, max=NUMERICS_VERSION,
                                             help="Use the jobs computed under this numerics version.")]
AllVersionsOption = Annotated[bool, typer.Option("--all-versions", help="Use the jobs of every numerics version, "
                                                 "each drawn apart.")]


def _open(store: Path, sweeps: list[str] | None) -> list[str]:
    """The sweeps to report on; a missing store or an unknown sweep ends here with one line."""
    from harness.db import queries

    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    try:
        Store(store).ensure_current()
        known = queries.sweeps(store)
    except StoreUnavailable as exc:
        fail(str(exc))
    unknown = [s for s in sweeps or [] if s not in known]
    if unknown:
        fail(f"--sweep: no sweep '{unknown[0]}' in {store}; known: {', '.join(known) or 'none'}", 2)
    return list(sweeps) if sweeps else known


def _claims_table(results) -> Table:
    table = Table(title="claims (SPEC section 6)", title_justify="left")
    for column in ("claim", "sweep", "verdict", "evidence", "jobs"):
        table.add_column(column, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red"}
    for r in results:
        table.add_row(f"{r.claim_id}: {r.text}", r.sweep, f"[{colour.get(r.verdict, 'yellow')}]{r.verdict}[/]",
                      r.evidence, str(len(r.job_ids)))
    return table


@app.command()
def figures(store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"),
            only: Annotated[list[str] | None, typer.Option("--only", help="Build just this figure (repeatable).")]
            = None,
            sweep: SweepOption = None, numerics: NumericsOption = NUMERICS_VERSION,
            all_versions: AllVersionsOption = False) -> None:
    """Write every figure the store has data for (PNG, PDF and the CSV of the plotted numbers), check the
    claims, and write OUT/index.html, which shows them all with their provenance.

    Each figure is drawn per sweep (files FIGURE-SWEEP.png) from the jobs of the current numerics
    version (see harness/numerics.py), unless --numerics or --all-versions says otherwise.

    Example: harness report figures --store runs/harness.duckdb --out reports
    """
    from harness.report.claims import check_claims
    from harness.report.figures import FIGURES, build_all
    from harness.report.html import write_index

    unknown = [name for name in only or [] if name not in FIGURES]
    if unknown:
        fail(f"--only: unknown figure '{unknown[0]}'; known: {', '.join(FIGURES)}", 2)
    sweeps = _open(store, sweep)
    version = None if all_versions else numerics
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".harness-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        fail(f"--out {out}: cannot write there ({exc.strerror or exc})")
    built = build_all(Path(store), out, only, version, sweeps)
    drawn = [f for f in built.values() if f is not None]
    for figure in drawn:
        console.print(f"{figure.name}-{figure.sweep}: {figure.paths[0]} ({figure.jobs} jobs, numerics "
                      f"{figure.numerics})", highlight=False)
    if not drawn:
        console.print("no figure has data in the store yet" + ("" if all_versions else
                      f" (numerics {numerics}; --all-versions for older results)"))
    claims = check_claims(Path(store), version, sweeps)
    page = write_index(out, drawn, claims, title="harness report", store=str(store),
                       generated=datetime.now().strftime("%Y-%m-%d %H:%M"))
    console.print(f"{len(claims)} claims checked; open {page}")


@app.command()
def claims(store: StoreOption = DEFAULT_STORE, sweep: SweepOption = None, numerics: NumericsOption = NUMERICS_VERSION,
           all_versions: AllVersionsOption = False) -> None:
    """Check each qualitative claim of the paper and the report against the store: PASS, FAIL or NOT ENOUGH
    DATA, with the numbers behind the verdict. Exits with 1 when any claim fails.

    Example: harness report claims --store runs/harness.duckdb
    """
    from harness.report.claims import FAIL, check_claims

    sweeps = _open(store, sweep)
    results = check_claims(Path(store), None if all_versions else numerics, sweeps)
    console.print(_claims_table(results))
    for r in results:
        if r.job_ids:
            console.print(f"{r.claim_id} ({r.sweep}): jobs {', '.join(r.job_ids)}; {r.seeds}", highlight=False)
    counts = {v: sum(1 for r in results if r.verdict == v) for v in ("PASS", "FAIL", "NOT ENOUGH DATA")}
    console.print(f"{counts['PASS']} pass, {counts['FAIL']} fail, {counts['NOT ENOUGH DATA']} not enough data")
    if counts[FAIL]:
        raise typer.Exit(1)


@app.command()
def job(job_id: Annotated[str, typer.Argument(help="A job id (see `harness db query \"SELECT job_id FROM runs\"`).")],
        store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"), data_root: DataRootOption = None) -> None:
    """Reconstructions, prior samples and latent traversals of one finished job, from its checkpoint.

    Example: harness report job baae0d293fb7e8f3 --store runs/harness.duckdb --out reports
    """
    from harness.report.job import prior_samples, reconstructions, traversals

    the_store = Store(store)
    if not the_store.job_dir(job_id).is_dir() or not re.fullmatch(r"[0-9a-f]{16}", job_id):
        fail(f"no job '{job_id}' in {store} (a job id is 16 hex digits; its folder holds the checkpoint)", 2)
    root = data_root_str(data_root)
    for draw in (reconstructions, prior_samples, traversals):
        try:
            paths = draw(the_store, job_id, out, data_root=root)
        except ValueError as exc:  # e.g. traversals of vector data
            console.print(f"{draw.__name__}: skipped: {exc}", highlight=False)
            continue
        except FileNotFoundError as exc:
            fail(str(exc))
        console.print(f"{draw.__name__}: {paths[0]}", highlight=False)


@app.command("timings")
def timings_command(store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"),
                    sweep: SweepOption = None) -> None:
    """Seconds per model-epoch and samples per second by device, pack size and commit, from the epochs
    and jobs of real sweeps (a figure per sweep, and the table).

    Example: harness report timings --store runs/harness.duckdb
    """
    from harness.report.figures import build_all
    from harness.report.timings import timings

    sweeps = _open(store, sweep)
    built = build_all(Path(store), out, ["timings"], None, sweeps)
    table = Table(title="training speed (medians)", title_justify="left")
    for column in ("sweep", "device", "pack", "commit", "jobs", "s / model-epoch", "samples / s"):
        table.add_column(column, justify="left" if column in ("sweep", "device", "commit") else "right")
    for t in timings(store, sweeps):
        table.add_row(t.sweep, t.device, str(t.pack_size), t.commit or "?", str(t.jobs),
                      f"{t.seconds_per_model_epoch:.2f}", f"{t.samples_per_second:,.0f}")
    console.print(table)
    for figure in (f for f in built.values() if f is not None):
        console.print(f"{figure.name}-{figure.sweep}: {figure.paths[0]}", highlight=False)
