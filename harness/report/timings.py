"""Training speed from real sweeps: seconds per model-epoch and samples per second, by device, pack size,
CPU workers x threads and commit (`harness report timings`; the `timings` figure draws the same numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.db import queries


@dataclass(frozen=True)
class Timing:
    """The medians over one sweep's finished jobs that ran on one device, in packs of one size, with as many CPU
    workers and threads each (0: not recorded, as on a GPU), at one commit."""

    sweep: str
    device: str
    pack_size: int
    workers: int
    threads: int
    commit: str  # short; "" where unknown
    jobs: int
    seconds_per_model_epoch: float  # a pack's epoch trains pack_size models
    samples_per_second: float


def timings(store: str | Path, sweeps: list[str]) -> list[Timing]:
    """One Timing per sweep, device, pack size, workers, threads and commit, in that order (sweeps as given)."""
    found = []
    for name in sweeps:
        frame = queries.epoch_timings(store, name)
        if frame.is_empty():
            continue
        keys = ["device", "pack_size", "workers", "threads", "git_commit"]
        for (device, pack, workers, threads, commit), group in frame.group_by(keys, maintain_order=True):
            found.append(Timing(name, device, pack, workers, threads, commit, group.height,
                                group["seconds_per_model_epoch"].median(), group["samples_per_second"].median()))
    return found
