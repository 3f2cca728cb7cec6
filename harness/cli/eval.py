"""`harness eval`: compute metrics on stored checkpoints, without retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.common import (
    DEFAULT_STORE,
    DataRootOption,
    StoreOption,
    console,
    data_root_str,
    fail,
    load_sweep_file,
    plain,
)
from harness.db.store import Store, StoreUnavailable, StoreWriteError
from harness.metrics.registry import METRICS
from harness.plugins import PluginError


def evaluate(metric: Annotated[list[str], typer.Option(
                 "--metric", "-m", help=f"A metric to compute (repeatable): {', '.join(METRICS)}.")],
             sweep_file: Annotated[Path | None, typer.Argument(
                 help="Evaluate this sweep's jobs (default: every finished job in the store).",
                 show_default=False)] = None,
             store: StoreOption = DEFAULT_STORE,
             force: Annotated[bool, typer.Option("--force", help="Compute again where the store already has "
                                                 "the metric at its current version.")] = False,
             all_versions: Annotated[bool, typer.Option("--all-versions", help="Also evaluate jobs of older "
                                                        "numerics versions.")] = False,
             device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
             data_root: DataRootOption = None) -> None:
    """Compute metrics on the stored checkpoints of finished jobs and add them to the store.

    Example: harness eval --metric mig --metric kim_mnih sweeps/independence.toml --store runs/harness.duckdb

    Each value is stored with its metric's version; a job that already has a metric at the current
    version is skipped unless --force. Jobs whose data lack what a metric needs (e.g. factors for
    kim_mnih) are reported and left alone.
    """
    from harness.evaluation import evaluate_jobs, to_evaluate

    unknown = [m for m in metric if m not in METRICS]
    if unknown:
        fail(f"--metric: unknown metric '{unknown[0]}'; known: {', '.join(METRICS)}", 2)
    for name in metric:  # a plugin metric that does not load: one line, before any job is touched
        try:
            METRICS[name]
        except PluginError as exc:
            fail(f"--metric: {exc}", 2)
    if device not in ("cpu", "cuda"):
        fail(f"--device: must be cpu or cuda, got '{device}'", 2)
    the_store = Store(store)
    if not the_store.path.exists():
        fail(f"no store at {store}; run a sweep first or pass --store PATH")
    sweep = load_sweep_file(sweep_file) if sweep_file is not None else None
    try:
        jobs, todo = to_evaluate(the_store, metric, sweep, force, all_versions)
    except StoreUnavailable as exc:
        fail(str(exc))
    console.print(f"{len(jobs)} finished jobs, {len(todo)} to evaluate for {', '.join(metric)}")
    failed = 0
    outcomes = evaluate_jobs(the_store, todo, metric, device, data_root_str(data_root))
    while True:
        try:
            outcome = next(outcomes)
        except StopIteration:
            break
        except StoreUnavailable as exc:  # held by another process: what is stored stays, the rest is not
            fail(f"{exc}; the jobs evaluated so far are stored, run the same command again for the rest")
        except StoreWriteError as exc:
            fail(f"{exc}; the jobs evaluated so far are stored")
        if outcome.error:
            failed += 1
            console.print(f"  {outcome.job_id}: failed: {plain(outcome.error)}", highlight=False)
            continue
        line = f"  {outcome.job_id}: stored {', '.join(outcome.stored) or 'nothing'}"
        if outcome.not_applicable:
            line += f" ({', '.join(outcome.not_applicable)}: not applicable to this job's data)"
        console.print(line, highlight=False)
    if failed:
        fail(f"{failed} of {len(todo)} jobs could not be evaluated")
