"""Shards into the database: result shards (one per job), evaluation shards (one per metric computed
later on a job's checkpoint), the quarantine of those that cannot be ingested, and `db rebuild`.

The shards are the truth and the database an index of them: ingesting a shard replaces whatever the
database had for its job (or its job's metric), so ingesting twice changes nothing, and `rebuild`
recreates the whole database from the shards, the sweep manifests and the submissions log. A shard
that fails its format's check (harness.shards) or that the database refuses is moved to quarantine/
with its reason, and its job counts as not done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from harness.db import submissions, sweeps
from harness.db.migrations import rollback
from harness.db.store import Store, StoreDamaged, StoreLocked, atomic_write_json, insert_rows, open_read_only, timestamp
from harness.disk import full_disk, is_full
from harness.shards import ShardError, read_evaluation, read_shard, sealed

JOB_TABLES = ("jobs", "epochs", "metrics", "dim_stats", "points", "artifacts")


@dataclass(frozen=True)
class SetAside:
    """A shard that could not be ingested: where it was, where it went, and why."""

    shard: Path
    target: Path
    reason: str


@dataclass
class Ingest:
    """One process's ingesting into a store (a driver's run, a rebuild, an evaluation): it sets bad
    shards aside and remembers them (`quarantined`), and keeps the jobs whose shards wait while another
    process holds the database (`deferred`), to be ingested at the next call."""

    store: Store
    quarantined: list[SetAside] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    _reported: int = 0

    def shards(self, job_ids: Iterable[str], attempts: int = 50) -> int:
        """Ingest the shards that exist for `job_ids`, setting bad ones aside; returns how many ingested."""
        before = len(self.quarantined)
        results = self.read(p for p in (self.store.shard_path(j) for j in job_ids) if p.exists())
        if not results and len(self.quarantined) == before:
            return 0
        with self.store.connect(attempts) as con:
            ingested = sum(self.checked(con, result) for result in results)
            # a result replaces every row of its job, the evaluations `harness eval` added among them: those
            # come back from their own shards, so that ingesting a result again never loses them
            self.evaluations(con, sorted(p for result in results
                                         for p in self.store.job_dir(result["job_id"]).glob("eval/*.json")))
            for aside in self.quarantined[before:]:  # the shards are the truth: no shard, not done
                _forget(con, aside.shard.parent.name)
        return ingested

    def or_defer(self, job_ids: Iterable[str]) -> None:
        """Ingest these jobs' shards (and any deferred before); while another process holds the database,
        keep them for later instead of failing: the shards are on disk, so nothing is lost, and the next
        call (or `sweep run`, or `db rebuild`) indexes them."""
        waiting = self.deferred + [j for j in job_ids if j not in self.deferred]
        try:
            self.shards(waiting, attempts=5)
        except StoreLocked:
            self.deferred = waiting
            return
        self.deferred = []

    def read(self, paths: Iterable[Path]) -> list[dict[str, Any]]:
        """The well-formed result shards among `paths`; each bad one is quarantined."""
        good = []
        for path in paths:
            try:
                good.append(read_shard(path))
            except ShardError as error:
                self.quarantine(path, str(error))
        return good

    def checked(self, con, result: dict[str, Any]) -> bool:
        """Ingest one well-formed result shard; one that the database still refuses is quarantined."""
        try:
            ingest_result(con, result)
            return True
        except duckdb.Error as exc:
            if is_full(exc):  # the shard is good; the database could not grow: stop, set nothing aside
                raise full_disk(exc, f"adding job {result['job_id']} to the database") from exc
            self.quarantine(self.store.shard_path(result["job_id"]), f"the store refused it: {_first_line(exc)}")
            return False

    def evaluations(self, con, paths: Iterable[Path]) -> int:
        """Ingest the evaluation shards at `paths` (after their jobs' results), checked like result shards:
        a bad one is quarantined. Returns how many ingested."""
        ingested = 0
        for path in paths:
            try:
                shard = read_evaluation(path)
            except ShardError as error:
                self.quarantine(path, str(error))
                continue
            try:
                ingest_evaluation(con, shard)
                ingested += 1
            except duckdb.Error as exc:
                if is_full(exc):
                    raise full_disk(exc, f"adding {path} to the database") from exc
                self.quarantine(path, f"the store refused it: {_first_line(exc)}")
        return ingested

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a shard that cannot be ingested to quarantine/, with its reason beside it; its job then
        counts as not done (or its metric as not computed), and the next `sweep run` trains it again."""
        folder = self.store.quarantine_dir()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{path.parent.name}-{path.name}" if path.parent.name != "eval" else \
            f"{path.parent.parent.name}-eval-{path.name}"
        target = folder / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, target)
        target.with_name(target.name + ".reason").write_text(f"{path}: {reason}\n")
        self.quarantined.append(SetAside(path, target, reason))
        return target

    def newly_quarantined(self) -> list[SetAside]:
        """The shards set aside since the last call: for whoever reports them as they happen."""
        new = self.quarantined[self._reported:]
        self._reported = len(self.quarantined)
        return new


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


def write_shard(store: Store, result: dict[str, Any]) -> Path:
    """Write a job's result shard (atomically); returns its path."""
    path = store.shard_path(result["job_id"])
    atomic_write_json(path, sealed(result))
    return path


def write_evaluation(store: Store, shard: dict[str, Any]) -> Path:
    """Write an evaluation shard (atomically, see harness.shards.Evaluation); returns its path."""
    path = store.evaluation_path(shard["job_id"], shard["metric"])
    atomic_write_json(path, sealed(shard))
    return path


def shard_statuses(store: Store, job_ids: Iterable[str]) -> dict[str, str]:
    """The status written in each existing, well-formed shard, read without touching the database
    (a bad shard counts as no shard: its job is not done)."""
    found = {}
    for job_id in job_ids:
        path = store.shard_path(job_id)
        if path.exists():
            try:
                found[job_id] = read_shard(path)["status"]
            except ShardError:
                continue
    return found


def _forget(con, job_id: str) -> None:
    for table in JOB_TABLES:
        con.execute(f"DELETE FROM {table} WHERE job_id = ?", [job_id])


def ingest_result(con, result: dict[str, Any]) -> None:
    """Insert one shard's rows, replacing whatever the job had: ingesting twice changes nothing."""
    from harness.spec import job_summary

    job_id = result["job_id"]
    summary = job_summary(result["spec"])
    con.execute("BEGIN TRANSACTION")
    try:
        _forget(con, job_id)
        insert_rows(con, "jobs", (
            "job_id", "numerics", "sweep", "spec", "dataset", "arch", "prior", "gamma", "df", "alpha", "beta",
            "latent_dim", "epochs", "batch_size", "lr", "seed", "status", "error", "failed_epoch", "device", "host",
            "pack_id", "pack_size", "started", "finished", "wall_seconds", "peak_memory_bytes", "git_commit",
            "versions", "shard", "run_options", "plugins"),
            # shards that predate the key were written by numerics version 1
            [[job_id, result.get("numerics", 1), result.get("sweep", ""), json.dumps(result["spec"], sort_keys=True),
              summary["dataset"], summary["arch"], summary["prior"], summary["gamma"], summary["df"], summary["alpha"],
              summary["beta"], summary["latent_dim"], summary["epochs"], summary["batch_size"], summary["lr"],
              summary["seed"],
              result["status"], result.get("error", ""), result.get("failed_epoch"), result.get("device", ""),
              result.get("host", ""), result.get("pack_id", ""), result.get("pack_size", 1),
              timestamp(result.get("started")), timestamp(result.get("finished")), result.get("wall_seconds"),
              result.get("peak_memory_bytes"), result.get("git_commit", ""),
              json.dumps(result.get("versions", {}), sort_keys=True), result.get("shard", ""),
              json.dumps(result.get("run_options", {}), sort_keys=True),
              json.dumps(result["plugins"], sort_keys=True) if result.get("plugins") else None]])
        insert_rows(con, "epochs", ("job_id", "epoch", "loss", "recon", "kl", "reg", "seconds", "samples_per_second"),
                    [[job_id, e["epoch"], e["loss"], e["recon"], e["kl"], e["reg"], e["seconds"],
                      e["samples_per_second"]] for e in result.get("epochs", [])])
        _insert_metrics(con, job_id, result.get("metrics", []), result.get("dim_stats", []) + [
            # shards from before the metric registry kept the class magnitudes apart
            {"split": s["split"], "metric": "class_magnitudes", "stat": "mean_abs_loc", "dim": s["dim"],
             "key": s["class_name"], "key_index": s["class_index"], "value": s["mean_abs_loc"]}
            for s in result.get("latent_stats", [])], result.get("points", []))
        insert_rows(con, "artifacts", ("job_id", "kind", "path", "sha256"),
                    [[job_id, a["kind"], a["path"], a.get("sha256")] for a in result.get("artifacts", [])])
        con.execute("COMMIT")
    except Exception:
        rollback(con)
        raise


def _legacy_metric(name: str) -> str:
    """The registry metric that produced a value in a shard that predates the metric column."""
    return "hoyer" if name.startswith("hoyer") else "elbo"


def _insert_metrics(con, job_id: str, metrics: list[dict[str, Any]], dim_stats: list[dict[str, Any]],
                    points: list[dict[str, Any]]) -> None:
    insert_rows(con, "metrics", ("job_id", "split", "name", "value", "metric", "version", "plugin"),
                [[job_id, m["split"], m["name"], m["value"], m.get("metric", _legacy_metric(m["name"])),
                  m.get("version", 1), json.dumps(m["plugin"], sort_keys=True) if m.get("plugin") else None]
                 for m in metrics])
    insert_rows(con, "dim_stats", ("job_id", "split", "metric", "stat", "dim", "key", "key_index", "value"),
                [[job_id, r["split"], r["metric"], r["stat"], r["dim"], r["key"], r["key_index"], r["value"]]
                 for r in dim_stats])
    insert_rows(con, "points", ("job_id", "split", "metric", "idx", "x", "y", "value", "label", "factor"),
                [[job_id, p["split"], p["metric"], p["idx"], p["x"], p["y"], p["value"], p["label"], p["factor"]]
                 for p in points])


def ingest_evaluation(con, shard: dict[str, Any]) -> None:
    """Replace one metric's values and rows of one job with those of an evaluation shard (`harness eval`)."""
    job_id, metric = shard["job_id"], shard["metric"]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM metrics WHERE job_id = ? AND metric = ?", [job_id, metric])
        con.execute("DELETE FROM dim_stats WHERE job_id = ? AND metric = ?", [job_id, metric])
        con.execute("DELETE FROM points WHERE job_id = ? AND metric = ?", [job_id, metric])
        _insert_metrics(con, job_id, shard["metrics"], shard["dim_stats"], shard.get("points", []))
        con.execute("COMMIT")
    except Exception:
        rollback(con)
        raise


@dataclass(frozen=True)
class Rebuilt:
    """What `rebuild` recreated: sweeps and jobs, and the shards it had to set aside."""

    sweeps: int
    jobs: int
    quarantined: list[SetAside]


def rebuild(store: Store) -> Rebuilt:
    """Recreate the database from the shards, sweep manifests and submissions log. A damaged database
    file is kept beside the new one as <name>.damaged."""
    if store.path.is_dir():
        raise StoreDamaged(f"{store.path} is a folder, not a database: move it away, then rebuild")
    tmp = store.path.with_name(f".{store.path.name}.rebuild")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)
    ingest = Ingest(store)
    manifests = sorted((store.root / "sweeps").glob("*.json"))
    shards = sorted((store.root / "jobs").glob("*/result.json"))
    written = 0
    try:
        with Store(tmp).connect() as con:
            for manifest in manifests:
                try:
                    m = json.loads(manifest.read_text())
                    fields = [m["name"], m["path"], m["description"], m["toml"], m["job_ids"]]
                    if not (all(isinstance(f, str) for f in fields[:4]) and isinstance(fields[4], list)):
                        raise TypeError("a field has the wrong type")
                except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
                    ingest.quarantine(manifest, f"not a sweep manifest ({type(exc).__name__}: {exc})")
                    continue
                sweeps.write(con, *fields)
                written += 1
            jobs = sum(ingest.checked(con, shard) for shard in ingest.read(shards))
            ingest.evaluations(con, sorted((store.root / "jobs").glob("*/eval/*.json")))  # after their results
            submissions.apply(con, submissions.logged(store))
    except BaseException:  # nothing half-written is left beside the store
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)
        raise
    if store.path.exists():
        try:
            open_read_only(store.path).close()
        except StoreDamaged:
            shutil.copyfile(store.path, store.path.with_name(store.path.name + ".damaged"))
    Path(f"{store.path}.wal").unlink(missing_ok=True)
    os.replace(tmp, store.path)
    return Rebuilt(written, jobs, ingest.quarantined)
