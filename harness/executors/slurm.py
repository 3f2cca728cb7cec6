"""The Slurm executor: each pack is one task of a submitit job array.

Tasks run `run_pack` on their node (its GPU if it has one) and write shards to the shared run
folder next to the store. Every task the driver submits is recorded in the store's `submissions`
table with Slurm's id, so the driver may leave: run again (or `harness sweep status`), it asks Slurm
(squeue; sacct for the end state where the cluster keeps accounting) about them (`live_tasks`),
re-attaches to the tasks still queued or running, ingests the shards of those that ended, and marks
failed the jobs of tasks that ended without one. Nothing is submitted twice.

A task is a submitit `Checkpointable`: on a time limit or a preemption Slurm signals it, submitit
requeues it, and the pack goes on from its last resumable state (harness.resume) under the same id.

Nothing here schedules work: Slurm does. `cluster="local"` (submitit's local executor) runs the
same path on this machine, for trying a sweep before submitting it; its task ids are process ids.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

from harness.db import submissions
from harness.db.claims import process_running
from harness.db.ingest import shard_statuses
from harness.db.store import Store
from harness.executors.base import LiveTask, Tasks, TasksUnavailable
from harness.executors.worker import RESUME_EVERY, PackEnded, fail_missing, run_pack
from harness.spec import Pack, Sweep, plan_packs
from harness.train import Progress, RunOptions

try:  # the task must be Checkpointable for submitit to requeue it; submitit is optional on a GPU node
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - only where submitit is not installed
    Checkpointable = object  # type: ignore[assignment,misc]


KIND = "slurm"  # the registry's name for this executor, on every task it records


class SlurmUnavailable(TasksUnavailable):
    """squeue could not be asked (not installed, or the controller does not answer)."""


class PackTask(Checkpointable):
    """What one array task runs: its pack on the node's first GPU if it has one, else its CPUs. On a
    time limit or preemption submitit calls `checkpoint`, which resubmits the same call: the pack's own
    resumable state (saved every `save_every` epochs) is what carries the progress over."""

    def __call__(self, pack: Pack, store_path: str, sweep: str, data_root: str | None,
                 save_every: int = RESUME_EVERY, options: RunOptions = RunOptions()) -> list[str]:
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        return run_pack(pack, Store(store_path), sweep, device, data_root, save_every=save_every, options=options)


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """['slurm_partition=gpu', 'timeout_min=240'] -> {'slurm_partition': 'gpu', 'timeout_min': 240}."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm takes KEY=VALUE, got '{pair}'")
        value: Any = raw
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
        parameters[key.strip()] = value
    return parameters


def submitit_executor(store: Store, sweep: str, parameters: dict[str, Any], cluster: str | None):
    """A submitit executor logging to runs/slurm/<sweep>/; raises ValueError on an unknown parameter.
    `slurm_max_num_timeout` (how often a task may be requeued after a time limit; submitit's default 3)
    goes to the constructor, the rest to update_parameters."""
    import submitit

    parameters = dict(parameters)
    extra = {}
    if "slurm_max_num_timeout" in parameters:
        extra["slurm_max_num_timeout"] = int(parameters.pop("slurm_max_num_timeout"))
    executor = submitit.AutoExecutor(folder=store.root / "slurm" / sweep, cluster=cluster, **extra)
    executor.update_parameters(name=f"harness-{sweep}", **parameters)
    return executor


# -- asking the cluster -----------------------------------------------------------------------------

def _run(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        raise SlurmUnavailable(f"{command[0]} is not installed here")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SlurmUnavailable(f"{command[0]} did not answer in {timeout:.0f} s") from exc
    return done


def queued(cluster: str, task_ids: Iterable[str]) -> dict[str, str]:
    """task id -> state for the tasks that are still queued or running (absent: ended). Slurm: this
    user's jobs in squeue, one line per array task; submitit's local cluster: processes still alive.
    Raises SlurmUnavailable when Slurm cannot be asked."""
    wanted = set(task_ids)
    if not wanted:
        return {}
    if cluster == "local":
        return {task: "RUNNING" for task in wanted if _alive(task.split("_")[0])}
    done = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"])
    if done.returncode != 0:
        raise SlurmUnavailable(f"squeue failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    states = {}
    for line in done.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task in wanted:
            states[task] = state
    return states


def end_states(task_ids: Iterable[str]) -> dict[str, str]:
    """task id -> Slurm's final state (COMPLETED, TIMEOUT, CANCELLED, ...) where sacct keeps accounting;
    empty where it does not."""
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    try:
        done = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State"])
    except SlurmUnavailable:
        return {}
    if done.returncode != 0:
        return {}
    states = {}
    for line in done.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task in ids:
            states[task] = state.split()[0] if state else ""
    return states


def _alive(pid: str) -> bool:
    try:
        return process_running(int(pid))
    except ValueError:
        return False


def close_ended(store: Store, sweep: str, ended: list[dict[str, Any]], specs: dict[str, Any]) -> tuple[list, list]:
    """Mark failed the jobs that tasks which left the queue left without a shard, and mark the tasks
    ended. Returns (the jobs of those tasks, whose shards are now to be ingested; ids of the tasks that
    left jobs without a shard). Tasks no longer open in the store were closed elsewhere: a cancelled
    task's jobs stay without a result (the next run runs them), and a task that `sweep status` closed is
    not closed twice."""
    if not ended:
        return [], []
    still_open = {s["task_id"] for s in submissions.still_open(store, sweep)}
    finals = end_states(s["task_id"] for s in ended if s["cluster"] != "local")
    dead, ids = [], []
    for sub in ended:
        task, job_ids = sub["task_id"], list(sub["job_ids"])
        ids.extend(job_ids)
        if task not in still_open:  # closed elsewhere: `sweep cancel` (its jobs stay pending), or `sweep status`
            continue
        jobs = tuple(specs[j] for j in job_ids if j in specs)
        missing = [j for j in jobs if not store.shard_path(j.job_id).exists()]
        if missing:
            final = finals.get(task)
            how = f"in state {final}" if final else "(Slurm keeps no accounting here to say how)"
            fail_missing(store, Pack(jobs), f"slurm task {task} ended {how} without a result", "slurm", sweep)
            dead.append(task)
    for sub in ended:
        if sub["task_id"] in still_open:
            submissions.close(store, [sub["task_id"]], "ended", finals.get(sub["task_id"], ""))
    return ids, dead


def reconcile(store: Store, sweep: Sweep, write: bool) -> Tasks:
    """Bring the sweep's recorded cluster tasks up to date: the jobs of tasks still queued or running,
    the tasks that died without shards, and the jobs of the tasks that ended (their shards to ingest).
    Without `write` nothing changes (tasks that ended are left for the next `sweep run`). Where Slurm
    cannot be asked, every recorded task counts as still queued: better wait than run a job twice."""
    subs = submissions.still_open(store, sweep.name)
    if not subs:
        return Tasks()
    live: dict[str, LiveTask] = {}
    ended = []
    for cluster in sorted({s["cluster"] for s in subs}):
        mine = [s for s in subs if s["cluster"] == cluster]
        try:
            states = queued(cluster, (s["task_id"] for s in mine))
        except SlurmUnavailable as exc:
            states = {s["task_id"]: f"unknown: {exc}" for s in mine}
        for sub in mine:
            if sub["task_id"] in states:
                live.update(dict.fromkeys(sub["job_ids"], LiveTask(sub["task_id"], states[sub["task_id"]], KIND)))
            else:
                ended.append(sub)
    if not write:
        return Tasks(live)
    ids, dead = close_ended(store, sweep.name, ended, {j.job_id: j for j in sweep.jobs})
    return Tasks(live, dead, ids)


def cancel(store: Store, sweep: str) -> list[str]:
    """scancel the sweep's recorded tasks that are still queued or running; returns their ids. Their
    jobs get no result: the next `sweep run` runs them (from their last resumable state)."""
    subs = submissions.still_open(store, sweep)
    cancelled = []
    for cluster in sorted({s["cluster"] for s in subs}):
        mine = [s["task_id"] for s in subs if s["cluster"] == cluster]
        live = queued(cluster, mine)
        if cluster == "local":
            for task in live:
                os.kill(int(task.split("_")[0]), 15)
        elif live:
            done = _run(["scancel", *sorted(live)])
            if done.returncode != 0:
                raise SlurmUnavailable(f"scancel failed: {done.stderr.strip()}")
        cancelled.extend(sorted(live))
    submissions.close(store, cancelled, "cancelled", "harness sweep cancel")
    return cancelled


# -- the executor -----------------------------------------------------------------------------------

class SlurmExecutor:
    """Packs become the tasks of one job array per `submit`; `attach` adds tasks an earlier driver
    submitted. `poll` asks squeue which of them left the queue and closes those."""

    detached = True  # tasks outlive the driver on purpose: a driver run again re-attaches to them

    def __init__(self, store: Store, sweep: Sweep, data_root: str | None, pack_size: int, executor, cluster: str,
                 on_progress: Callable[[Progress], None] = lambda event: None, poll_seconds: float = 5.0,
                 save_every: int = RESUME_EVERY, options: RunOptions = RunOptions()):
        self.store, self.sweep, self.data_root, self.pack_size = store, sweep, data_root, pack_size
        self.executor, self.cluster, self.on_progress = executor, cluster, on_progress
        self.poll_seconds, self.save_every, self.options = poll_seconds, save_every, options
        self.notes: list[str] = []
        self.where = f"slurm ({cluster}, submitit)" if cluster != "local" else "submitit's local cluster"
        self.submitted: list[str] = []  # the tasks this executor submitted
        self._watching: dict[str, list[str]] = {}  # task id -> its job ids
        self._specs = {j.job_id: j for j in sweep.jobs}

    @classmethod
    def create(cls, store: Store, sweep: Sweep, data_root: str | None, pack_size: int | None,
               on_progress: Callable[[Progress], None] = lambda event: None, parameters: list[str] = (),
               cluster: str | None = None, save_every: int = RESUME_EVERY, run_options: RunOptions = RunOptions(),
               **options) -> SlurmExecutor:
        """Raises ValueError for an unknown submitit parameter or cluster."""
        if options:
            raise ValueError(f"the slurm executor takes no {', '.join(sorted(options))}")
        executor = submitit_executor(store, sweep.name, parse_parameters(list(parameters)), cluster)
        return cls(store, sweep, data_root, pack_size or 8, executor, executor.cluster, on_progress,
                   save_every=save_every, options=run_options)

    @classmethod
    def live_tasks(cls, store: Store, sweep: Sweep, write: bool) -> Tasks:
        return reconcile(store, sweep, write)

    @classmethod
    def cancel(cls, store: Store, sweep: str) -> list[str]:
        return cancel(store, sweep)

    def plan(self, jobs: list) -> list[Pack]:
        """Packs of at most pack_size (the nodes' memory is not known from here: --pack-size, default 8)."""
        return plan_packs(jobs, self.pack_size)

    @property
    def in_flight(self) -> int:
        return len(self._watching)

    def attach(self, task_ids: set[str]) -> None:
        """Watch tasks an earlier driver submitted (live_tasks' `live`)."""
        for sub in submissions.still_open(self.store, self.sweep.name):
            if sub["task_id"] in task_ids:
                self._watching[sub["task_id"]] = list(sub["job_ids"])
                for job_id in sub["job_ids"]:
                    spec = self._specs.get(job_id)
                    self.on_progress(Progress("start", job_id, 0, spec.epochs if spec else 0,
                                              status=f"slurm {sub['task_id']} (attached)"))

    def submit(self, packs: list[Pack]) -> None:
        n = len(packs)
        tasks = self.executor.map_array(PackTask(), packs, [str(self.store.path)] * n, [self.sweep.name] * n,
                                        [self.data_root] * n, [self.save_every] * n, [self.options] * n)
        records = [(str(task.job_id), pack.pack_id, [j.job_id for j in pack.jobs])
                   for task, pack in zip(tasks, packs, strict=True)]
        self.submitted.extend(task_id for task_id, _, _ in records)
        submissions.add(self.store, self.sweep.name, self.cluster, records)
        for task_id, _, job_ids in records:
            self._watching[task_id] = job_ids
            for job_id in job_ids:
                self.on_progress(Progress("start", job_id, 0, self._specs[job_id].epochs, status=f"slurm {task_id}"))

    def poll(self, timeout: float) -> list[PackEnded]:
        time.sleep(min(timeout, self.poll_seconds))
        try:
            live = queued(self.cluster, self._watching)
        except SlurmUnavailable:
            return []  # ask again at the next poll
        ended_ids = [task for task in self._watching if task not in live]
        if not ended_ids:
            return []
        subs = [{"task_id": task, "cluster": self.cluster, "job_ids": self._watching.pop(task)} for task in ended_ids]
        close_ended(self.store, self.sweep.name, subs, self._specs)
        statuses = shard_statuses(self.store, [j for sub in subs for j in sub["job_ids"]])
        ended = []
        for sub in subs:
            for job_id in sub["job_ids"]:
                self.on_progress(Progress("end", job_id, status=f"{statuses.get(job_id, 'no result')} (slurm task "
                                                                f"{sub['task_id']})"))
            ended.append(PackEnded(sub["job_ids"]))
        return ended

    def close(self) -> None:
        """Cluster tasks outlive the driver on purpose: a driver run again re-attaches to them."""
