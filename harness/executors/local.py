"""The local executor: one worker process per visible CUDA device; on a CPU, as many workers as the rule of
harness.workers gives (tiny models: one single-threaded worker per core; large ones: fewer workers with
more threads each).

The driver hands out packs and relays progress events; it ingests each pack's shards as soon as the
pack ends, so a killed driver loses at most the packs in flight (and those resume from their last
saved state). Workers die with their driver, so nothing of a local run outlives it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.db.store import Store
from harness.disk import DiskFull
from harness.executors.base import Tasks
from harness.executors.worker import RESUME_EVERY, PackEnded, fail_missing, worker_main
from harness.spec import JobSpec, Pack, Sweep, pack_groups, plan_packs
from harness.train import Progress, RunOptions


def _cuda() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def _auto() -> list[str]:
    import torch

    return _cuda() if torch.cuda.is_available() else ["cpu"]


# --device: the name a user types -> the devices it means (RuntimeError where there are none)
DEVICES: dict[str, Callable[[], list[str]]] = {"auto": _auto, "cpu": lambda: ["cpu"], "cuda": _cuda}


def visible_devices(choice: str = "auto") -> list[str]:
    """'cuda:0', 'cuda:1', ... for every visible GPU, or ['cpu'] (see DEVICES)."""
    return DEVICES[choice]()


def default_pack_size(devices: list[str]) -> int:
    return 1 if devices == ["cpu"] else 8


@dataclass(frozen=True)
class CpuPlan:
    """Packs for a CPU, with the threads each pack trains with, how many workers run at once, and one line
    per kind of pack that says why (harness.workers)."""

    packs: list[Pack]
    threads: dict[str, int]  # pack id -> threads
    workers: int
    budget: int  # threads that may run at once: the most that one kind's workers x threads asks for
    notes: list[str]


def plan_cpu(jobs: list[JobSpec], pack_size: int, workers: int | None = None, threads: int | None = None) -> CpuPlan:
    """`jobs` in packs of `pack_size`, and workers and threads per kind of pack (harness.workers.choose;
    `workers` and `threads` are the user's overrides). With kinds that choose differently, as many workers
    run as the kind that asks for the most; a pack waits until its threads are free (LocalExecutor)."""
    from harness.workers import choose

    packs, chosen, notes, most, budget = [], {}, [], 1, 1
    for group in pack_groups(jobs):
        group_packs = plan_packs(group, pack_size)
        choice = choose(group[0], len(group_packs[0].jobs), len(group_packs), workers=workers, threads=threads)
        chosen.update({pack.pack_id: choice.threads for pack in group_packs})
        most, budget = max(most, choice.workers), max(budget, choice.workers * choice.threads)
        note = f"{group[0].dataset.name} {group[0].arch}: {choice.why}"
        if note not in notes:  # kinds that differ only in what does not change the choice: one line
            notes.append(note)
        packs.extend(group_packs)
    return CpuPlan(packs, chosen, most, budget, notes)


class LocalExecutor:
    """Packs go to one worker process per device, a pack at a time each. A worker that dies (segfault,
    out of memory) fails its pack's jobs and is replaced; the sweep goes on."""

    detached = False  # workers die with their driver: there is never a task to attach to

    def __init__(self, store: Store, sweep: Sweep, devices: list[str], data_root: str | None, pack_size: int | None,
                 on_progress: Callable[[Progress], None] = lambda event: None, options: RunOptions = RunOptions(),
                 save_every: int = RESUME_EVERY, workers: int | None = None, threads: int | None = None):
        self.store, self.sweep, self.devices, self.data_root = store, sweep.name, devices, data_root
        self.cpu = devices == ["cpu"]
        self.workers, self.threads = workers, threads  # the user's overrides (CPU only)
        self._pack_threads: dict[str, int] = {}  # pack id -> threads, on a CPU
        self._budget = 1  # threads that may run at once, on a CPU
        self._slots = list(devices)  # one worker per slot: a device, or on a CPU "cpu#0", "cpu#1", ...
        self.on_progress, self.options, self.save_every = on_progress, options, save_every
        # on GPUs without --pack-size, plan() measures how many members fit (harness.packing)
        self.auto = pack_size is None and devices != ["cpu"]
        self.pack_size = pack_size or default_pack_size(devices)
        self.notes: list[str] = []
        self.where = ", ".join(devices)
        self._ctx = mp.get_context("spawn")
        self._events = self._ctx.Queue()
        self._pending: list[Pack] = []
        self._workers: dict[str, tuple] = {}  # slot -> (process, task queue, pack in flight or None)
        self.submitted: list[str] = []  # never grows: local packs are not tasks that outlive the driver

    @classmethod
    def create(cls, store: Store, sweep: Sweep, data_root: str | None, pack_size: int | None,
               on_progress: Callable[[Progress], None] = lambda event: None, device: str = "auto",
               run_options: RunOptions = RunOptions(), save_every: int = RESUME_EVERY, workers: int | None = None,
               threads: int | None = None, **options) -> LocalExecutor:
        """Raises ValueError for options it does not take and RuntimeError for a device it cannot use.
        `workers` and `threads` override the CPU's rule (harness.workers); on GPUs they are refused."""
        if options:
            raise ValueError(f"the local executor takes no {', '.join(sorted(options))} (those are for slurm)")
        devices = visible_devices(device)
        if (workers or threads) and devices != ["cpu"]:
            raise ValueError("--workers and --threads are for the CPU (on GPUs: one worker per device)")
        for name, value in (("workers", workers), ("threads", threads)):
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, not {value}")
        return cls(store, sweep, devices, data_root, pack_size, on_progress, run_options, save_every, workers, threads)

    @classmethod
    def live_tasks(cls, store: Store, sweep: Sweep, write: bool) -> Tasks:
        """None: a local run leaves no task behind."""
        return Tasks()

    @classmethod
    def cancel(cls, store: Store, sweep: str) -> list[str]:
        return []

    def attach(self, task_ids: set[str]) -> None:
        """Nothing to attach to: local packs never outlive their driver."""

    def plan(self, jobs: list[JobSpec]) -> list[Pack]:
        """Packs of `jobs`: of --pack-size, or on GPUs without it as many members as one GPU's free memory
        holds, measured per kind of pack (one training step at 1 and 2 members; harness.packing). The
        reasons are kept in `notes`. On a CPU, each kind of pack gets its threads and the executor its number of
        workers (plan_cpu)."""
        if self.cpu and jobs:
            planned = plan_cpu(jobs, self.pack_size, self.workers, self.threads)
            self._pack_threads.update(planned.threads)
            self._slots = [f"cpu#{i}" for i in range(planned.workers)]
            self._budget = planned.budget
            self.notes.extend(planned.notes)
            self.where = f"cpu ({planned.workers} worker{'s' if planned.workers > 1 else ''})"
            return planned.packs
        if not self.auto or not jobs:
            return plan_packs(jobs, self.pack_size)
        from harness.datasets import load_dataset
        from harness.packing import choose_pack_size

        packs = []
        for group in pack_groups(jobs):
            try:
                data = load_dataset(group[0].dataset, self.data_root, self.devices[0], group[0].dtype)
                size, why = choose_pack_size(group, data, self.devices[0])
                del data
            except Exception as exc:  # measuring must not stop a sweep: fall back to the fixed default
                size, why = self.pack_size, f"pack size {self.pack_size} (measuring failed: {exc})"
            self.notes.append(f"{group[0].dataset.name} {group[0].arch}: {why}")
            packs.extend(plan_packs(group, size))
        return packs

    @property
    def in_flight(self) -> int:
        return len(self._pending) + sum(1 for _, _, pack in self._workers.values() if pack is not None)

    def submit(self, packs: list[Pack]) -> None:
        self._pending.extend(packs)
        for slot in self._slots:
            if not self._pending:
                break
            if slot not in self._workers:
                self._workers[slot] = (*self._start(slot), None)
            if self._workers[slot][2] is None:
                self._hand_out(slot)

    def poll(self, timeout: float) -> list[PackEnded]:
        """Wait up to `timeout` seconds for packs to end; returns early, with what ended so far, once it has
        relayed progress events, so that whoever watches sees them at once."""
        ended: list[PackEnded] = []
        relayed = False
        deadline = time.monotonic() + timeout
        while not ended and self.in_flight:
            try:
                wait = 0.0 if relayed else max(0.05, min(1.0, deadline - time.monotonic()))
                kind, payload = self._events.get(timeout=wait) if wait else self._events.get_nowait()
            except queue.Empty:
                ended.extend(self._reap())
                if relayed or time.monotonic() >= deadline:
                    break
                continue
            if kind == "progress":
                self.on_progress(payload)
                relayed = True
            elif kind == "disk_full":  # stop here: drive() closes the workers; nothing is marked failed
                raise DiskFull(payload[1])
            elif kind == "pack_done":
                slot = next(d for d, (_, _, p) in self._workers.items()
                            if p is not None and p.jobs[0].job_id == payload[0])
                self._workers[slot] = (*self._workers[slot][:2], None)
                self._hand_out(slot)
                for idle in [d for d, (_, _, p) in self._workers.items() if p is None and d != slot]:
                    self._hand_out(idle)  # a pack that waited for threads may fit now
                ended.append(PackEnded(payload))
        return ended

    def close(self) -> None:
        for slot, (process, tasks, _) in self._workers.items():
            if process.is_alive():
                tasks.put(None)
                process.terminate()
            self._workers[slot] = (process, tasks, None)
        for process, _, _ in self._workers.values():
            process.join(timeout=5)
        self._workers.clear()

    def _start(self, slot: str):
        tasks = self._ctx.Queue()
        process = self._ctx.Process(target=worker_main, daemon=True,
                                    args=(_device(slot), str(self.store.path), self.sweep, self.data_root, tasks,
                                          self._events, os.getpid(), self.options, self.save_every))
        process.start()
        return process, tasks

    def _busy_threads(self) -> int:
        return sum(self._pack_threads.get(pack.pack_id, 0) for _, _, pack in self._workers.values() if pack is not None)

    def _hand_out(self, slot: str) -> None:
        """Give the slot's worker the next pack, or, where none is left, tell it to exit. On a CPU a pack waits
        (the worker stays idle) while the threads of the packs in flight and its own would exceed the cores
        that the rule planned for."""
        process, tasks, _ = self._workers[slot]
        if not self._pending:
            tasks.put(None)  # nothing left for it: the worker exits
            del self._workers[slot]
            return
        pack = self._pending[0]
        options = self.options
        if self.cpu:
            threads = self._pack_threads.get(pack.pack_id, 1)
            if self._busy_threads() and self._busy_threads() + threads > self._budget:
                return  # waits for threads: handed out when a pack ends
            options = replace(options, threads=threads, workers=len(self._slots))
        self._pending.pop(0)
        tasks.put((pack, options))
        self._workers[slot] = (process, tasks, pack)

    def _reap(self) -> list[PackEnded]:
        """Fail the packs of workers that died, and replace those workers."""
        ended = []
        for slot, (process, _tasks, pack) in list(self._workers.items()):
            if pack is not None and not process.is_alive():
                device = _device(slot)
                error = f"worker process on {device} died (exit code {process.exitcode})"
                ids = fail_missing(self.store, pack, error, device, self.sweep)
                for job_id in ids:
                    self.on_progress(Progress("end", job_id))
                self._workers[slot] = (*self._start(slot), None)
                self._hand_out(slot)
                ended.append(PackEnded(ids))
        return ended


def _device(slot: str) -> str:
    """The device of a worker slot: 'cpu#1' -> 'cpu', 'cuda:0' -> 'cuda:0'."""
    return slot.split("#")[0]
