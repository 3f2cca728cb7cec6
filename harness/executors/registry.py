"""The executors, by the name a user types (`harness sweep run --executor NAME`): each a class with
`create`, `live_tasks` and `cancel` (harness.executors.base.ExecutorKind)."""

from __future__ import annotations

from harness.executors.base import ExecutorKind
from harness.executors.local import LocalExecutor
from harness.executors.slurm import SlurmExecutor

EXECUTORS: dict[str, ExecutorKind] = {"local": LocalExecutor, "slurm": SlurmExecutor}
