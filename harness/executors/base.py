"""What every executor is, and what is left to run.

An executor runs packs somewhere and leaves one shard per job; the driver (`harness sweep run`) only
talks to it through `Executor`: `submit` packs, then `poll` until nothing is `in_flight`, ingesting
nothing itself (each executor ingests a pack's shards before it reports the pack ended). The CLI picks
one by name from the registry, `executors()`.

`what_is_left` is the one rule, used by `sweep plan` and `sweep run` alike, for which jobs of a sweep
still need running: not those with a result of this numerics version (in the database, or in a shard
that a killed run left), not those another live driver has claimed, and not those in a cluster task
that is still queued or running (a driver that left re-attaches to those instead of submitting them
again); failed and diverged jobs only with --retry-failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from harness.db.store import Store
from harness.executors.slurm import LiveTask
from harness.executors.worker import PackEnded
from harness.spec import JobSpec, Pack, Sweep, plan_packs
from harness.train import Progress


class Executor(Protocol):
    """Runs packs; each executor writes one shard per job and ingests it before reporting the pack ended."""

    where: str  # for people: "cpu", "cuda:0, cuda:1", "slurm (submitit)"
    pack_size: int  # most jobs per pack, the executor's choice where the user gave none
    notes: list[str]  # lines for people, e.g. why plan() chose a pack size

    def plan(self, jobs: list[JobSpec]) -> list[Pack]:
        """Group jobs into packs as this executor runs them (the local one measures GPU memory)."""

    def submit(self, packs: list[Pack]) -> None:
        """Start (or queue) these packs."""

    def poll(self, timeout: float) -> list[PackEnded]:
        """Wait up to `timeout` seconds for packs to end; returns those that ended (ingested)."""

    @property
    def in_flight(self) -> int:
        """Packs submitted or attached that have not ended yet."""

    def close(self) -> None:
        """Stop what this driver started and may not outlive it (local workers); cluster tasks stay."""


def drive(executor: Executor, packs: list[Pack], poll_seconds: float = 1.0) -> Iterator[PackEnded]:
    """Submit `packs` and yield each ended pack until none is in flight (including tasks the executor
    attached to before); closes the executor at the end or on an exception (Ctrl-C)."""
    try:
        if packs:
            executor.submit(packs)
        while executor.in_flight:
            yield from executor.poll(poll_seconds)
    finally:
        executor.close()


@dataclass
class Left:
    """A sweep's jobs sorted by what the next `sweep run` does with them."""

    statuses: dict[str, str]  # job id -> done / failed / diverged (this numerics version)
    stale: dict[str, str]  # job id -> its id under an older numerics version, for jobs stored only there
    running: dict[str, str]  # job id -> the other live driver that holds it: "pid 123 on host"
    in_cluster: dict[str, LiveTask]  # job id -> the recorded cluster task, still queued or running, that has it
    todo: list[JobSpec] = field(default_factory=list)  # to run now, in sweep order
    ingested: int = 0  # shards ingested while looking (left by a killed run or a task that ended)
    failed_tasks: list[str] = field(default_factory=list)  # cluster tasks found dead without shards

    def packs(self, size: int) -> list[Pack]:
        return plan_packs(self.todo, size)

    def counts(self, jobs: list[JobSpec]) -> dict[str, int]:
        counts = dict.fromkeys(("done", "failed", "diverged", "running", "pending"), 0)
        for job in jobs:
            counts[self.status(job.job_id)] += 1
        return counts

    def status(self, job_id: str) -> str:
        if job_id in self.running or job_id in self.in_cluster:
            return "running"
        return self.statuses.get(job_id, "pending")


def what_is_left(store: Store, sweep: Sweep, retry_failed: bool = False, write: bool = True) -> Left:
    """Which jobs of `sweep` to run now. With `write` (sweep run), shards left by killed runs and by
    cluster tasks that ended are ingested and cluster tasks that died without a shard have their jobs
    marked failed; without it (sweep plan) the same rule reads shards where the database lacks them and
    changes nothing."""
    from harness.executors.slurm import reconcile

    ids = [j.job_id for j in sweep.jobs]
    ingested = store.ingest_shards([i for i in ids if store.shard_path(i).exists()]) if write else 0
    in_cluster, failed_tasks, reconciled = reconcile(store, sweep, write)
    statuses = store.statuses(ids) if store.path.exists() else {}
    if not write:
        statuses = {**store.shard_statuses([i for i in ids if i not in statuses]), **statuses}
    without = [j for j in sweep.jobs if j.job_id not in statuses]
    stale = store.stale(without) if store.path.exists() else {}
    in_cluster = {job_id: task for job_id, task in in_cluster.items() if job_id not in statuses}
    running = {}
    for job_id in store.running(j.job_id for j in without if j.job_id not in in_cluster):
        owner = store.claim_owner(job_id)
        running[job_id] = f"pid {owner.get('pid')} on {owner.get('host')}"
    rerun = {"failed", "diverged"} if retry_failed else set()
    todo = [j for j in sweep.jobs if j.job_id not in running and j.job_id not in in_cluster
            and (statuses.get(j.job_id) is None or statuses[j.job_id] in rerun)]
    return Left(statuses, stale, running, in_cluster, todo, ingested + reconciled, failed_tasks)


ExecutorFactory = Callable[..., Executor]


def executors() -> dict[str, ExecutorFactory]:
    """The registry: name -> factory(store=, sweep=, data_root=, pack_size=, on_progress=, **options).
    Imported lazily: the Slurm executor needs submitit, which a GPU node running local packs may lack."""
    from harness.executors.local import LocalExecutor
    from harness.executors.slurm import SlurmExecutor

    return {"local": LocalExecutor.create, "slurm": SlurmExecutor.create}


__all__ = ["Executor", "Left", "PackEnded", "Progress", "drive", "executors", "what_is_left"]
