"""`harness report`: every figure and table, rebuilt from the store alone."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import (
    DEFAULT_STORE,
    DataRootOption,
    StoreOption,
    console,
    data_root_str,
    fail,
    output_dir,
    plain,
)
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
    table = Table(title="claims of the paper and the report (docs/claims.md): each tested difference with its "
                  "95% interval", title_justify="left")
    for column in ("claim", "sweep (data, budget)", "verdict", "evidence and tested differences", "n"):
        table.add_column(column, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "blue"}
    for r in results:
        verdict = f"[{colour.get(r.verdict, 'yellow')}]{r.verdict}[/]" + (f"\n({r.note})" if r.note else "")
        evidence = "\n".join([escape(r.evidence.split("; ")[0]), *(f"- {escape(t)}" for t in r.tests)]) \
            if r.tests else escape(r.evidence)
        table.add_row(f"{escape(r.claim_id)}: {escape(r.text)}",
                      escape(r.sweep) + (f"\n[dim]{escape(r.data)}[/]" if r.data else ""), verdict, evidence,
                      f"{r.n or '-'}" + (f"\n{r.method}" if r.method else ""))
    return table


@app.command()
def figures(store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"),
            only: Annotated[list[str] | None, typer.Option("--only", help="Build just this figure (repeatable).")]
            = None,
            sweep: SweepOption = None, numerics: NumericsOption = NUMERICS_VERSION,
            all_versions: AllVersionsOption = False,
            single_seed: Annotated[bool, typer.Option("--single-seed", help="Claims on the page decide settings "
                                                      "with one seed on their means (see `report claims`).")]
            = False,
            job_images: Annotated[bool, typer.Option("--job-images/--no-job-images", help="Draw the `report job` "
                                                     "images of one job per setting for the page.")] = True,
            data_root: DataRootOption = None) -> None:
    """Write every figure the store has data for (PNG, PDF and the CSV of the plotted numbers), a results
    table per sweep, the `report job` images of one job per setting, check the claims (docs/claims.md),
    and write OUT/index.html, which shows them all, a section per sweep, with their provenance.

    Each figure is drawn per sweep (files FIGURE-SWEEP.png) from the jobs of the current numerics
    version (see harness/numerics.py), unless --numerics or --all-versions says otherwise. Job images
    already in OUT are kept: a job id fixes its model.

    Example: harness report figures --store runs/harness.duckdb --out reports
    """
    output_dir(out)
    from harness.db import queries
    from harness.report.claims import check_claims
    from harness.report.figures import FIGURES, build_all
    from harness.report.html import Sweep, Table, write_index
    from harness.report.results import INTERVAL_NOTE, draw_job_images, representatives, results_table

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
    descriptions = queries.sweep_descriptions(store)
    sections = []
    for name in sweeps:
        results = results_table(Path(store), name, version)
        table = None
        if results is not None:
            csv = out / f"results-{name}.csv"
            results.frame.write_csv(csv)
            table = Table(results.columns, results.rows, INTERVAL_NOTE, csv)
        jobs = []
        if job_images:
            for row in representatives(Path(store), name, version):
                jobs.append(draw_job_images(Path(store), row, out, data_root_str(data_root)))
            missing = [j for j in jobs if j.skipped]
            if missing:
                console.print(f"job images of {name}: {len(missing)} of {len(jobs)} jobs incomplete "
                              f"({missing[0].skipped})", highlight=False)
        sections.append(Sweep(name, descriptions.get(name, ""), table, [j for j in jobs if j.paths or j.skipped]))
    claims = check_claims(Path(store), version, sweeps, single_seed)
    page = write_index(out, drawn, claims, title="harness report", store=str(store),
                       generated=datetime.now().strftime("%Y-%m-%d %H:%M"), sweeps=sections)
    console.print(f"{len(claims)} claims checked; open {page}")


CLAIMS_HELP = "\n\n".join([
    "Check each qualitative claim of the paper and the report against the store, with seed noise.",
    "A claim tests one or more differences between settings (say, hoyer at gamma 0.8 minus hoyer at gamma "
    "0, at each alpha), each a difference of means over seeds with its 95% interval (paired t by seed "
    "where the settings share their seeds, else Welch t; harness.stats) and its n. The verdict:",
    "PASS: every interval lies wholly on the side the claim asserts. FAIL: one lies wholly on the other "
    "side. INCONCLUSIVE: none fails and some straddle. NOT ENOUGH DATA: a setting is missing, or has "
    'fewer than 2 seeds; --single-seed decides those on the means alone and labels the verdict "1 seed: '
    'no noise estimate".',
    "Exit codes: 0 no claim fails (PASS, INCONCLUSIVE, NOT ENOUGH DATA), 1 some claim fails, 2 bad input.",
    "Example: harness report claims --store runs/harness.duckdb",
])


@app.command(help=CLAIMS_HELP)
def claims(store: StoreOption = DEFAULT_STORE, sweep: SweepOption = None, numerics: NumericsOption = NUMERICS_VERSION,
           all_versions: AllVersionsOption = False,
           single_seed: Annotated[bool, typer.Option("--single-seed", help="Decide settings with one seed on their "
                                                     "means (no interval), labelled as such, instead of NOT "
                                                     "ENOUGH DATA.")] = False) -> None:
    from harness.report.claims import FAIL, VERDICTS, check_claims

    sweeps = _open(store, sweep)
    results = check_claims(Path(store), None if all_versions else numerics, sweeps, single_seed)
    console.print(_claims_table(results))
    for r in results:
        if r.job_ids:
            console.print(f"{r.claim_id} ({r.sweep}): jobs {', '.join(r.job_ids)}; {r.seeds}", highlight=False)
    counts = {v: sum(1 for r in results if r.verdict == v) for v in VERDICTS}
    console.print(", ".join(f"{n} {v.lower()}" for v, n in counts.items()), highlight=False)
    if counts[FAIL]:
        raise typer.Exit(1)


@app.command()
def job(job_id: Annotated[str, typer.Argument(help="A job id (see `harness db query \"SELECT job_id FROM runs\"`).")],
        store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"), data_root: DataRootOption = None) -> None:
    """Reconstructions, prior samples and latent traversals of one finished job, from its checkpoint.

    Example: harness report job baae0d293fb7e8f3 --store runs/harness.duckdb --out reports
    """
    output_dir(out)
    from harness.report.job import prior_samples, reconstructions, traversals

    the_store = Store(store)
    if not re.fullmatch(r"[0-9a-f]{16}", job_id) or not the_store.job_dir(job_id).is_dir():  # checked before use
        fail(f"no job '{job_id}' in {store} (a job id is 16 hex digits; its folder holds the checkpoint)", 2)
    root = data_root_str(data_root)
    from harness.evaluation import CheckpointDamaged, read_spec, verify_checkpoint

    try:
        verify_checkpoint(the_store, job_id)
        read_spec(the_store, job_id)
    except CheckpointDamaged as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: no such file (the job's checkpoint is incomplete)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{the_store.job_dir(job_id) / 'spec.json'} cannot be read ({type(exc).__name__}: {exc})")
    for draw in (reconstructions, prior_samples, traversals):
        try:
            paths = draw(the_store, job_id, out, data_root=root)
        except ValueError as exc:  # e.g. traversals of vector data
            console.print(f"{draw.__name__}: skipped: {plain(exc)}", highlight=False)
            continue
        except FileNotFoundError as exc:
            fail(str(exc))
        console.print(f"{draw.__name__}: {paths[0]}", highlight=False)


@app.command("timings")
def timings_command(store: StoreOption = DEFAULT_STORE, out: OutOption = Path("reports"),
                    sweep: SweepOption = None) -> None:
    """Seconds per model-epoch and samples per second by device, pack size, CPU workers x threads and commit,
    from the epochs
    and jobs of real sweeps (a figure per sweep, and the table).

    Example: harness report timings --store runs/harness.duckdb
    """
    output_dir(out)
    from harness.report.figures import build_all
    from harness.report.timings import timings

    sweeps = _open(store, sweep)
    built = build_all(Path(store), out, ["timings"], None, sweeps)
    table = Table(title="training speed (medians)", title_justify="left")
    for column in ("sweep", "device", "pack", "workers x threads", "commit", "jobs", "s / model-epoch", "samples / s"):
        table.add_column(column, justify="left" if column in ("sweep", "device", "commit") else "right")
    for t in timings(store, sweeps):
        table.add_row(escape(t.sweep), t.device, str(t.pack_size), f"{t.workers} x {t.threads}" if t.threads else "",
                      t.commit or "?", str(t.jobs),
                      f"{t.seconds_per_model_epoch:.2f}", f"{t.samples_per_second:,.0f}")
    console.print(table)
    for figure in (f for f in built.values() if f is not None):
        console.print(f"{figure.name}-{figure.sweep}: {figure.paths[0]}", highlight=False)


COMPARE_HELP = "\n\n".join([
    "Did a change move the results? Compare two selections of finished jobs, setting by setting.",
    "BASE and NEW each select results: KEY=VALUE terms joined by commas, with keys store=PATH (a DuckDB "
    "store; default --store), file=PATH (a .csv, .parquet or .json written by `harness report export`), "
    "numerics=N (default: the current version), commit=PREFIX and sweep=NAME; a bare path is a store "
    "(.duckdb) or a results file.",
    "Settings (specs up to the seed) are matched across the sides. For each matched setting and each "
    "value (every metric, the test ELBO and its terms, seconds per model-epoch) the table gives NEW - "
    "BASE with its 95% interval (paired t by seed where both sides have the same seeds, else Welch t; "
    "harness.stats) and its n. A value has moved when the interval excludes 0 and the difference exceeds "
    "its tolerance (default: 0.01 for scores in [0, 1], 1% for values in nats, 2% for recon_mse, 5% for "
    "reg, 10% for seconds per model-epoch, 1% otherwise; --tolerance NAME=VALUE or NAME=PERCENT% "
    "overrides). A side with one seed gives no interval, and such a value never counts as moved. Where "
    "the two sides' runs differ by noise alone, about 5% of the intervals exclude 0 by chance: the "
    "tolerance keeps such values from counting when the noise is smaller than it; --level 0.99 makes "
    "chance moves rarer.",
    "Exit codes: 0 nothing moved, 1 something moved, 2 bad input (an unknown selector key, an empty side, "
    "no common setting).",
    "Example: harness report compare numerics=2 numerics=3 --store runs/harness.duckdb",
    "Two stores, one sweep each: harness report compare store=runs/old.duckdb,sweep=quickstart "
    "store=runs/new.duckdb,sweep=quickstart",
    "The canary against its baseline (make canary): harness report compare sweeps/canary-baseline.csv "
    "runs/canary/harness.duckdb --skip seconds_per_model_epoch",
])


@app.command(help=COMPARE_HELP)
def compare(base: Annotated[str, typer.Argument(help="The results to compare against (a selector).")],
            new: Annotated[str, typer.Argument(help="The results that may have moved (a selector).")],
            store: StoreOption = DEFAULT_STORE,
            tolerance: Annotated[list[str] | None, typer.Option(
                "--tolerance", help="NAME=VALUE (absolute) or NAME=PERCENT% (of the base mean), repeatable.")]
            = None,
            metric: Annotated[list[str] | None, typer.Option("--metric", help="Only this value (repeatable).")]
            = None,
            skip: Annotated[list[str] | None, typer.Option("--skip", help="Leave this value out (repeatable), "
                                                           "e.g. seconds_per_model_epoch across machines.")] = None,
            out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the comparison as .csv, .parquet "
                                                     "or .json.", show_default=False)] = None,
            figure: Annotated[Path | None, typer.Option("--figure", help="Draw it (.png or .pdf): one row per "
                                                        "setting and value.", show_default=False)] = None,
            changed: Annotated[bool, typer.Option("--changed", help="Print only the values whose interval "
                                                  "excludes 0.")] = False,
            level: Annotated[float, typer.Option("--level", min=0.5, max=0.9999, help="Confidence level of the "
                                                 "intervals (0.99: fewer chance moves, less power).")] = 0.95) -> None:
    from harness.report import compare as comparing
    from harness.report.compare import MOVED, NO_CHANGE, CompareError

    try:
        if out is not None and out.suffix not in (".csv", ".parquet", ".json"):
            raise CompareError(f"--out {out}: the suffix says the format: .csv, .parquet or .json")
        if figure is not None and figure.suffix not in (".png", ".pdf"):
            raise CompareError(f"--figure {figure}: a .png or .pdf file")
        overrides = dict(comparing.parse_tolerance(t) for t in tolerance or [])
        base_sel, new_sel = comparing.parse_selector(base, store), comparing.parse_selector(new, store)
        result = comparing.compare(base_sel, new_sel, comparing.load_side(base_sel), comparing.load_side(new_sel),
                                   overrides, metric, skip, level)
    except CompareError as exc:
        fail(str(exc), 2)
    rows = result.rows.filter(result.rows["status"] != NO_CHANGE) if changed else result.rows
    table = Table(title=f"compare {base} -> {new}: NEW - BASE, {level:.0%} interval", title_justify="left")
    for column in ("setting", "value", "base", "new", f"difference [{level:.0%} interval]", "n", "tolerance",
                   "status"):
        table.add_column(column, justify="right" if column in ("base", "new", "n") else "left", overflow="fold")
    colour = {MOVED: "red", NO_CHANGE: "green"}
    for r in rows.iter_rows(named=True):
        interval = f" [{r['low']:+.4g}, {r['high']:+.4g}]" if r["low"] is not None else ""
        table.add_row(escape(r["setting"]), r["metric"], f"{r['base_mean']:.4g}", f"{r['new_mean']:.4g}",
                      f"{r['difference']:+.4g}{interval} ({r['method']})", f"{r['n_base']}/{r['n_new']}",
                      r["tolerance"], f"[{colour.get(r['status'], 'yellow')}]{r['status']}[/]")
    console.print(table)
    for side, labels in (("BASE", result.only_base), ("NEW", result.only_new)):
        if labels:
            console.print(f"{len(labels)} setting(s) only in {side}, not compared: {'; '.join(labels)}",
                          highlight=False)
    counts = result.rows.group_by("status").len()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.iter_rows()))
    settings = result.rows["setting"].n_unique()
    console.print(f"{result.rows.height} values over {settings} setting(s): {summary}", highlight=False)
    try:
        if out is not None:
            comparing.write_frame(result.rows, out)
            console.print(f"written {out}", highlight=False)
        if figure is not None:
            comparing.draw(result, figure)
            console.print(f"drawn {figure}", highlight=False)
    except OSError as exc:
        fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    if not result.moved.is_empty():
        raise typer.Exit(1)


@app.command()
def export(out: Annotated[Path, typer.Option("--out", "-o", help="The file to write: .csv, .parquet or .json.")],
           store: StoreOption = DEFAULT_STORE, sweep: Annotated[str | None, typer.Option(
               "--sweep", "-s", help="Only this sweep's jobs (default: every finished job).")] = None,
           numerics: NumericsOption = NUMERICS_VERSION) -> None:
    """Write one row per finished job (id, sweep, numerics, commit, device, seed, spec and every test value)
    to a CSV, Parquet or JSON file: a baseline for `harness report compare`, or a table for other tools.

    Example: harness report export --sweep canary --store runs/canary/harness.duckdb --out sweeps/canary-baseline.csv
    """
    from harness.report.compare import CompareError, results, write_frame

    _open(store, [sweep] if sweep else None)
    frame = results(Path(store), sweep, numerics)
    if frame.is_empty():
        fail(f"no finished job in {store} at numerics {numerics}" + (f" in sweep {sweep}" if sweep else ""), 2)
    try:
        write_frame(frame, out)
    except CompareError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"--out {out}: cannot write there ({exc.strerror or exc})")
    console.print(f"{frame.height} jobs -> {out}", highlight=False)
