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
from harness.numerics import NUMERICS_VERSION
from harness.schema import SpecError
from harness.spec import Sweep, job_summary, load_sweep, plan_packs

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


def _pack_size(requested: int | None, devices: list[str]) -> int:
    if requested is not None:
        return requested
    return 1 if devices == ["cpu"] else 8


def _statuses(store: Store, sweep: Sweep) -> dict[str, str]:
    """Statuses from the database, or, for jobs it lacks, from shards left by a killed run (the next
    `sweep run` ingests those)."""
    ids = [j.job_id for j in sweep.jobs]
    statuses = store.statuses(ids)
    return {**store.shard_statuses([i for i in ids if i not in statuses]), **statuses}


def _short(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command()
def plan(sweep_file: SweepFile, store: StoreOption = DEFAULT_STORE, pack_size: PackOption = None,
         device: DeviceOption = Device.auto) -> None:
    """Show the jobs of a sweep (done / failed / pending) and how they will be packed.

    Example: harness sweep plan sweeps/sparsity.toml
    """
    from harness.executors.local import visible_devices

    sweep = _load(sweep_file)
    the_store = Store(store)
    try:
        statuses = _statuses(the_store, sweep)
        stale = the_store.stale([j for j in sweep.jobs if j.job_id not in statuses])
        statuses |= {job_id: "running" for job_id in the_store.running(j.job_id for j in sweep.jobs
                                                                        if j.job_id not in statuses)}
    except StoreUnavailable as exc:
        fail(str(exc))
    try:
        devices = visible_devices(device.value)
    except RuntimeError as exc:
        fail(str(exc), 2)
    size = _pack_size(pack_size, devices)
    packs = plan_packs([j for j in sweep.jobs if statuses.get(j.job_id) is None], size)
    pack_of = {job.job_id: i + 1 for i, pack in enumerate(packs) for job in pack.jobs}
    table = Table(title=f"sweep {sweep.name}: {sweep.description}", title_justify="left")
    columns = ["job_id", "dataset", "prior", "gamma", "alpha", "beta", "seed", "epochs", "status", "pack"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("gamma", "alpha", "beta", "seed", "epochs", "pack")
                         else "left")
    for job in sweep.jobs:
        s = job_summary(job)
        status = statuses.get(job.job_id, "stale" if job.job_id in stale else "pending")
        table.add_row(job.job_id, s["dataset"], s["prior"], _short(s["gamma"]), _short(s["alpha"]),
                      _short(s["beta"]), str(s["seed"]), str(s["epochs"]), status,
                      str(pack_of.get(job.job_id, "")))
    console.print(table)
    counts = {k: sum(1 for j in sweep.jobs if statuses.get(j.job_id, "pending") == k)
              for k in ("done", "failed", "diverged", "running", "pending")}
    console.print(f"{len(sweep.jobs)} jobs: {counts['done']} done, {counts['failed']} failed, "
                  f"{counts['diverged']} diverged, " + (f"{counts['running']} running, " if counts["running"] else "")
                  + f"{counts['pending']} pending -> {len(packs)} packs of at most {size} on {', '.join(devices)}")
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
                            "timeout_min=240, gpus_per_node=1.")] = None,
        slurm_cluster: Annotated[str | None, typer.Option(
            "--slurm-cluster", help="submitit's cluster: slurm (the default where Slurm is installed) or "
                                    "local (the same path on this machine, to try a sweep).")] = None) -> None:
    """Run every job of a sweep that the store does not have yet; finished jobs are skipped.

    Example: harness sweep run sweeps/quickstart.toml --store runs/harness.duckdb

    On a cluster: harness sweep run sweeps/sparsity.toml --executor slurm --slurm slurm_partition=gpu
    --slurm timeout_min=600 --slurm gpus_per_node=1

    Ctrl-C stops cleanly; run the same command again to continue where it stopped.
    """
    sweep = _load(sweep_file)
    root = data_root_str(data_root)
    the_store = Store(store)
    where, size, execute = _executor(executor, device, pack_size, slurm or [], slurm_cluster, the_store,
                                     sweep.name, root)
    ids = [j.job_id for j in sweep.jobs]
    try:
        added = the_store.register_sweep(sweep.name, sweep.path, sweep.description, Path(sweep.path).read_text(), ids)
        the_store.ingest_shards([i for i in ids if the_store.shard_path(i).exists()])  # left by a killed run
        statuses = the_store.statuses(ids)
        stale = the_store.stale([j for j in sweep.jobs if j.job_id not in statuses])
    except SweepConflict as exc:
        fail(str(exc), 2)
    except (StoreUnavailable, StoreWriteError) as exc:
        fail(str(exc))
    if added:
        console.print(f"sweep {sweep.name} now lists {added} jobs that it did not list before (its file changed)")
    report_quarantined(the_store)
    the_store.quarantined.clear()
    rerun = {"failed", "diverged"} if retry_failed else set()
    wanted = [j for j in sweep.jobs if statuses.get(j.job_id) is None or statuses[j.job_id] in rerun]
    the_store.clear_stale_claims(ids)  # a killed driver's claims on jobs that are done since
    mine, others = the_store.claim([j.job_id for j in wanted])
    claimed = set(mine)
    try:
        _run_claimed(the_store, sweep, [j for j in wanted if j.job_id in claimed], others, size, where, execute,
                     ids, stale)
    finally:
        the_store.release(mine)


def _run_claimed(the_store: Store, sweep: Sweep, todo, others, size, where, execute, ids, stale) -> None:
    """The body of `sweep run` once this driver holds its jobs' claims."""
    skipped = len(sweep.jobs) - len(todo) - len(others)
    packs = plan_packs(todo, size)
    console.print(f"sweep {sweep.name}: {len(sweep.jobs)} jobs, {skipped} already in the store, {len(todo)} to run "
                  f"in {len(packs)} packs on {where}")
    if others:
        owners = sorted({f"pid {o.get('pid')} on {o.get('host')}" for o in others.values()})
        console.print(f"{len(others)} jobs are being run by another driver ({', '.join(owners)}); this run leaves "
                      "them to it (run the same command again later to pick up what it leaves)")
    if stale:
        console.print(f"{len(stale)} of them have results from an older numerics version, kept apart in the store "
                      f"(see `harness sweep status`); these runs are numerics {NUMERICS_VERSION}")
    if not todo:
        _failed_waiting(the_store, ids)
        return
    started = time.time()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    overall = progress.add_task(f"sweep {sweep.name}", total=len(todo), info="")
    running: dict[str, int] = {}

    def on_event(event) -> None:
        if event.kind == "start":
            running[event.job_id] = progress.add_task(f"  {event.job_id}", total=event.epochs, info="starting")
        elif event.kind == "epoch" and event.job_id in running:
            progress.update(running[event.job_id], completed=event.epoch, info=f"loss {event.loss:,.1f}")
        elif event.kind == "end" and event.job_id in running:
            progress.remove_task(running.pop(event.job_id))
            if not console.is_terminal:  # a log file gets one line per finished job
                console.print(f"{time.strftime('%H:%M:%S')} {event.job_id} {event.status or 'ended'} "
                              f"({event.epoch} of {event.epochs} epochs)", highlight=False)

    try:
        with progress:
            for ended in execute(packs, on_event):
                progress.advance(overall, len(ended.job_ids))
    except KeyboardInterrupt:
        final = the_store.statuses(ids)
        done = sum(1 for i in ids if final.get(i) == "done")
        console.print(f"interrupted: {done} of {len(ids)} jobs are done and stored; run the same command to "
                      "continue")
        raise typer.Exit(130) from None
    report_quarantined(the_store)
    if the_store.deferred:
        console.print(f"{len(the_store.deferred)} finished jobs are in their shards but not yet in the database, "
                      "which another process held; the next `harness sweep run` (or `harness db rebuild`) adds them")
    final = {**the_store.shard_statuses(the_store.deferred), **the_store.statuses([j.job_id for j in todo])}
    counts = {k: sum(1 for j in todo if final.get(j.job_id) == k) for k in ("done", "failed", "diverged")}
    console.print(f"finished in {time.time() - started:.0f} s: {counts['done']} done, {counts['failed']} failed, "
                  f"{counts['diverged']} diverged")
    for job_id, error in the_store.errors([j.job_id for j in todo]):
        console.print(f"  {job_id}: {error}", highlight=False)
    _failed_waiting(the_store, ids)


def _failed_waiting(store: Store, ids: list[str]) -> None:
    """Exit 1 while any job of the sweep is failed, saying how many wait for --retry-failed: a sweep with
    failed jobs is not finished, however this run went."""
    failed = [job_id for job_id, status in store.statuses(ids).items() if status == "failed"]
    if failed:
        console.print(f"{len(failed)} failed jobs of this sweep wait for `--retry-failed`")
        raise typer.Exit(1)


def _executor(kind: str, device: str, pack_size: int | None, slurm: list[str], slurm_cluster: str | None,
              store: Store, sweep: str, data_root: str | None):
    """(where it runs, pack size, execute(packs, on_event) -> iterator of ended packs). Bad options end
    here, with exit code 2, before the store is touched."""
    from harness.executors.local import run_local, visible_devices
    from harness.executors.slurm import parse_parameters, run_slurm, submitit_executor

    if kind == "slurm":
        try:
            cluster = submitit_executor(store, sweep, parse_parameters(slurm), slurm_cluster)
        except (ValueError, RuntimeError, NameError, TypeError) as exc:  # unknown parameter or cluster
            fail(f"--slurm: {str(exc).splitlines()[0]}", 2)
        return (f"submitit ({cluster.cluster})", pack_size or 8,
                lambda packs, on_event: run_slurm(packs, store, sweep, data_root, cluster, on_event))
    if slurm or slurm_cluster:
        fail("--slurm and --slurm-cluster need --executor slurm", 2)
    try:
        devices = visible_devices(device.value)
    except RuntimeError as exc:
        fail(str(exc), 2)
    return (", ".join(devices), _pack_size(pack_size, devices),
            lambda packs, on_event: run_local(packs, store, sweep, devices, data_root, on_event))


@app.command()
def status(store: StoreOption = DEFAULT_STORE) -> None:
    """Every sweep in the store with its counts of done, failed, diverged and pending jobs.

    done, failed and diverged count results of the current numerics version; stale counts the sweep's
    results from an older one, which stay queryable (column `numerics` of `jobs` and `runs`).

    Example: harness sweep status --store runs/harness.duckdb
    """
    if not Path(store).exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    try:
        rows = Store(store).sweep_counts()
    except StoreUnavailable as exc:
        fail(str(exc))
    table = Table(title=f"sweeps in {store}", title_justify="left")
    for column in ("sweep", "description", "jobs", "done", "failed", "diverged", "running", "pending", "stale"):
        table.add_column(column, justify="left" if column in ("sweep", "description") else "right")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)
