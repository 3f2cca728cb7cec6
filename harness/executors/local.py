"""The local executor: one worker process per visible CUDA device, or one for the CPU.

The driver (the CLI process) hands out packs, relays progress events, and ingests each pack's
shards as soon as the pack ends, so a killed driver loses at most the packs in flight.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterator

from harness.db.store import Store
from harness.executors.worker import PackEnded, fail_missing, worker_main
from harness.spec import Pack
from harness.train import Progress


def visible_devices(choice: str = "auto") -> list[str]:
    """'cuda:0', 'cuda:1', ... for every visible GPU, or ['cpu']."""
    import torch

    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return ["cpu"]
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def run_local(packs: list[Pack], store: Store, sweep: str, devices: list[str], data_root: str | None,
              on_progress: Callable[[Progress], None] = lambda event: None) -> Iterator[PackEnded]:
    """Run `packs` on `devices`; yields after each pack's shards are ingested. A worker that dies
    (segfault, out of memory) fails its pack's jobs and is replaced; the sweep goes on."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    pending = list(packs)
    workers: dict[str, tuple] = {}  # device -> (process, task queue, pack in flight)

    def start(device: str):
        tasks = ctx.Queue()
        process = ctx.Process(target=worker_main, daemon=True,
                              args=(device, str(store.path), sweep, data_root, tasks, events, os.getpid()))
        process.start()
        return process, tasks

    def hand_out(device: str) -> None:
        process, tasks, _ = workers[device]
        if pending:
            pack = pending.pop(0)
            tasks.put(pack)
            workers[device] = (process, tasks, pack)
        else:
            tasks.put(None)
            workers[device] = (process, tasks, None)

    try:
        for device in devices[:max(1, len(packs))]:
            workers[device] = (*start(device), None)
            hand_out(device)
        while any(pack is not None for _, _, pack in workers.values()):
            try:
                kind, payload = events.get(timeout=1.0)
            except queue.Empty:
                if store.deferred:  # the database was held by another process: try again now
                    store.ingest_or_defer([])
                for device, (process, _tasks, pack) in list(workers.items()):
                    if pack is not None and not process.is_alive():
                        error = f"worker process on {device} died (exit code {process.exitcode})"
                        ids = fail_missing(store, pack, error, device, sweep)
                        store.ingest_or_defer(ids)
                        workers[device] = (*start(device), None)
                        hand_out(device)
                        yield PackEnded(ids)
                continue
            if kind == "progress":
                on_progress(payload)
            elif kind == "pack_done":
                store.ingest_or_defer(payload)
                device = next(d for d, (_, _, p) in workers.items()
                              if p is not None and p.jobs[0].job_id == payload[0])
                hand_out(device)
                yield PackEnded(payload)
        if store.deferred:
            store.ingest_or_defer([])
    finally:
        for process, _tasks, _ in workers.values():
            if process.is_alive():
                process.terminate()
        for process, _, _ in workers.values():
            process.join(timeout=5)
