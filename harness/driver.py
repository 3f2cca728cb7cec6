"""The sweep driver: what `harness sweep run`, `plan`, `status` and `cancel` do, as a library.

`run_sweep` registers a sweep, decides what is left to run (`what_is_left`, the one rule that `plan_sweep`
uses too), claims those jobs, has an executor run them, ingests each pack's shards as soon as the pack
ends, and releases its claims. It yields events for whoever watches (the CLI draws them) and ends with a
Summary, or with Interrupted after Ctrl-C. It never prints.

The executor is picked by name from the registry (harness.executors.registry); what is specific to one
(Slurm's tasks, which outlive the driver) stays behind the executor protocol: `detached`, `attach`,
`submitted` and each kind's `live_tasks` and `cancel`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.db import claims, jobs, submissions, sweeps
from harness.db.ingest import Ingest, SetAside, shard_statuses
from harness.db.store import Store, StoreUnavailable
from harness.disk import full_disk, is_full
from harness.executors.base import Executor, LiveTask, Tasks
from harness.executors.local import default_pack_size, plan_cpu, visible_devices
from harness.executors.registry import EXECUTORS
from harness.executors.worker import RESUME_EVERY
from harness.spec import JobSpec, Pack, Sweep, parse_sweep, plan_packs
from harness.train import Progress, RunOptions

# -- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quarantined:
    """A shard could not be ingested and was set aside; its job counts as not done and runs again."""

    kind: ClassVar[str] = "quarantined"
    shard: str
    target: str
    reason: str


@dataclass(frozen=True)
class Planned:
    """What this run does with each job of the sweep, before anything runs."""

    kind: ClassVar[str] = "planned"
    sweep: str
    total: int  # jobs the sweep lists
    skipped: int  # already in the store
    todo: int  # to run now, in `packs` packs
    packs: int
    where: str  # the executor's devices or cluster, for people
    added: int  # jobs the sweep lists that it did not list before (its file changed)
    dead_tasks: tuple[str, ...]  # tasks that ended while no driver watched, without results (jobs now failed)
    notes: tuple[str, ...]  # the executor's, e.g. the pack sizes it measured
    others: dict[str, str]  # job id -> the other live driver that runs it
    in_tasks: dict[str, LiveTask]  # job id -> the task an earlier driver submitted, still queued or running
    attached: bool  # whether this run follows those tasks (else it leaves them to run on their own)
    stale: int  # jobs to run that have results from an older numerics version
    watched: int  # jobs this run follows until they end
    runs: bool  # whether anything runs (else the Summary follows at once)


@dataclass(frozen=True)
class Started:
    """A job started (or, on a cluster, was submitted or attached to)."""

    kind: ClassVar[str] = "started"
    job_id: str
    epochs: int
    status: str


@dataclass(frozen=True)
class Epoch:
    kind: ClassVar[str] = "epoch"
    job_id: str
    epoch: int
    epochs: int
    loss: float


@dataclass(frozen=True)
class Finished:
    """A job ended, as its executor saw it (its status, how many epochs it trained)."""

    kind: ClassVar[str] = "finished"
    job_id: str
    status: str
    epoch: int
    epochs: int


@dataclass(frozen=True)
class Ingested:
    """A pack ended and its jobs' shards are in the store (or deferred: see Deferred)."""

    kind: ClassVar[str] = "ingested"
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Submitted:
    """Tasks submitted to a cluster; they run on without this driver."""

    kind: ClassVar[str] = "submitted"
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Deferred:
    """Finished jobs whose shards wait to be ingested: another process held the database to the end."""

    kind: ClassVar[str] = "deferred"
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """How the run ended; the last event."""

    kind: ClassVar[str] = "summary"
    ran: bool  # whether anything ran (else only failed_waiting matters)
    seconds: float = 0.0
    done: int = 0  # of the jobs this run followed
    failed: int = 0
    diverged: int = 0
    submitted: int | None = None  # tasks this run submitted, for an executor whose tasks outlive it
    errors: tuple[tuple[str, str], ...] = ()  # (job id, error) of the followed jobs that failed or diverged
    failed_waiting: int = 0  # failed jobs of the sweep, which wait for retry_failed


@dataclass(frozen=True)
class DiskFullStop:
    """The disk under the store filled: the run stopped; the last event. Nothing was marked failed: the jobs
    it could not store run (or resume) when the same command runs again, once there is space."""

    kind: ClassVar[str] = "disk_full"
    reason: str
    done: int  # jobs of the sweep done and stored (in their shards)
    total: int


@dataclass(frozen=True)
class Interrupted:
    """The run was stopped (Ctrl-C); the last event. Its claims are released, local workers stopped."""

    kind: ClassVar[str] = "interrupted"
    done: int  # jobs of the sweep done and stored
    total: int
    queued: int  # the sweep's cluster tasks that go on without the driver


Event = (Quarantined | Planned | Started | Epoch | Finished | Ingested | Submitted | Deferred | Summary | Interrupted
         | DiskFullStop)


class ExecutorRefused(ValueError):
    """The executor refused its options (an unknown parameter, a device or cluster it cannot use)."""


# -- what is left ------------------------------------------------------------------------------------


@dataclass
class Left:
    """A sweep's jobs sorted by what the next `sweep run` does with them."""

    statuses: dict[str, str]  # job id -> done / failed / diverged (this numerics version)
    stale: dict[str, str]  # job id -> its id under an older numerics version, for jobs stored only there
    running: dict[str, str]  # job id -> the other live driver that holds it: "pid 123 on host"
    in_tasks: dict[str, LiveTask]  # job id -> the recorded task, still queued or running, that has it
    todo: list[JobSpec] = field(default_factory=list)  # to run now, in sweep order
    ingested: int = 0  # shards ingested while looking (left by a killed run or a task that ended)
    dead_tasks: list[str] = field(default_factory=list)  # recorded tasks found ended without shards

    def packs(self, size: int) -> list[Pack]:
        return plan_packs(self.todo, size)

    def counts(self, jobs: list[JobSpec]) -> dict[str, int]:
        counts = dict.fromkeys(("done", "failed", "diverged", "running", "pending"), 0)
        for job in jobs:
            counts[self.status(job.job_id)] += 1
        return counts

    def status(self, job_id: str) -> str:
        if job_id in self.running or job_id in self.in_tasks:
            return "running"
        return self.statuses.get(job_id, "pending")


def live_tasks(store: Store, sweep: Sweep, write: bool) -> Tasks:
    """What every kind of executor knows of the tasks that earlier drivers submitted for `sweep` (see
    ExecutorKind.live_tasks); the shards of the tasks that ended are not ingested here."""
    found = Tasks()
    for kind in EXECUTORS.values():
        tasks = kind.live_tasks(store, sweep, write)
        found.live.update(tasks.live)
        found.dead.extend(tasks.dead)
        found.ended_jobs.extend(tasks.ended_jobs)
    return found


def what_is_left(store: Store, sweep: Sweep, retry_failed: bool = False, write: bool = True,
                 ingest: Ingest | None = None) -> Left:
    """Which jobs of `sweep` to run now: not those with a result of this numerics version (in the database,
    or in a shard that a killed run left), not those another live driver has claimed, and not those in a
    recorded task that still queues or runs (a driver that left re-attaches to those instead of submitting
    them again); failed and diverged jobs only with `retry_failed`.

    With `write` (sweep run), shards left by killed runs and by tasks that ended are ingested (through
    `ingest`, which keeps what it set aside) and tasks that died without a shard have their jobs marked
    failed; without it (sweep plan) the same rule reads shards where the database lacks them and changes
    nothing."""
    ingest = ingest or Ingest(store)
    ids = [j.job_id for j in sweep.jobs]
    ingested = ingest.shards([i for i in ids if store.shard_path(i).exists()]) if write else 0
    tasks = live_tasks(store, sweep, write)
    if write and tasks.ended_jobs:
        ingested += ingest.shards(tasks.ended_jobs)
    statuses = jobs.statuses(store, ids)
    if not write:
        statuses = {**shard_statuses(store, [i for i in ids if i not in statuses]), **statuses}
    without = [j for j in sweep.jobs if j.job_id not in statuses]
    stale = jobs.stale(store, without) if store.path.exists() else {}
    in_tasks = {job_id: task for job_id, task in tasks.live.items() if job_id not in statuses}
    running = {}
    for job_id in claims.running(store, (j.job_id for j in without if j.job_id not in in_tasks)):
        owner = claims.owner(store, job_id)
        running[job_id] = f"pid {owner.get('pid')} on {owner.get('host')}"
    rerun = {"failed", "diverged"} if retry_failed else set()
    todo = [j for j in sweep.jobs if j.job_id not in running and j.job_id not in in_tasks
            and (statuses.get(j.job_id) is None or statuses[j.job_id] in rerun)]
    return Left(statuses, stale, running, in_tasks, todo, ingested, tasks.dead)


# -- sweep plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What `sweep run` would do now: the jobs left, in packs of `size` on `devices`."""

    left: Left
    packs: list[Pack]
    size: int
    devices: list[str]
    notes: tuple[str, ...] = ()  # on a CPU: the workers and threads of each kind of pack, and why


def plan_sweep(store: Store, sweep: Sweep, pack_size: int | None = None, device: str = "auto",
               workers: int | None = None, threads: int | None = None) -> Plan:
    """The plan of a local run, changing nothing in the store. StoreUnavailable where the database cannot
    be read; RuntimeError for a device that is not there."""
    left = what_is_left(store, sweep, write=False)
    devices = visible_devices(device)
    size = pack_size or default_pack_size(devices)
    if devices == ["cpu"] and left.todo:
        planned = plan_cpu(left.todo, size, workers, threads)
        return Plan(left, planned.packs, size, devices, tuple(planned.notes))
    return Plan(left, left.packs(size), size, devices)


# -- sweep run ---------------------------------------------------------------------------------------


def run_sweep(store: Store, sweep: Sweep, executor: str = "local", *, retry_failed: bool = False,
              data_root: str | None = None, pack_size: int | None = None, options: dict[str, Any] | None = None,
              run_options: RunOptions = RunOptions(), save_every: int = RESUME_EVERY,
              poll_seconds: float = 1.0) -> Iterator[Event]:
    """Run every job of `sweep` that the store does not have yet, yielding events; the last is a Summary
    (or Interrupted, after Ctrl-C: run again to go on).

    `executor` names one in the registry, made with `options` (e.g. device for local; parameters and
    cluster for slurm); ExecutorRefused before the store is touched where it refuses them. SweepConflict
    where another sweep file holds the sweep's name; StoreUnavailable or StoreWriteError where the store
    cannot be used. Close the generator (contextlib.closing) if you stop early: its claims are released and
    local workers stopped then."""
    progress: list[Progress] = []
    try:
        runner = EXECUTORS[executor].create(store=store, sweep=sweep, data_root=data_root, pack_size=pack_size,
                                            on_progress=progress.append, run_options=run_options,
                                            save_every=save_every, **(options or {}))
    except (ValueError, RuntimeError, NameError, TypeError) as exc:  # a bad parameter, cluster or device
        raise ExecutorRefused(str(exc).splitlines()[0]) from exc
    ids = [j.job_id for j in sweep.jobs]
    added = sweeps.register(store, sweep.name, sweep.path, sweep.description, sweep.text, ids)
    ingest = Ingest(store)
    left = what_is_left(store, sweep, retry_failed, write=True, ingest=ingest)
    yield from _quarantined(ingest)
    claims.clear_stale(store, ids)  # a killed driver's claims on jobs that are done since
    mine, others = claims.claim(store, [j.job_id for j in left.todo])
    summary = full = None
    try:
        summary = yield from _run_claimed(store, sweep, executor, runner, left, set(mine), others, added, ingest,
                                          progress, poll_seconds)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a full disk stops the sweep; what trained stays, unfinished jobs run again
        if not is_full(exc):
            raise
        full = full_disk(exc, "writing the store")
    finally:
        claims.release(store, mine)
    if full is not None:  # the shards are the truth: the database may not have been able to take them all
        statuses = shard_statuses(store, ids)
        yield DiskFullStop(str(full), sum(1 for s in statuses.values() if s == "done"), len(ids))
        return
    if summary is None:
        done = sum(1 for status in jobs.statuses(store, ids).values() if status == "done")
        queued = len(submissions.still_open(store, sweep.name)) if runner.detached else 0
        summary = Interrupted(done, len(ids), queued)
    yield summary


def _run_claimed(store: Store, sweep: Sweep, kind: str, runner: Executor, left: Left, mine: set[str],
                 claimed_by_others: dict[str, dict[str, Any]], added: int, ingest: Ingest,
                 progress: list[Progress], poll_seconds: float):
    """The body of run_sweep once this driver holds its jobs' claims; returns the Summary."""
    todo = [j for j in left.todo if j.job_id in mine]
    in_tasks = left.in_tasks
    # jobs other drivers hold: those found claimed while looking, and those claimed since (a race)
    others = {**left.running, **{job_id: f"pid {o.get('pid')} on {o.get('host')}"
                                 for job_id, o in claimed_by_others.items()}}
    packs = runner.plan(todo)
    attach = bool(in_tasks) and runner.detached and all(task.kind == kind for task in in_tasks.values())
    if attach:
        runner.attach({task.task_id for task in in_tasks.values()})
    watched = [j.job_id for j in todo] + [j.job_id for j in sweep.jobs if j.job_id in in_tasks]
    yield Planned(sweep.name, len(sweep.jobs), len(sweep.jobs) - len(todo) - len(others) - len(in_tasks), len(todo),
                  len(packs), runner.where, added, tuple(left.dead_tasks), tuple(runner.notes), others, in_tasks,
                  attach, sum(1 for j in todo if j.job_id in left.stale), len(watched),
                  bool(packs) or bool(runner.in_flight))
    yield from _relay(progress)
    ids = [j.job_id for j in sweep.jobs]
    if not packs and not runner.in_flight:
        return Summary(False, failed_waiting=_failed(store, ids))
    started = time.time()
    yield from drive(runner, packs, ingest, progress, poll_seconds)
    if ingest.deferred:
        yield Deferred(tuple(ingest.deferred))
    try:
        final = {**shard_statuses(store, ingest.deferred), **jobs.statuses(store, watched)}
        errors, failed_waiting = tuple(jobs.errors(store, watched)), _failed(store, ids)
    except StoreUnavailable:  # held by another process since the last ingest: the shards on disk say it
        final, errors, failed_waiting = shard_statuses(store, watched), (), 0
    counts = {k: sum(1 for j in watched if final.get(j) == k) for k in ("done", "failed", "diverged")}
    return Summary(True, time.time() - started, counts["done"], counts["failed"], counts["diverged"],
                   len(runner.submitted) if runner.detached else None, errors, failed_waiting)


def drive(executor: Executor, packs: list[Pack], ingest: Ingest, progress: list[Progress] | None = None,
          poll_seconds: float = 1.0) -> Iterator[Event]:
    """Submit `packs` and poll until none is in flight (including tasks the executor attached to before),
    ingesting each ended pack's shards; while another process holds the database they wait in
    `ingest.deferred` and are tried again at least every `poll_seconds`. Yields the executor's progress
    (`progress`: the list its on_progress appends to), the shards set aside and each ingested pack; closes
    the executor at the end or on an exception (Ctrl-C)."""
    progress = progress if progress is not None else []
    tried = time.monotonic()
    try:
        if packs:
            before = len(executor.submitted)
            executor.submit(packs)
            if executor.detached and len(executor.submitted) > before:
                yield Submitted(tuple(executor.submitted[before:]))
            yield from _relay(progress)
        while executor.in_flight:
            ended = executor.poll(poll_seconds)
            yield from _relay(progress)
            for pack in ended:
                ingest.or_defer(pack.job_ids)
                tried = time.monotonic()
                yield from _quarantined(ingest)
                yield Ingested(tuple(pack.job_ids))
            if ingest.deferred and time.monotonic() - tried >= poll_seconds:  # the database was held: try again
                ingest.or_defer([])
                tried = time.monotonic()
        if ingest.deferred:
            ingest.or_defer([])
        yield from _quarantined(ingest)
    finally:
        executor.close()


def _relay(progress: list[Progress]) -> Iterator[Event]:
    """The executor's progress events so far, as the driver's (and the list emptied)."""
    events, progress[:] = list(progress), []
    for p in events:
        if p.kind == "start":
            yield Started(p.job_id, p.epochs, p.status)
        elif p.kind == "epoch":
            yield Epoch(p.job_id, p.epoch, p.epochs, p.loss)
        elif p.kind == "end":
            yield Finished(p.job_id, p.status, p.epoch, p.epochs)


def _quarantined(ingest: Ingest) -> Iterator[Quarantined]:
    for aside in ingest.newly_quarantined():
        yield _set_aside(aside)


def _set_aside(aside: SetAside) -> Quarantined:
    return Quarantined(str(aside.shard), str(aside.target), aside.reason)


def _failed(store: Store, ids: list[str]) -> int:
    """The sweep's failed jobs: a sweep with failed jobs is not finished, however this run went."""
    return sum(1 for status in jobs.statuses(store, ids).values() if status == "failed")


# -- sweep status and cancel ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskNote:
    """A sweep's recorded tasks, brought up to date by `sweep_status`."""

    sweep: str
    live: tuple[str, ...]  # task ids still queued or running
    ingested: int  # results of tasks that ended, ingested now
    dead: tuple[str, ...]  # tasks that ended without results (their jobs now failed)


@dataclass(frozen=True)
class Status:
    """Every sweep's counts (see harness.db.sweeps.counts), with what changed while looking."""

    rows: list[tuple[str, str, int, int, int, int, int, int, int]]
    tasks: list[TaskNote]
    quarantined: list[Quarantined]


def stored_sweep(store: Store, name: str) -> Sweep | None:
    """The sweep as the store registered it (its TOML text), or None where that no longer loads."""
    from harness.schema import SpecError

    found = sweeps.text(store, name)
    if found is None:
        return None
    try:
        return parse_sweep(found[1], found[0])
    except SpecError:
        return None


def sweep_status(store: Store) -> Status:
    """Every sweep in the store with its counts. Sweeps with recorded tasks are brought up to date first:
    each kind of executor is asked which tasks still queue or run (their jobs count as running), and the
    results of those that ended are ingested. StoreUnavailable where the database cannot be used."""
    busy: set[str] = set()
    notes = []
    ingest = Ingest(store)
    for name in sorted({s["sweep"] for s in submissions.still_open(store)}):
        sweep = stored_sweep(store, name)
        if sweep is None:
            continue
        tasks = live_tasks(store, sweep, write=True)
        ingested = ingest.shards(tasks.ended_jobs) if tasks.ended_jobs else 0
        busy.update(tasks.live)
        notes.append(TaskNote(name, tuple(sorted({task.task_id for task in tasks.live.values()})), ingested,
                              tuple(tasks.dead)))
    return Status(sweeps.counts(store, busy), notes, [_set_aside(a) for a in ingest.quarantined])


def cancel_sweep(store: Store, name: str) -> list[str] | None:
    """Cancel the sweep's recorded tasks still queued or running; returns their ids, or None where the store
    records none. Their jobs get no result: the next `sweep run` runs them (from their last resumable state).
    TasksUnavailable where the cluster cannot be asked."""
    if not any(s["sweep"] == name for s in submissions.still_open(store)):
        return None
    return [task for kind in EXECUTORS.values() for task in kind.cancel(store, name)]
