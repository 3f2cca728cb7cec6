"""`harness sweep`: plan, run and follow sweeps. Thin over harness.driver: options in, events out."""

from __future__ import annotations

import time
from contextlib import closing
from enum import StrEnum
from pathlib import Path
from typing import Annotated

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
    load_sweep_file,
    plain,
    report_quarantined,
)
from harness.db import submissions as submissions_db
from harness.db import sweeps as sweeps_db
from harness.db.store import Store, StoreUnavailable, StoreWriteError
from harness.db.sweeps import SweepConflict
from harness.disk import DiskFull, is_full
from harness.driver import ExecutorRefused, cancel_sweep, plan_sweep, run_sweep, sweep_status
from harness.executors.base import TasksUnavailable
from harness.executors.local import DEVICES
from harness.executors.registry import EXECUTORS
from harness.executors.worker import RESUME_EVERY
from harness.numerics import NUMERICS_VERSION
from harness.spec import job_summary
from harness.train import RunOptions

app = typer.Typer(help="Plan, run and follow sweeps of training jobs.", no_args_is_help=True)

SweepFile = Annotated[Path, typer.Argument(help="A sweep file (TOML), e.g. sweeps/sparsity.toml.")]
PackOption = Annotated[int | None, typer.Option("--pack-size", min=1,
                                                help="Most jobs trained as one grouped network "
                                                     "(default: 1 on the CPU, 8 on a GPU).")]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=1, help="CPU worker processes training at once (default: by each pack's size, "
                             "harness.workers; tiny models get one per core).")]
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", min=1, help="torch threads of each CPU worker (default: by each pack's size, 1 for tiny "
                             "models). The thread count can change a job's last digits; each job records it.")]
# the choices come from the registries
Executor = StrEnum("Executor", {name: name for name in EXECUTORS})
Device = StrEnum("Device", {name: name for name in DEVICES})
DeviceOption = Annotated[Device, typer.Option("--device", help="auto (every visible GPU, else the CPU), cuda or cpu.")]


def _short(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command()
def plan(sweep_file: SweepFile, store: StoreOption = DEFAULT_STORE, pack_size: PackOption = None,
         device: DeviceOption = Device.auto, workers: WorkersOption = None, threads: ThreadsOption = None) -> None:
    """Show the jobs of a sweep (done / failed / running / pending) and how they will be packed.

    The same rule as `sweep run` decides what is left (harness.driver.what_is_left); plan changes
    nothing in the store.

    Example: harness sweep plan sweeps/sparsity.toml
    """
    sweep = load_sweep_file(sweep_file)
    try:
        planned = plan_sweep(Store(store), sweep, pack_size, device.value, workers, threads)
    except StoreUnavailable as exc:
        fail(str(exc))
    except RuntimeError as exc:  # a device that is not there
        fail(str(exc), 2)
    left = planned.left
    pack_of = {job.job_id: i + 1 for i, pack in enumerate(planned.packs) for job in pack.jobs}
    table = Table(title=f"sweep {plain(sweep.name)}: {plain(sweep.description)}", title_justify="left")
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
                  + f"{counts['pending']} pending -> {len(planned.packs)} packs of at most {planned.size} on "
                  f"{', '.join(planned.devices)}")
    for note in planned.notes:
        console.print(note, highlight=False)
    tasks = sorted({str(task) for task in left.in_tasks.values()})
    if tasks:
        console.print(f"{len(tasks)} Slurm tasks of an earlier driver are queued or running: {', '.join(tasks)}; "
                      "`harness sweep run` re-attaches to them")
    stale = [j for j in left.todo if j.job_id in left.stale]
    if stale:
        console.print(f"{len(stale)} of the pending jobs are stale: the store has their results from an older "
                      f"numerics version or plugin code (kept; `harness sweep run` trains numerics "
                      f"{NUMERICS_VERSION} beside them)")


@app.command()
def run(sweep_file: SweepFile, store: StoreOption = DEFAULT_STORE, pack_size: PackOption = None,
        device: DeviceOption = Device.auto, retry_failed: Annotated[bool, typer.Option(
            "--retry-failed", help="Run failed and diverged jobs again.")] = False,
        data_root: DataRootOption = None, workers: WorkersOption = None, threads: ThreadsOption = None,
        executor: Annotated[Executor, typer.Option("--executor", help="local: this machine's GPUs or CPU; "
                                                   "slurm: one job-array task per pack (submitit).")]
        = Executor.local,
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
    sweep = load_sweep_file(sweep_file)
    root = data_root_str(data_root)
    if executor != "slurm" and (slurm or slurm_cluster):
        fail("--slurm and --slurm-cluster need --executor slurm", 2)
    options = ({"parameters": slurm or [], "cluster": slurm_cluster} if executor == "slurm"
               else {"device": device.value, "workers": workers, "threads": threads})
    if executor == "slurm" and (workers or threads):
        fail("--workers and --threads are for the local executor on a CPU (on Slurm: --slurm cpus_per_task=N)", 2)
    events = run_sweep(Store(store), sweep, executor.value, retry_failed=retry_failed, data_root=root,
                       pack_size=pack_size, options=options, save_every=save_every,
                       run_options=RunOptions(compile=compile, deterministic=not cudnn_benchmark))
    display = _Display()
    try:
        with closing(events):
            try:
                _follow(events, display)
            finally:
                display.stop()
    except ExecutorRefused as exc:
        fail(f"--{'slurm' if executor == 'slurm' else 'device'}: {exc}" if not str(exc).startswith("--")
             else str(exc), 2)
    except SweepConflict as exc:
        fail(str(exc), 2)
    except (StoreUnavailable, StoreWriteError, DiskFull) as exc:
        fail(str(exc) + ("; free some space and run the same command again" if is_full(exc) else ""))


def _follow(events, display: _Display) -> None:
    """Draw each event of a run. A Ctrl-C that lands while an event is drawn goes to the run, as one that
    lands while the run waits: it stops cleanly and says so (Interrupted)."""
    interrupt = None
    while True:
        try:
            event = next(events) if interrupt is None else events.throw(interrupt)
        except StopIteration:
            return
        interrupt = None
        try:
            display.show(event)
        except KeyboardInterrupt as exc:
            interrupt = exc


class _Display:
    """What `sweep run` shows of a run's events: the plan, rich progress bars (one for the sweep, one per job
    in flight; a log line per finished job where the output is not a terminal) and the summary."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.running: dict[str, int] = {}
        self.overall = None  # the sweep's bar, while the progress display runs

    def stop(self) -> None:
        if self.overall is not None:
            self.progress.stop()
            self.overall = None

    def show(self, event) -> None:
        progress, running = self.progress, self.running
        if event.kind == "quarantined":
            report_quarantined([event])
        elif event.kind == "planned":
            self.planned(event)
        elif event.kind == "started":
            running[event.job_id] = progress.add_task(f"  {event.job_id}", total=event.epochs or None,
                                                      info=event.status or "starting")
        elif event.kind == "epoch" and event.job_id in running:
            progress.update(running[event.job_id], completed=event.epoch, info=f"loss {event.loss:,.1f}")
        elif event.kind == "finished" and event.job_id in running:
            progress.remove_task(running.pop(event.job_id))
            if not console.is_terminal:  # a log file gets one line per finished job
                console.print(f"{time.strftime('%H:%M:%S')} {event.job_id} {event.status or 'ended'}"
                              + (f" ({event.epoch} of {event.epochs} epochs)" if event.epochs else ""),
                              highlight=False)
        elif event.kind == "ingested" and self.overall is not None:
            progress.advance(self.overall, len(event.job_ids))
        elif event.kind == "deferred":
            console.print(f"{len(event.job_ids)} finished jobs are in their shards but not yet in the database, "
                          "which another process held; the next `harness sweep run` (or `harness db rebuild`) adds "
                          "them")
        elif event.kind == "summary":
            self.summary(event)
        elif event.kind == "disk_full":
            self.stop()
            fail(f"{event.reason}. {event.done} of {event.total} jobs are done and stored, none was marked failed: "
                 "free some space and run the same command again to go on")
        elif event.kind == "interrupted":
            self.stop()
            console.print(f"interrupted: {event.done} of {event.total} jobs are done and stored; run the same command "
                          "to continue" + (f" (its {event.queued} Slurm tasks go on without it: the same command "
                                           "re-attaches to them, `harness sweep cancel` stops them)"
                                           if event.queued else ""))
            raise typer.Exit(130)

    def planned(self, p) -> None:
        if p.added:
            console.print(f"sweep {p.sweep} now lists {p.added} jobs that it did not list before (its file changed)")
        for task in p.dead_tasks:
            console.print(f"slurm task {task} ended while no driver watched, without results: its jobs are marked "
                          "failed")
        for note in p.notes:
            console.print(note, highlight=False)
        console.print(f"sweep {p.sweep}: {p.total} jobs, {p.skipped} already in the store, {p.todo} to run "
                      f"in {p.packs} packs on {p.where}")
        if p.others:
            owners = sorted(set(p.others.values()))
            console.print(f"{len(p.others)} jobs are being run by another driver ({', '.join(owners)}); this run "
                          "leaves them to it (run the same command again later to pick up what it leaves)")
        if p.in_tasks:
            tasks = sorted({task.task_id for task in p.in_tasks.values()})
            where = f"{len(p.in_tasks)} jobs are in {len(tasks)} Slurm tasks an earlier driver submitted"
            console.print(f"{where} ({', '.join(tasks)}): re-attached, not submitted again" if p.attached else
                          f"{where} ({', '.join(tasks)}); this run leaves them to Slurm (`harness sweep status` "
                          "follows them)")
        if p.stale:
            console.print(f"{p.stale} of them have results from older code (an older numerics version or plugin), "
                          f"kept apart in the store (see `harness sweep status`); these runs are numerics "
                          f"{NUMERICS_VERSION}")
        if p.runs:
            self.overall = self.progress.add_task(f"sweep {p.sweep}", total=p.watched, info="")
            self.progress.start()

    def summary(self, s) -> None:
        self.stop()
        if s.ran:
            console.print(f"finished in {s.seconds:.0f} s: {s.done} done, {s.failed} failed, {s.diverged} diverged"
                          + (f" ({s.submitted} tasks submitted by this run)" if s.submitted is not None else ""))
            for job_id, error in s.errors:
                console.print(f"  {job_id}: {error}", highlight=False)
        if s.failed_waiting:  # a sweep with failed jobs is not finished, however this run went
            console.print(f"{s.failed_waiting} failed jobs of this sweep wait for `--retry-failed`")
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
    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    try:
        found = sweep_status(Store(store))
    except StoreUnavailable as exc:
        fail(str(exc))
    report_quarantined(found.quarantined)
    table = Table(title=f"sweeps in {store}", title_justify="left")
    for column in ("sweep", "description", "jobs", "done", "failed", "diverged", "running", "pending", "stale"):
        table.add_column(column, justify="left" if column in ("sweep", "description") else "right")
    for row in found.rows:
        table.add_row(*[plain(v) for v in row])
    console.print(table)
    for note in found.tasks:
        if note.live or note.ingested or note.dead:
            console.print(f"{note.sweep}: Slurm has {len(note.live)} of its tasks queued or running"
                          + (f" ({', '.join(note.live)})" if note.live else "")
                          + (f"; {note.ingested} results of tasks that ended were ingested now" if note.ingested
                             else "")
                          + (f"; tasks {', '.join(note.dead)} ended without results (jobs marked failed)"
                             if note.dead else ""), highlight=False)


@app.command()
def cancel(sweep_name: Annotated[str, typer.Argument(
        help="A sweep's name (as `harness sweep status` lists it) or its file.")],
           store: StoreOption = DEFAULT_STORE) -> None:
    """Cancel a sweep's Slurm tasks that are still queued or running (scancel).

    Their jobs get no result: the next `harness sweep run` runs them again, from their last resumable state.

    Example: harness sweep cancel sparsity --store runs/harness.duckdb
    """
    name = load_sweep_file(Path(sweep_name)).name if sweep_name.endswith(".toml") else sweep_name
    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    try:
        if sweeps_db.text(Store(store), name) is None and not submissions_db.still_open(Store(store), name):
            fail(f"no sweep '{name}' in {store}; `harness sweep status --store {store}` lists them", 2)
        cancelled = cancel_sweep(Store(store), name)
    except TasksUnavailable as exc:
        fail(f"cannot cancel: {exc}")
    except StoreUnavailable as exc:
        fail(str(exc))
    if cancelled is None:
        console.print(f"sweep {plain(name)} has no Slurm tasks queued or running in {plain(store)}")
        return
    console.print(f"cancelled {len(cancelled)} Slurm tasks of sweep {plain(name)}: "
                  f"{plain(', '.join(cancelled) or 'none')}")
