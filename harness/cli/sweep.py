"""`harness sweep`: plan, run and follow sweeps."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness.cli.common import (
    DEFAULT_STORE,
    DataRootOption,
    StoreOption,
    console,
    data_root_str,
    fail,
    report_quarantined,
)
from harness.db.store import Store, StoreUnavailable, StoreWriteError, SweepConflict
from harness.executors.worker import RESUME_EVERY
from harness.numerics import NUMERICS_VERSION
from harness.schema import SpecError
from harness.spec import Sweep, job_summary, load_sweep

app = typer.Typer(help="Plan, run and follow sweeps of training jobs.", no_args_is_help=True)

SweepFile = Annotated[Path, typer.Argument(help="A sweep file (TOML), e.g. sweeps/sparsity.toml.")]
PackOption = Annotated[int | None, typer.Option("--pack-size", min=1,
                                                help="Most jobs trained as one grouped network "
                                                     "(default: 1 on the CPU, 8 on a GPU).")]
Executor = Literal["local", "slurm"]
class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DeviceOption = Annotated[Device, typer.Option("--device", help="auto (every visible GPU, else the CPU), cuda or cpu.")]


def _load(path: Path) -> Sweep:
    try:
        return load_sweep(path)
    except SpecError as error:
        fail(error.render(), 2)


def _short(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command()
def plan(sweep_file: SweepFile, store: StoreOption = DEFAULT_STORE, pack_size: PackOption = None,
         device: DeviceOption = Device.auto) -> None:
    """Show the jobs of a sweep (done / failed / running / pending) and how they will be packed.

    The same rule as `sweep run` decides what is left (harness.executors.base.what_is_left); plan changes
    nothing in the store.

    Example: harness sweep plan sweeps/sparsity.toml
    """
    from harness.executors.base import what_is_left
    from harness.executors.local import default_pack_size, visible_devices

    sweep = _load(sweep_file)
    the_store = Store(store)
    try:
        left = what_is_left(the_store, sweep, write=False)
    except StoreUnavailable as exc:
        fail(str(exc))
    try:
        devices = visible_devices(device.value)
    except RuntimeError as exc:
        fail(str(exc), 2)
    size = pack_size or default_pack_size(devices)
    packs = left.packs(size)
    pack_of = {job.job_id: i + 1 for i, pack in enumerate(packs) for job in pack.jobs}
    table = Table(title=f"sweep {sweep.name}: {sweep.description}", title_justify="left")
    columns = ["job_id", "dataset", "prior", "gamma", "alpha", "beta", "seed", "epochs", "status", "pack"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("gamma", "alpha", "beta", "seed", "epochs", "pack")
                         else "left")
    for job in sweep.jobs:
        s = job_summary(job)
        status = left.status(job.job_id)
        if status == "pending" and job.job_id in left.stale:
            status = "stale"
        table.add_row(job.job_id, s["dataset"], s["prior"], _short(s["gamma"]), _short(s["alpha"]),
                      _short(s["beta"]), str(s["seed"]), str(s["epochs"]), status,
                      str(pack_of.get(job.job_id, "")))
    console.print(table)
    counts = left.counts(list(sweep.jobs))
    console.print(f"{len(sweep.jobs)} jobs: {counts['done']} done, {counts['failed']} failed, "
                  f"{counts['diverged']} diverged, " + (f"{counts['running']} running, " if counts["running"] else "")
                  + f"{counts['pending']} pending -> {len(packs)} packs of at most {size} on {', '.join(devices)}")
    tasks = sorted({str(task) for task in left.in_cluster.values()})
    if tasks:
        console.print(f"{len(tasks)} Slurm tasks of an earlier driver are queued or running: {', '.join(tasks)}; "
                      "`harness sweep run` re-attaches to them")
    stale = [j for j in left.todo if j.job_id in left.stale]
    if stale:
        console.print(f"{len(stale)} of the pending jobs are stale: the store has their results from an older "
                      f"numerics version (kept; `harness sweep run` trains numerics {NUMERICS_VERSION} beside them)")


@app.command()
def run(sweep_file: SweepFile, store: StoreOption = DEFAULT_STORE, pack_size: PackOption = None,
        device: DeviceOption = Device.auto, retry_failed: Annotated[bool, typer.Option(
            "--retry-failed", help="Run failed and diverged jobs again.")] = False,
        data_root: DataRootOption = None,
        executor: Annotated[Executor, typer.Option("--executor", help="local: this machine's GPUs or CPU; "
                                                   "slurm: one job-array task per pack (submitit).")]
        = "local",
        slurm: Annotated[list[str] | None, typer.Option(
            "--slurm", help="A submitit parameter as KEY=VALUE (repeatable), e.g. slurm_partition=gpu, "
                            "timeout_min=240, gpus_per_node=1, slurm_max_num_timeout=10 (requeues after a "
                            "time limit).")] = None,
        slurm_cluster: Annotated[str | None, typer.Option(
            "--slurm-cluster", help="submitit's cluster: slurm (the default where Slurm is installed) or "
                                    "local (the same path on this machine, to try a sweep).")] = None,
        save_every: Annotated[int, typer.Option(
            "--save-every", min=1, help="Epochs between a pack's resumable states: a killed, preempted or "
                                        "timed-out pack goes on from the last one.")] = RESUME_EVERY,
        compile: Annotated[bool, typer.Option(
            "--compile", help="torch.compile each pack's forward pass and objective (pays on GPUs; the first "
                              "epoch includes the compilation; a failed compilation falls back to eager).")]
        = False,
        cudnn_benchmark: Annotated[bool, typer.Option(
            "--cudnn-benchmark", help="Let cuDNN autotune its convolutions and use nondeterministic ones: "
                                      "faster on some GPUs, but the same job twice may differ in the last "
                                      "digits. Off by default.")] = False) -> None:
    """Run every job of a sweep that the store does not have yet; finished jobs are skipped.

    Example: harness sweep run sweeps/quickstart.toml --store runs/harness.duckdb

    On a cluster: harness sweep run sweeps/sparsity.toml --executor slurm --slurm slurm_partition=gpu
    --slurm timeout_min=600 --slurm gpus_per_node=1

    Ctrl-C stops cleanly; run the same command again to continue where it stopped. With --executor slurm
    the submitted tasks keep running without the driver: run the same command again to re-attach to them.
    """
    from harness.executors.base import executors, what_is_left

    sweep = _load(sweep_file)
    root = data_root_str(data_root)
    the_store = Store(store)
    display = _Display()
    if executor != "slurm" and (slurm or slurm_cluster):
        fail("--slurm and --slurm-cluster need --executor slurm", 2)
    from harness.train import RunOptions

    run_options = RunOptions(compile=compile, deterministic=not cudnn_benchmark)
    options = ({"parameters": slurm or [], "cluster": slurm_cluster} if executor == "slurm"
               else {"device": device.value})
    options.update(run_options=run_options, save_every=save_every)
    try:
        runner = executors()[executor](store=the_store, sweep=sweep, data_root=root, pack_size=pack_size,
                                       on_progress=display.on_event, **options)
    except (ValueError, RuntimeError, NameError, TypeError) as exc:  # a bad parameter, cluster or device
        fail(f"--{'slurm' if executor == 'slurm' else 'device'}: {str(exc).splitlines()[0]}", 2)
    ids = [j.job_id for j in sweep.jobs]
    try:
        added = the_store.register_sweep(sweep.name, sweep.path, sweep.description, Path(sweep.path).read_text(), ids)
        left = what_is_left(the_store, sweep, retry_failed, write=True)
    except SweepConflict as exc:
        fail(str(exc), 2)
    except (StoreUnavailable, StoreWriteError) as exc:
        fail(str(exc))
    if added:
        console.print(f"sweep {sweep.name} now lists {added} jobs that it did not list before (its file changed)")
    report_quarantined(the_store)
    the_store.quarantined.clear()
    for task in left.failed_tasks:
        console.print(f"slurm task {task} ended while no driver watched, without results: its jobs are marked failed")
    the_store.clear_stale_claims(ids)  # a killed driver's claims on jobs that are done since
    mine, others = the_store.claim([j.job_id for j in left.todo])
    try:
        _run_claimed(the_store, sweep, left, set(mine), others, runner, display)
    finally:
        the_store.release(mine)


class _Display:
    """rich progress bars for a run: one for the sweep, one per job in flight; a log line per finished job
    where the output is not a terminal."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.running: dict[str, int] = {}

    def on_event(self, event) -> None:
        progress, running = self.progress, self.running
        if event.kind == "start":
            running[event.job_id] = progress.add_task(f"  {event.job_id}", total=event.epochs or None,
                                                      info=event.status or "starting")
        elif event.kind == "epoch" and event.job_id in running:
            progress.update(running[event.job_id], completed=event.epoch, info=f"loss {event.loss:,.1f}")
        elif event.kind == "end" and event.job_id in running:
            progress.remove_task(running.pop(event.job_id))
            if not console.is_terminal:  # a log file gets one line per finished job
                console.print(f"{time.strftime('%H:%M:%S')} {event.job_id} {event.status or 'ended'}"
                              + (f" ({event.epoch} of {event.epochs} epochs)" if event.epochs else ""),
                              highlight=False)


def _run_claimed(the_store: Store, sweep: Sweep, left, mine: set[str], others, runner, display: _Display) -> None:
    """The body of `sweep run` once this driver holds its jobs' claims."""
    from harness.executors.base import drive

    ids = [j.job_id for j in sweep.jobs]
    todo = [j for j in left.todo if j.job_id in mine]
    attached = left.in_cluster
    # jobs other drivers hold: those found claimed while looking, and those claimed since (a race)
    others = {**left.running, **{job_id: f"pid {o.get('pid')} on {o.get('host')}" for job_id, o in others.items()}}
    skipped = len(sweep.jobs) - len(todo) - len(others) - len(attached)
    packs = runner.plan(todo)
    for note in runner.notes:
        console.print(note, highlight=False)
    console.print(f"sweep {sweep.name}: {len(sweep.jobs)} jobs, {skipped} already in the store, {len(todo)} to run "
                  f"in {len(packs)} packs on {runner.where}")
    if others:
        owners = sorted(set(others.values()))
        console.print(f"{len(others)} jobs are being run by another driver ({', '.join(owners)}); this run leaves "
                      "them to it (run the same command again later to pick up what it leaves)")
    if attached:
        tasks = sorted({task.task_id for task in attached.values()})
        if hasattr(runner, "attach"):
            runner.attach(set(tasks))
            console.print(f"{len(attached)} jobs are in {len(tasks)} Slurm tasks an earlier driver submitted "
                          f"({', '.join(tasks)}): re-attached, not submitted again")
        else:
            console.print(f"{len(attached)} jobs are in {len(tasks)} Slurm tasks an earlier driver submitted "
                          f"({', '.join(tasks)}); this run leaves them to Slurm (`harness sweep status` follows them)")
    stale = [j for j in todo if j.job_id in left.stale]
    if stale:
        console.print(f"{len(stale)} of them have results from an older numerics version, kept apart in the store "
                      f"(see `harness sweep status`); these runs are numerics {NUMERICS_VERSION}")
    if not packs and not runner.in_flight:
        _failed_waiting(the_store, ids)
        return
    started = time.time()
    watched = [*todo, *(j for j in sweep.jobs if j.job_id in attached)]
    overall = display.progress.add_task(f"sweep {sweep.name}", total=len(watched), info="")
    try:
        with display.progress:
            for ended in drive(runner, packs):
                display.progress.advance(overall, len(ended.job_ids))
    except KeyboardInterrupt:
        final = the_store.statuses(ids)
        done = sum(1 for i in ids if final.get(i) == "done")
        queued = len(the_store.open_submissions(sweep.name)) if hasattr(runner, "attach") else 0
        console.print(f"interrupted: {done} of {len(ids)} jobs are done and stored; run the same command to "
                      "continue" + (f" (its {queued} Slurm tasks go on without it: the same command re-attaches "
                                    "to them, `harness sweep cancel` stops them)" if queued else ""))
        raise typer.Exit(130) from None
    report_quarantined(the_store)
    if the_store.deferred:
        console.print(f"{len(the_store.deferred)} finished jobs are in their shards but not yet in the database, "
                      "which another process held; the next `harness sweep run` (or `harness db rebuild`) adds them")
    final = {**the_store.shard_statuses(the_store.deferred), **the_store.statuses([j.job_id for j in watched])}
    counts = {k: sum(1 for j in watched if final.get(j.job_id) == k) for k in ("done", "failed", "diverged")}
    submitted = getattr(runner, "submitted", None)
    console.print(f"finished in {time.time() - started:.0f} s: {counts['done']} done, {counts['failed']} failed, "
                  f"{counts['diverged']} diverged" + (f" ({submitted} tasks submitted by this run)"
                                                      if submitted is not None else ""))
    for job_id, error in the_store.errors([j.job_id for j in watched]):
        console.print(f"  {job_id}: {error}", highlight=False)
    _failed_waiting(the_store, ids)


def _failed_waiting(store: Store, ids: list[str]) -> None:
    """Exit 1 while any job of the sweep is failed, saying how many wait for --retry-failed: a sweep with
    failed jobs is not finished, however this run went."""
    failed = [job_id for job_id, status in store.statuses(ids).items() if status == "failed"]
    if failed:
        console.print(f"{len(failed)} failed jobs of this sweep wait for `--retry-failed`")
        raise typer.Exit(1)


@app.command()
def status(store: StoreOption = DEFAULT_STORE) -> None:
    """Every sweep in the store with its counts of done, failed, diverged, running and pending jobs.

    done, failed and diverged count results of the current numerics version; stale counts the sweep's
    results from an older one, which stay queryable (column `numerics` of `jobs` and `runs`). Sweeps with
    Slurm tasks are brought up to date first: Slurm is asked which tasks still queue or run (those count as
    running), and the results of tasks that ended since are ingested.

    Example: harness sweep status --store runs/harness.duckdb
    """
    from harness.executors.slurm import reconcile

    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    the_store = Store(store)
    busy: set[str] = set()
    notes = []
    try:
        for name in sorted({s["sweep"] for s in the_store.open_submissions()}):
            sweep = _stored_sweep(the_store, name)
            if sweep is None:
                continue
            live, dead, ingested = reconcile(the_store, sweep, write=True)
            busy.update(live)
            tasks = sorted({task.task_id for task in live.values()})
            if tasks or ingested or dead:
                notes.append(f"{name}: Slurm has {len(tasks)} of its tasks queued or running"
                             + (f" ({', '.join(tasks)})" if tasks else "")
                             + (f"; {ingested} results of tasks that ended were ingested now" if ingested else "")
                             + (f"; tasks {', '.join(dead)} ended without results (jobs marked failed)"
                                if dead else ""))
        rows = the_store.sweep_counts(busy)
    except StoreUnavailable as exc:
        fail(str(exc))
    table = Table(title=f"sweeps in {store}", title_justify="left")
    for column in ("sweep", "description", "jobs", "done", "failed", "diverged", "running", "pending", "stale"):
        table.add_column(column, justify="left" if column in ("sweep", "description") else "right")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


def _stored_sweep(store: Store, name: str) -> Sweep | None:
    """The sweep as the store registered it (its TOML text), or None where that no longer loads."""
    import tempfile

    with store.reader() as con:
        row = con.execute("SELECT path, toml FROM sweeps WHERE name = ?", [name]).fetchone()
    if row is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / Path(row[0]).name
        copy.write_text(row[1])
        try:
            return load_sweep(copy)
        except SpecError:
            return None


@app.command()
def cancel(sweep_name: Annotated[str, typer.Argument(
        help="A sweep's name (as `harness sweep status` lists it) or its file.")],
           store: StoreOption = DEFAULT_STORE) -> None:
    """Cancel a sweep's Slurm tasks that are still queued or running (scancel).

    Their jobs get no result: the next `harness sweep run` runs them again, from their last resumable state.

    Example: harness sweep cancel sparsity --store runs/harness.duckdb
    """
    from harness.executors.slurm import SlurmUnavailable
    from harness.executors.slurm import cancel as cancel_tasks

    name = _load(Path(sweep_name)).name if sweep_name.endswith(".toml") else sweep_name
    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    the_store = Store(store)
    try:
        if not any(s["sweep"] == name for s in the_store.open_submissions()):
            console.print(f"sweep {name} has no Slurm tasks queued or running in {store}")
            return
        cancelled = cancel_tasks(the_store, name)
    except SlurmUnavailable as exc:
        fail(f"cannot cancel: {exc}")
    except StoreUnavailable as exc:
        fail(str(exc))
    console.print(f"cancelled {len(cancelled)} Slurm tasks of sweep {name}: {', '.join(cancelled) or 'none'}")
