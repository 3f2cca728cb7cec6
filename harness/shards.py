"""The shard formats: one typed home for what workers and `harness eval` write and the store reads.

A result shard is the JSON file jobs/<job_id>/result.json, the truth about one job's run (the database is
an index that `harness db rebuild` recreates from the shards). An evaluation shard,
jobs/<job_id>/eval/<metric>.json, holds one metric that `harness eval` computed later on the job's
checkpoint. Writers write the current version of each; the store reads every version it has known.
`read_shard` and `read_evaluation` check a shard against its format before anything of it is ingested, so
that one truncated, garbled or out-of-range shard is set aside with its path and reason instead of
blocking every `sweep run` and `db rebuild`. A shard's spec is read as it is, never validated again
against today's registries: an old shard must always rebuild.

Result shard versions: 1 (no "format" key): the first release; 2: adds "format", "numerics", "dim_stats",
"points" (a version-1 shard's "latent_stats" still ingests).
Evaluation shard versions: 1: job_id, metric, version, computed, metrics, dim_stats, points (the shards
before the format had a "format" key are this version).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.checksums import record_sha256
from harness.numerics import NUMERICS_VERSION

if TYPE_CHECKING:
    from harness.metrics.registry import Metric, MetricOutput

FORMAT_VERSION = 2
EVALUATION_FORMAT = 1
STATUSES = ("done", "failed", "diverged")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


@dataclass
class JobResult:
    """What one job produced; its shard is to_dict() plus the facts of the run (host, versions, commit)."""

    job_id: str
    spec: dict[str, Any]
    status: str  # "done" | "failed" | "diverged"
    epochs: list[dict[str, float]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {split, name, value, metric, version}
    dim_stats: list[dict[str, Any]] = field(default_factory=list)  # {split, metric, stat, dim, key, key_index, value}
    points: list[dict[str, Any]] = field(default_factory=list)  # {split, metric, idx, x, y, value, label, factor}
    error: str = ""
    failed_epoch: int | None = None
    started: float = 0.0
    finished: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_bytes: int = 0
    pack_id: str = ""
    pack_size: int = 1
    device: str = ""
    artifacts: list[dict[str, str]] = field(default_factory=list)
    numerics: int = NUMERICS_VERSION  # the computation that produced these numbers (harness.numerics)
    # how the pack ran (train.RunOptions and what came of them): compile, compiled, compile_error, deterministic
    run_options: dict[str, Any] = field(default_factory=dict)
    # field -> identity of the plugin it names (JobSpec.plugin_record): which code made these numbers
    plugins: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, shard: dict[str, Any]) -> JobResult:
        """The result in a checked shard of any known version (the facts of the run are left out)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in check_shard(shard).items() if k in known}
        return cls(**values, numerics=shard.get("numerics", 1)) if "numerics" not in values else cls(**values)


class ShardError(ValueError):
    """A shard that cannot be ingested; the message says why."""


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise ShardError(reason)


def _integer(value: Any, key: str, bounds: tuple[int, int] = INT32, optional: bool = False) -> None:
    if optional and value is None:
        return
    _require(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer, got {value!r}")
    _require(bounds[0] <= value <= bounds[1], f"{key} = {value} does not fit its column ({bounds[0]} to "
             f"{bounds[1]})")


def _number(value: Any, key: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    _require(isinstance(value, int | float) and not isinstance(value, bool), f"{key} must be a number, got {value!r}")


def check_shard(shard: Any, job_id: str | None = None) -> dict[str, Any]:
    """Return `shard` if it follows the format (any known version), else raise ShardError with the reason."""
    _require(isinstance(shard, dict), f"a shard is a JSON object, got {type(shard).__name__}")
    version = shard.get("format", 1)
    _require(version in (1, FORMAT_VERSION), f"unknown shard format {version!r} (this release reads 1 and "
             f"{FORMAT_VERSION})")
    for key in ("job_id", "spec", "status"):
        _require(key in shard, f"missing key '{key}'")
    _require(isinstance(shard["job_id"], str), "job_id must be a string")
    _require(job_id is None or shard["job_id"] == job_id, f"job_id {shard['job_id']!r} in the folder of {job_id}")
    _require(shard["status"] in STATUSES, f"status must be one of {', '.join(STATUSES)}, got {shard['status']!r}")
    _integer(shard.get("numerics", 1), "numerics")
    spec = shard["spec"]
    _require(isinstance(spec, dict), "spec must be an object")
    for key in ("dataset", "arch", "prior", "alpha", "beta", "latent_dim", "epochs", "batch_size", "lr", "seed"):
        _require(key in spec, f"spec lacks '{key}'")
    for key in ("latent_dim", "epochs", "batch_size"):
        _integer(spec[key], f"spec.{key}")
    _integer(spec["seed"], "spec.seed", INT64)
    for key in ("alpha", "beta", "lr"):
        _number(spec[key], f"spec.{key}")
    _integer(shard.get("failed_epoch"), "failed_epoch", optional=True)
    _integer(shard.get("pack_size", 1), "pack_size")
    _integer(shard.get("peak_memory_bytes"), "peak_memory_bytes", INT64, optional=True)
    for i, epoch in enumerate(shard.get("epochs", [])):
        _require(isinstance(epoch, dict), f"epochs[{i}] must be an object")
        _integer(epoch.get("epoch"), f"epochs[{i}].epoch")
        for key in ("loss", "recon", "kl", "reg", "seconds", "samples_per_second"):
            _number(epoch.get(key), f"epochs[{i}].{key}")
    for i, metric in enumerate(shard.get("metrics", [])):
        _require(isinstance(metric, dict) and isinstance(metric.get("name"), str)
                 and isinstance(metric.get("split"), str), f"metrics[{i}] needs a split and a name")
        _number(metric.get("value"), f"metrics[{i}].value")
    for key in ("dim_stats", "latent_stats", "points", "artifacts"):
        _require(isinstance(shard.get(key, []), list), f"{key} must be a list")
    _check_seal(shard)
    return shard


def content_sha256(record: dict[str, Any]) -> str:
    """The sha256 of a shard's content (every key but `sha256`): written into the shard, so that a number
    edited afterwards is caught when the shard is read."""
    return record_sha256(record, "sha256")


def sealed(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its content's sha256 (content_sha256) under `sha256`."""
    return {**record, "sha256": content_sha256(record)}


def _check_seal(shard: dict[str, Any]) -> None:
    """A shard written with a seal must still match it; shards of older releases have none."""
    if "sha256" in shard:
        _require(shard["sha256"] == content_sha256(shard),
                 "its content does not match its sha256: edited since it was written")


def _load(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"cannot be read ({exc})") from None
    try:
        return json.loads(text, parse_constant=lambda name: math.nan if name == "NaN" else float(name))
    except json.JSONDecodeError as exc:
        raise ShardError(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}"
                         f"{'; truncated?' if exc.pos >= len(text) - 1 else ''})") from None


def read_shard(path: Path) -> dict[str, Any]:
    """The checked shard at `path`, or ShardError saying why it cannot be ingested."""
    return check_shard(_load(path), path.parent.name if path.name == "result.json" else None)


# -- evaluation shards -----------------------------------------------------------------------------

@dataclass
class Evaluation:
    """One metric that `harness eval` computed on one job's checkpoint: its values, per-dimension rows and
    points, each record naming the metric (see metric_records)."""

    job_id: str
    metric: str
    version: int  # the metric's version (harness.metrics.registry)
    computed: float  # when, in seconds since the epoch
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {split, name, value, metric, version}
    dim_stats: list[dict[str, Any]] = field(default_factory=list)  # {split, metric, stat, dim, key, key_index, value}
    points: list[dict[str, Any]] = field(default_factory=list)  # {split, metric, idx, x, y, value, label, factor}

    def to_dict(self) -> dict[str, Any]:
        return {"format": EVALUATION_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, shard: dict[str, Any]) -> Evaluation:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in check_evaluation(shard).items() if k in known})


def _records(shard: dict[str, Any], key: str, metric: str, integers: tuple[str, ...], numbers: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> None:
    _require(isinstance(shard.get(key, []), list), f"{key} must be a list")
    for i, record in enumerate(shard.get(key, [])):
        _require(isinstance(record, dict) and isinstance(record.get("split"), str), f"{key}[{i}] needs a split")
        _require(record.get("metric", metric) == metric, f"{key}[{i}] is of metric {record.get('metric')!r}, "
                 f"in the shard of {metric!r}")
        for name in integers:
            _integer(record.get(name), f"{key}[{i}].{name}", optional=name in optional)
        for name in numbers:
            _number(record.get(name), f"{key}[{i}].{name}", optional=name in optional)


def check_evaluation(shard: Any, job_id: str | None = None, metric: str | None = None) -> dict[str, Any]:
    """Return `shard` if it follows the evaluation format, else raise ShardError with the reason."""
    _require(isinstance(shard, dict), f"an evaluation shard is a JSON object, got {type(shard).__name__}")
    version = shard.get("format", 1)
    _require(version == EVALUATION_FORMAT, f"unknown evaluation shard format {version!r} (this release reads "
             f"{EVALUATION_FORMAT})")
    for key in ("job_id", "metric", "version", "metrics", "dim_stats"):
        _require(key in shard, f"missing key '{key}'")
    _require(isinstance(shard["job_id"], str), "job_id must be a string")
    _require(job_id is None or shard["job_id"] == job_id, f"job_id {shard['job_id']!r} in the folder of {job_id}")
    _require(isinstance(shard["metric"], str), "metric must be a string")
    _require(metric is None or shard["metric"] == metric, f"metric {shard['metric']!r} in the file of {metric}")
    _integer(shard["version"], "version")
    _number(shard.get("computed"), "computed", optional=True)
    name = shard["metric"]
    _records(shard, "metrics", name, ("version",), ("value",), optional=("version",))
    for i, record in enumerate(shard["metrics"]):
        _require(isinstance(record.get("name"), str), f"metrics[{i}] needs a name")
    _records(shard, "dim_stats", name, ("dim", "key_index"), ("value",))
    for i, record in enumerate(shard["dim_stats"]):
        _require(isinstance(record.get("stat"), str) and isinstance(record.get("key"), str),
                 f"dim_stats[{i}] needs a stat and a key")
    _records(shard, "points", name, ("idx", "label", "factor"), ("x", "y", "value"),
             optional=("label", "factor", "value"))
    _check_seal(shard)
    return shard


def read_evaluation(path: Path) -> dict[str, Any]:
    """The checked evaluation shard at `path` (jobs/<job_id>/eval/<metric>.json), or ShardError saying why
    it cannot be ingested."""
    return check_evaluation(_load(path), path.parent.parent.name, path.stem)


def metric_records(outputs: list[tuple[Metric, MetricOutput]]) -> tuple[list, list, list]:
    """Shard records (metrics, dim_stats, points) of registry metrics' outputs, each with its metric and the
    split it read (and the values with its version): what result and evaluation shards hold."""
    from harness.metrics.registry import METRICS

    plugins = {metric.name: METRICS.record(metric.name) for metric, _ in outputs}  # once per metric, not per value
    metrics = [{"split": out.split, "name": k, "value": float(v), "metric": metric.name, "version": metric.version,
                **({"plugin": plugins[metric.name]} if plugins[metric.name] else {})}
               for metric, out in outputs for k, v in out.values.items()]
    rows = [{"split": out.split, "metric": metric.name, "stat": r.stat, "dim": r.dim, "key": r.key,
             "key_index": r.key_index, "value": r.value} for metric, out in outputs for r in out.rows]
    points = [{"split": out.split, "metric": metric.name, **p.__dict__} for metric, out in outputs
              for p in out.points]
    return metrics, rows, points
