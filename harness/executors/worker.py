"""What runs a pack wherever it runs (a local worker process or a Slurm task): load the data, train,
write one shard per job. Shared by every executor."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from harness.db.ingest import write_shard
from harness.db.store import Store
from harness.disk import DiskFull, full_disk, is_full, remove_in_flight
from harness.shards import JobResult
from harness.spec import Pack
from harness.train import Progress, RunOptions, train_pack


@lru_cache(maxsize=1)
def run_context() -> dict:
    """Host, package versions and git commit: facts about the run, not the spec."""
    import numpy
    import torch

    import harness

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(harness.__file__).parent, text=True,
                                capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "harness": harness.__version__, "cuda": torch.version.cuda or ""}
    return {"host": socket.gethostname(), "versions": versions, "git_commit": commit}


@dataclass(frozen=True)
class PackEnded:
    """What an executor reports: a pack whose shards are written (the driver ingests them)."""

    job_ids: list[str]


def write_results(store: Store, results: list[JobResult], sweep: str) -> None:
    """One shard per job, with the facts about where and how it ran."""
    context = run_context()
    for result in results:
        shard = str(store.shard_path(result.job_id))
        write_shard(store, {**result.to_dict(), **context, "sweep": sweep, "shard": shard})


def fail_missing(store: Store, pack: Pack, error: str, device: str, sweep: str) -> list[str]:
    """Record `error` for each job of `pack` that has no shard (its worker or task died); returns the
    pack's job ids, ready to ingest."""
    missing = [job for job in pack.jobs if not store.shard_path(job.job_id).exists()]
    write_results(store, [JobResult(job.job_id, job.to_dict(), "failed", error=error, pack_id=pack.pack_id,
                                    plugins=job.plugin_record(),
                                    pack_size=len(pack.jobs), device=device) for job in missing], sweep)
    return [job.job_id for job in pack.jobs]


RESUME_EVERY = 5  # epochs between a pack's resumable states: a killed pack loses at most this many


def run_pack(pack: Pack, store: Store, sweep: str, device: str, data_root: str | None,
             progress: Callable[[Progress], None] = lambda event: None, save_every: int = RESUME_EVERY,
             options: RunOptions = RunOptions()) -> list[str]:
    """Train `pack` on `device` and write its shards; returns the job ids written. The pack keeps a
    resumable state in the store's resume/<pack_id>/ every `save_every` epochs, so a killed run of the
    same pack (a local rerun, a requeued Slurm task) goes on from it. `options`: how it runs (compiled,
    cuDNN determinism, threads), recorded in each shard. On a CPU without threads chosen (a Slurm task),
    harness.workers' rule chooses them here, on the cores this process may use, so that the same job
    gets the same threads, and so the same numbers, locally and on a node like this machine."""
    from harness.datasets import load_dataset

    first = pack.jobs[0]
    if device == "cpu" and not options.threads:  # a Slurm task, or a caller that did not choose: the same rule
        from harness.workers import choose

        options = replace(options, threads=choose(first, len(pack.jobs), packs=1).threads)
    changed = plugins_changed(pack)
    if changed:  # this node's plugin is not the code the jobs were planned with: their ids would lie
        return fail_missing(store, pack, changed, device, sweep)
    try:
        try:
            data = load_dataset(first.dataset, data_root, device, first.dtype)
        except Exception as exc:  # missing data fails the jobs, not the sweep
            if is_full(exc):
                raise
            return fail_missing(store, pack, f"{type(exc).__name__}: {exc}", device, sweep)
        results = train_pack(pack, data, device, progress, checkpoint_dir=store.job_dir,
                             resume_dir=store.resume_dir(pack.pack_id), save_every=save_every,
                             options=options)
        write_results(store, results, sweep)
    except Exception as exc:  # a full disk stops the sweep; the pack's jobs are unfinished, not failed
        if is_full(exc):
            raise full_disk(exc, f"writing the shards of pack {pack.pack_id}") from exc
        raise
    return [job.job_id for job in pack.jobs]


def plugins_changed(pack: Pack) -> str:
    """Why this process cannot train the pack's plugin jobs as planned (a Slurm node without the plugin, or
    with other code of it), in one line; '' where every plugin is installed here as the driver saw it."""
    from harness.plugins import is_current

    for job in pack.jobs:
        record = job.plugin_record()
        if record and not is_current(record):
            used = ", ".join(f"{r['group']} '{r['name']}' of {r['distribution']} {r['version']} (source "
                             f"{r['source'][:12]})" for r in record.values())
            return (f"the plugin code on {socket.gethostname()} is not what the job was planned with: {used}; "
                    "install the same version of the plugin in every environment that runs jobs")
    return ""


def _die_with_parent(parent: int) -> None:
    """Have Linux SIGKILL this process the moment its driver dies (PR_SET_PDEATHSIG), so that no orphan
    trains a pack unsupervised; elsewhere the checks in worker_main catch it within a second."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def worker_main(device: str, store_path: str, sweep: str, data_root: str | None, tasks, events,
                parent: int | None = None, options: RunOptions = RunOptions(), save_every: int = RESUME_EVERY) -> None:
    """A local worker process: take packs until None, report progress, exit when the driver is gone."""
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    signal.signal(signal.SIGTERM, _stopped)  # the driver's close(): no half-written file stays
    parent = parent or os.getppid()
    _die_with_parent(parent)
    store = Store(store_path)

    def report(event: Progress) -> None:
        if os.getppid() != parent:  # the driver died (e.g. SIGKILL): stop, its rerun will redo this pack
            os._exit(1)
        events.put(("progress", event))

    while True:
        try:
            pack = tasks.get(timeout=1.0)
        except queue.Empty:  # waiting for work: make sure there is still someone to give it
            if os.getppid() != parent:
                os._exit(1)
            continue
        if pack is None:
            return
        if isinstance(pack, tuple):  # (pack, how it runs): on a CPU each pack brings its threads
            pack, options = pack
        try:
            ids = run_pack(pack, store, sweep, device, data_root, report, save_every, options)
        except DiskFull as exc:  # the driver stops the sweep and then this worker; its jobs stay unfinished
            events.put(("disk_full", (pack.jobs[0].job_id, str(exc))))
            continue
        events.put(("pack_done", ids))


def _stopped(signum, frame) -> None:
    """SIGTERM (the driver's close()): remove the files half-written now and exit at once. Nothing is raised
    from the handler: CPython 3.11 lets an exception raised there at a loop's `continue` escape every `try`."""
    remove_in_flight()
    os._exit(1)
