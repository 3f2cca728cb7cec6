"""The Slurm executor: each pack is one task of a submitit job array.

Tasks run `run_pack` on their node (its GPU if it has one) and write shards to the shared run
folder next to the store; the driver waits, ingests each pack's shards as its task ends, and
records a failed shard for every job whose task died without writing one. A driver that was
stopped can be re-run: finished shards are ingested and skipped, the rest resubmitted.

Nothing here schedules work: Slurm does. `cluster="local"` (submitit's local executor) runs the
same path on this machine, for tests and for trying a sweep before submitting it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from harness.db.store import Store
from harness.executors.worker import PackEnded, fail_missing, run_pack
from harness.spec import Pack
from harness.train import Progress


def run_pack_task(pack: Pack, store_path: str, sweep: str, data_root: str | None) -> list[str]:
    """What one array task runs: the node's first GPU if it has one, else its CPUs."""
    import torch

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return run_pack(pack, Store(store_path), sweep, device, data_root)


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
    """A submitit executor logging to runs/slurm/<sweep>/; raises ValueError on an unknown parameter."""
    import submitit

    executor = submitit.AutoExecutor(folder=store.root / "slurm" / sweep, cluster=cluster)
    executor.update_parameters(name=f"harness-{sweep}", **parameters)
    return executor


def run_slurm(packs: list[Pack], store: Store, sweep: str, data_root: str | None, executor,
              on_progress: Callable[[Progress], None] = lambda event: None,
              poll_seconds: float = 5.0) -> Iterator[PackEnded]:
    """Submit `packs` as one job array on `executor` and yield as each task's shards are ingested."""
    n = len(packs)
    tasks = executor.map_array(run_pack_task, packs, [str(store.path)] * n, [sweep] * n, [data_root] * n)
    waiting = dict(zip(range(n), tasks, strict=True))
    for i, task in waiting.items():
        for job in packs[i].jobs:
            on_progress(Progress("start", job.job_id, 0, job.epochs, status=f"slurm {task.job_id}"))
    while waiting:
        for i, task in list(waiting.items()):
            if not task.done():
                continue
            del waiting[i]
            # a task that died (time limit, node failure, out of memory) wrote no shards
            error = f"slurm task {task.job_id} ended in state {task.state} without a result"
            ids = fail_missing(store, packs[i], error, "slurm", sweep)
            store.ingest_or_defer(ids)
            for job_id in ids:
                on_progress(Progress("end", job_id))
            yield PackEnded(ids)
        if waiting:
            time.sleep(poll_seconds)
