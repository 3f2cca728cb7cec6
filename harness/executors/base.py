"""What every executor is.

An executor runs packs somewhere and leaves one shard per job. The driver (harness.driver) talks to it
only through `Executor`: `plan` jobs into packs, `submit` them, then `poll` until nothing is `in_flight`;
it ingests each ended pack's shards itself, so an executor never writes the database's job tables.

Some executors' tasks outlive the driver that submitted them (`detached`: a cluster's). Such an executor
records its tasks in the store; each kind of executor in the registry (harness.executors.registry) says
which of its recorded tasks still queue or run (`live_tasks`), so that a later driver, of any kind, leaves
their jobs alone, and one of the same kind `attach`es to them instead of submitting them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from harness.executors.worker import PackEnded
from harness.spec import JobSpec, Pack, Sweep
from harness.train import Progress

if TYPE_CHECKING:
    from harness.db.store import Store


class TasksUnavailable(RuntimeError):
    """The system that runs an executor's tasks cannot be asked about them now (not installed, no answer)."""


@dataclass(frozen=True)
class LiveTask:
    """A task that an executor recorded in the store and that still queues or runs, with the state its
    system gave."""

    task_id: str
    state: str
    kind: str  # the executor that submitted it, as the registry names it

    def __str__(self) -> str:
        return f"{self.kind} task {self.task_id} ({self.state.lower()})"


@dataclass
class Tasks:
    """What one kind of executor knows of the tasks that earlier drivers submitted for a sweep."""

    live: dict[str, LiveTask] = field(default_factory=dict)  # job id -> the task, still queued or running, that has it
    dead: list[str] = field(default_factory=list)  # tasks found ended without results: their jobs have failed shards
    ended_jobs: list[str] = field(default_factory=list)  # the jobs of the tasks found ended: shards to ingest


class Executor(Protocol):
    """Runs packs; writes one shard per job, and reports a pack ended once its shards are written."""

    where: str  # for people: "cpu", "cuda:0, cuda:1", a cluster
    pack_size: int  # most jobs per pack, the executor's choice where the user gave none
    notes: list[str]  # lines for people, e.g. why plan() chose a pack size
    detached: bool  # whether its tasks go on without the driver (so that a later driver attaches to them)
    submitted: list[str]  # the tasks this executor submitted that outlive it (a detached one's; else none)

    def plan(self, jobs: list[JobSpec]) -> list[Pack]:
        """Group jobs into packs as this executor runs them (the local one measures GPU memory)."""

    def submit(self, packs: list[Pack]) -> None:
        """Start (or queue) these packs."""

    def attach(self, task_ids: set[str]) -> None:
        """Watch tasks that an earlier driver of this kind submitted, as if submitted now (detached only)."""

    def poll(self, timeout: float) -> list[PackEnded]:
        """Wait up to `timeout` seconds for packs to end; returns those whose shards are written."""

    @property
    def in_flight(self) -> int:
        """Packs submitted or attached that have not ended yet."""

    def close(self) -> None:
        """Stop what this driver started and may not outlive it (local workers); detached tasks stay."""


class ExecutorKind(Protocol):
    """What the registry holds for each name a user types: how to make an executor, and what is known
    of the tasks that executors of this kind left in the store."""

    def create(self, store: Store, sweep: Sweep, data_root: str | None, pack_size: int | None,
               on_progress: Callable[[Progress], None], **options) -> Executor:
        """An executor for one run of `sweep`; ValueError for options it does not take, RuntimeError for a
        device or cluster it cannot use."""

    def live_tasks(self, store: Store, sweep: Sweep, write: bool) -> Tasks:
        """The sweep's recorded tasks brought up to date; with `write`, those that ended are closed and the
        jobs they left without a shard get failed ones. TasksUnavailable is handled inside: where the system
        cannot be asked, recorded tasks count as live (better wait than run a job twice)."""

    def cancel(self, store: Store, sweep: str) -> list[str]:
        """Cancel the sweep's tasks still queued or running; returns their ids."""


__all__ = ["Executor", "ExecutorKind", "LiveTask", "PackEnded", "Progress", "Tasks", "TasksUnavailable"]
