"""Evaluation as its own stage: run registry metrics on stored checkpoints, without retraining.

For each job, the checkpoint (safetensors weights plus the JSON spec) is loaded into a one-member
model, the test split is encoded, and each asked metric is computed with the job's own random stream
for it (harness.streams). The values go into an evaluation shard beside the job's result
(jobs/<id>/eval/<metric>.json, harness.shards.Evaluation, written atomically: the truth that `db rebuild`
reads back) and, checked like any shard, into the database. No printing: the CLI draws the events this
yields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.checksums import sha256_file
from harness.db import jobs
from harness.db.ingest import Ingest, write_evaluation
from harness.db.store import Store
from harness.metrics.registry import METRICS, compute_metrics, encode_grid, encodings, needs_grid
from harness.numerics import NUMERICS_VERSION
from harness.shards import Evaluation, metric_records
from harness.spec import JobSpec, Sweep
from harness.streams import metric_generator
from harness.train import build_model


@dataclass(frozen=True)
class Evaluated:
    """One job's outcome: the metrics stored, those that do not apply to its data, or an error."""

    job_id: str
    stored: tuple[str, ...] = ()
    not_applicable: tuple[str, ...] = ()
    error: str = ""


def read_spec(store: Store, job_id: str) -> JobSpec:
    """The spec a job's checkpoint was saved with (jobs/<job_id>/spec.json)."""
    return JobSpec.from_dict(json.loads((store.job_dir(job_id) / "spec.json").read_text()))


class CheckpointDamaged(RuntimeError):
    """A checkpoint file whose bytes differ from those its job recorded (or that cannot be read)."""


def verify_checkpoint(store: Store, job_id: str) -> None:
    """Check model.safetensors and spec.json against the sha256 that the job's shard recorded when it saved
    them; raises CheckpointDamaged naming the file. Jobs from before checksums (none recorded) pass."""
    try:
        artifacts = json.loads(store.shard_path(job_id).read_text()).get("artifacts", [])
    except (OSError, ValueError, AttributeError):
        return  # no readable shard: nothing to check against (the store's own checks report the shard)
    for artifact in artifacts if isinstance(artifacts, list) else []:
        expected = artifact.get("sha256") if isinstance(artifact, dict) else None
        if not expected:
            continue
        path = store.job_dir(job_id) / Path(str(artifact.get("path", ""))).name
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise CheckpointDamaged(f"{path} cannot be read ({exc.strerror or exc})") from None
        if actual != expected:
            raise CheckpointDamaged(f"{path} does not match the sha256 its job recorded: changed since training")


def load_checkpoint(store: Store, job_id: str, data, device: str, spec: JobSpec | None = None):
    """(spec, one-member model in eval mode) from jobs/<job_id>/spec.json (unless given) and
    model.safetensors, after checking both against the sha256 the job recorded (CheckpointDamaged)."""
    from safetensors.torch import load_file

    folder = store.job_dir(job_id)
    verify_checkpoint(store, job_id)
    spec = spec or read_spec(store, job_id)
    model = build_model((spec,), data, torch.device(device))
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    return spec, model.eval()


@torch.no_grad()
def posteriors(model, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) posterior means and standard deviations of a one-member model over x (N, *shape)."""
    parts = [model.encoder(x[start:start + batch].unsqueeze(0)) for start in range(0, len(x), batch)]
    return torch.cat([loc[0] for loc, _ in parts]), torch.cat([scale[0] for _, scale in parts])


def evaluate_jobs(store: Store, job_ids: list[str], metrics: list[str], device: str = "cpu",
                  data_root: str | None = None) -> Iterator[Evaluated]:
    """Compute `metrics` on each job's checkpoint and store them; yields one Evaluated per job."""
    from harness.datasets import load_dataset

    loaded: dict[str, object] = {}
    for job_id in job_ids:
        try:
            spec = read_spec(store, job_id)
            key = json.dumps([spec.dataset.to_dict(), spec.dtype], sort_keys=True)
            if key not in loaded:
                loaded = {key: load_dataset(spec.dataset, data_root, device, spec.dtype)}  # one dataset at a time
            data = loaded[key]
            spec, model = load_checkpoint(store, job_id, data, device, spec)
            prior = spec.prior.to_dict()
            encs = {"test": encodings(data, "test", *posteriors(model, data.test_x, spec.batch_size), prior)}
            if data.grid is not None and needs_grid(metrics):
                with torch.no_grad():
                    loc, scale, factors = encode_grid(data, lambda x, encoder=model.encoder: [
                        t[0] for t in encoder(x.to(device).unsqueeze(0))])
                encs["grid"] = encodings(data, "grid", loc, scale, prior, factors)
            outputs = compute_metrics(encs, metrics, lambda name, seed=spec.seed: metric_generator(seed, name))
        except Exception as exc:  # one job's missing checkpoint or data never stops the others
            yield Evaluated(job_id, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        paths = []
        for metric, output in outputs:
            values, rows, points = metric_records([(metric, output)])
            paths.append(write_evaluation(store, Evaluation(job_id, metric.name, metric.version, time.time(),
                                                            values, rows, points).to_dict()))
        ingest = Ingest(store)
        with store.connect() as con:
            ingest.evaluations(con, paths)
        set_aside = {aside.shard.stem: aside for aside in ingest.quarantined}
        done = tuple(m.name for m, _ in outputs if m.name not in set_aside)
        yield Evaluated(job_id, done, tuple(name for name in metrics if name not in done and name not in set_aside),
                        "; ".join(f"its {name} shard was set aside ({a.reason}, see {a.target})"
                                  for name, a in set_aside.items()))


def missing(store: Store, job_ids: list[str], metrics: list[str]) -> list[str]:
    """The jobs among `job_ids` lacking one of `metrics` at its current version (and not already known
    not to apply: a metric that does not apply leaves nothing, so such jobs are tried again)."""
    have = jobs.metric_versions(store, job_ids)
    return [j for j in job_ids if any(have.get((j, name)) != METRICS[name].version for name in metrics)]


def to_evaluate(store: Store, metrics: list[str], sweep: Sweep | None = None, force: bool = False,
                all_versions: bool = False) -> tuple[list[str], list[str]]:
    """(the finished jobs, those of them to evaluate now): the sweep's finished jobs, or every finished job
    of the current numerics version (of every version with `all_versions`); without `force`, only those
    lacking one of `metrics` at its current version."""
    store.ensure_current()
    if sweep is not None:
        statuses = jobs.statuses(store, [j.job_id for j in sweep.jobs])
        finished = [j.job_id for j in sweep.jobs if statuses.get(j.job_id) == "done"]
    else:
        finished = jobs.done(store, None if all_versions else NUMERICS_VERSION)
    return finished, finished if force else missing(store, finished, metrics)
