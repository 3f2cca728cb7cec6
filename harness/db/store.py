"""The DuckDB store and the shard files it indexes.

Layout next to the database file (default runs/harness.duckdb):
    jobs/<job_id>/result.json      the job's shard: the truth about its run (atomic rename)
    jobs/<job_id>/model.safetensors, spec.json
    jobs/<job_id>/eval/<metric>.json  a metric computed later on the checkpoint (`harness eval`)
    sweeps/<name>.json             the sweep's job list, so `db rebuild` knows memberships

Only one process writes the database, through short-lived connections, so that users can open it
read-only between writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from harness.db.migrations import current, migrate
from harness.numerics import NUMERICS_VERSION
from harness.shards import ShardError, read_shard

JOB_ID = re.compile(r"[0-9a-f]{16}")


class StoreUnavailable(RuntimeError):
    """The database cannot be opened now; the message says why and what to do."""


class StoreLocked(StoreUnavailable):
    """Another process holds the database."""


class SweepConflict(ValueError):
    """Another sweep file already uses this sweep name in the store."""


class StoreDamaged(StoreUnavailable):
    """The database file cannot be opened as a DuckDB database (truncated, garbled, a folder)."""


def _open(path: Path, read_only: bool, attempts: int):
    """duckdb.connect, retried while another process holds the file's lock. A file that is not a
    database is damaged, not locked: the shards still hold every result, and rebuild restores it."""
    for attempt in range(attempts):
        try:
            if read_only:
                return duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" not in text.lower():
                raise StoreDamaged(f"{path} is damaged ({text.splitlines()[0].removeprefix('IO Error: ')}); "
                                   f"`harness db rebuild --store {path}` restores it from the shards") from exc
            if attempt == attempts - 1:
                raise StoreLocked(f"{path} is in use by another process; try again in a moment") from exc
            time.sleep(0.2)


class QueryInterrupted(RuntimeError):
    """A query stopped by Ctrl-C or its timeout."""


class ReadOnlyError(ValueError):
    """A statement that would write was given to a read-only query."""


class StoreWriteError(OSError):
    """A file of the store could not be written (disk full, read-only, permissions); nothing half-written
    is left behind."""


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _timestamp(seconds: float | None):
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None) if seconds else None


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.root = self.path.parent
        self.quarantined: list[tuple[Path, Path, str]] = []  # (shard, where it went, why), this session
        self.deferred: list[str] = []  # jobs whose shards wait to be ingested while the database is held

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r} (16 hex digits)")
        return self.root / "jobs" / job_id

    def shard_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.json"

    def evaluation_path(self, job_id: str, metric: str) -> Path:
        return self.job_dir(job_id) / "eval" / f"{metric}.json"

    def sweep_manifest(self, name: str) -> Path:
        from harness.spec import SWEEP_NAME

        if not SWEEP_NAME.fullmatch(name):  # a sweep name is a file name inside the store, never a path
            raise ValueError(f"not a sweep name: {name!r}")
        return self.root / "sweeps" / f"{name}.json"

    @contextmanager
    def connect(self, attempts: int = 50):
        """A writable connection, migrated; retried while another process holds the file."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(f"cannot create the store's folder {self.root}: "
                                  f"{exc.strerror or exc}") from exc
        con = _open(self.path, False, attempts)
        try:
            migrate(con)
            yield con
        finally:
            con.close()

    # -- benchmarks ---------------------------------------------------------------------------
    BENCH_COLUMNS = ("run_id", "suite", "case_name", "params", "mean", "stddev", "median", "min", "max", "rounds",
                     "git_commit", "numerics", "fingerprint", "machine")

    def add_benchmarks(self, rows: list[dict[str, Any]]) -> None:
        with self.connect() as con:
            con.executemany(f"INSERT INTO benchmarks ({', '.join(self.BENCH_COLUMNS)}) VALUES "
                            f"({', '.join('?' for _ in self.BENCH_COLUMNS)})",
                            [[row[c] for c in self.BENCH_COLUMNS] for row in rows])

    def benchmark_runs(self, fingerprint: str) -> list[tuple[str, str]]:
        """(run_id, commit) of the benchmark runs on this machine fingerprint, oldest first."""
        with self.reader() as con:
            return con.execute("""SELECT run_id, any_value(git_commit) FROM benchmarks WHERE fingerprint = ?
                                  GROUP BY run_id ORDER BY min(created), run_id""", [fingerprint]).fetchall()

    def benchmark_rows(self, run_id: str) -> list[dict[str, Any]]:
        with self.reader() as con:
            cursor = con.execute("SELECT * FROM benchmarks WHERE run_id = ? ORDER BY suite, case_name", [run_id])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    # -- cluster submissions ------------------------------------------------------------------
    def submissions_log(self) -> Path:
        """Every change of the `submissions` table, one JSON line each: `db rebuild` replays it, like the
        shards for jobs, so that a rebuilt store still knows the tasks Slurm runs for it."""
        return self.root / "slurm" / "submissions.jsonl"

    def _log_submissions(self, events: list[dict[str, Any]]) -> None:
        path = self.submissions_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write("".join(json.dumps(event, sort_keys=True) + "\n" for event in events))
            handle.flush()
            os.fsync(handle.fileno())

    def add_submissions(self, sweep: str, cluster: str, tasks: list[tuple[str, str, list[str]]]) -> None:
        """Record submitted cluster tasks as (task_id, pack_id, job_ids), state `submitted`."""
        events = [{"event": "submitted", "task_id": task, "sweep": sweep, "cluster": cluster, "pack_id": pack,
                   "job_ids": list(ids), "at": time.time()} for task, pack, ids in tasks]
        self._log_submissions(events)
        with self.connect() as con:
            _apply_submissions(con, events)

    def open_submissions(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """The tasks still `submitted` (of one sweep, or all), oldest first, as dicts of the table's columns."""
        if not self.path.exists():
            return []
        self.ensure_current()
        with self.reader() as con:
            cursor = con.execute("""SELECT task_id, sweep, cluster, pack_id, job_ids, submitted FROM submissions
                                    WHERE state = 'submitted' AND (? IS NULL OR sweep = ?)
                                    ORDER BY submitted, task_id""", [sweep, sweep])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def close_submissions(self, task_ids: Iterable[str], state: str, note: str = "") -> None:
        """Mark tasks `ended` or `cancelled`, with a note (e.g. the state Slurm gave)."""
        ids = list(task_ids)
        if ids:
            events = [{"event": state, "task_ids": ids, "note": note, "at": time.time()}]
            self._log_submissions(events)
            with self.connect() as con:
                _apply_submissions(con, events)

    # -- claims: one driver per job ----------------------------------------------------------
    def claim_path(self, job_id: str) -> Path:
        return self.root / "claims" / f"{self.job_dir(job_id).name}.json"

    def claim(self, job_ids: Iterable[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Claim jobs for this process, so that a second driver on the same store does not run them too.
        Returns (the ids now ours, id -> owner for those another live process holds). A claim whose owner
        process is gone (same host, pid not running) is stale and taken over; one from another host is
        respected, since its owner cannot be checked from here.

        A claim file appears with its owner already in it (a hard link to a file written first), so a driver
        killed while claiming leaves no empty claim; one that names no owner (an older release's, cut short
        by a kill) is stale too."""
        folder = self.root / "claims"
        folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        mine, others = [], {}
        written = folder / f".{me['pid']}.{time.time_ns()}.tmp"
        written.write_text(json.dumps(me))
        try:
            for job_id in job_ids:
                path = self.claim_path(job_id)
                for _ in range(2):
                    try:
                        os.link(written, path)
                    except FileExistsError:
                        owner = _read_owner(path)
                        if owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
                            mine.append(job_id)
                            break
                        if not owner or (owner.get("host") == me["host"] and not process_running(owner.get("pid"))):
                            path.unlink(missing_ok=True)  # stale: its driver died; take it over
                            continue
                        others[job_id] = owner
                        break
                    mine.append(job_id)
                    break
        finally:
            written.unlink(missing_ok=True)
        return mine, others

    def claim_owner(self, job_id: str) -> dict[str, Any]:
        """Who claimed the job ({pid, host, since}), or {} where nobody did."""
        return _read_owner(self.claim_path(job_id))

    def running(self, job_ids: Iterable[str]) -> set[str]:
        """The jobs among `job_ids` that a live driver has claimed: running, or about to."""
        found = set()
        for job_id in job_ids:
            owner = _read_owner(self.claim_path(job_id))
            if owner and (owner.get("host") != socket.gethostname() or process_running(owner.get("pid"))):
                found.add(job_id)
        return found

    def clear_stale_claims(self, job_ids: Iterable[str]) -> None:
        """Remove the claims on `job_ids` left by drivers that died on this host."""
        for job_id in job_ids:
            path = self.claim_path(job_id)
            if not path.exists():
                continue
            owner = _read_owner(path)  # none named: cut short by a kill (see claim)
            if not owner or (owner.get("host") == socket.gethostname() and not process_running(owner.get("pid"))):
                path.unlink(missing_ok=True)

    def release(self, job_ids: Iterable[str]) -> None:
        """Drop this process's claims on `job_ids` (others' claims are left alone)."""
        for job_id in job_ids:
            path = self.claim_path(job_id)
            owner = _read_owner(path)
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                path.unlink(missing_ok=True)

    def ensure_current(self) -> None:
        """Migrate an existing store that an older release wrote, so that readers see today's schema
        (e.g. the `numerics` column); a no-op on a current store or where there is none."""
        if not self.path.exists():
            return
        with self.reader() as con:
            if current(con):
                return
        with self.connect():
            pass

    # -- sweeps -------------------------------------------------------------------------------
    def register_sweep(self, name: str, path: str, description: str, toml: str, job_ids: list[str]) -> int:
        """Record the sweep and its job list (database and manifest file); returns how many of the jobs
        the sweep did not list before (0 for a new sweep). A sweep of the same name from another file
        with another text and other jobs is refused (SweepConflict): it would silently replace the first
        one's list."""
        manifest = self.sweep_manifest(name)
        added = 0
        if manifest.exists():
            try:
                before = json.loads(manifest.read_text())
            except (OSError, ValueError):
                before = {}
            # the same file (perhaps edited), or the same text (perhaps moved or cloned elsewhere)
            same = Path(before.get("path", "")).resolve() == Path(path).resolve() or before.get("toml") == toml
            if not same and set(before.get("job_ids", [])) != set(job_ids):
                raise SweepConflict(f"{path}: sweep name '{name}' is already used in this store by "
                                    f"{before.get('path')} with other jobs; give this file another [sweep] name")
            if before.get("toml") != toml:
                added = len(set(job_ids) - set(before.get("job_ids", [])))
        atomic_write_json(self.sweep_manifest(name), {"name": name, "path": path, "description": description,
                                                      "toml": toml, "job_ids": job_ids})
        with self.connect() as con:
            _register(con, name, path, description, toml, job_ids)
        return added

    @contextmanager
    def reader(self):
        """A read-only connection: never blocks a reader on another reader."""
        con = open_read_only(self.path)
        try:
            yield con
        finally:
            con.close()

    def statuses(self, job_ids: Iterable[str]) -> dict[str, str]:
        ids = list(job_ids)
        if not ids or not self.path.exists():
            return {}
        with self.reader() as con:
            rows = con.execute("SELECT job_id, status FROM jobs WHERE list_contains(?, job_id)", [ids]).fetchall()
        return dict(rows)

    def stale(self, jobs) -> dict[str, str]:
        """current job id -> the id under which an older numerics version stored the same spec, for each
        of `jobs` (JobSpecs) that has such a row: its numbers came from code that computed differently."""
        older = {old: job.job_id for job in jobs for old in job.older_ids().values()}
        found = self.statuses(older)
        return {older[old]: old for old in found}

    def metric_versions(self, job_ids: Iterable[str]) -> dict[tuple[str, str], int]:
        """(job_id, registry metric) -> the version its stored values were computed with."""
        with self.reader() as con:
            rows = con.execute("""SELECT job_id, metric, max(version) FROM metrics
                                  WHERE list_contains(?, job_id) AND metric IS NOT NULL GROUP BY ALL""",
                               [list(job_ids)]).fetchall()
        return {(job_id, metric): version for job_id, metric, version in rows}

    def done_jobs(self, numerics: int | None = NUMERICS_VERSION, sweep: str | None = None) -> list[str]:
        """Ids of the finished jobs (of one numerics version unless None; of one sweep's list if named)."""
        with self.reader() as con:
            return [row[0] for row in con.execute("""
                SELECT job_id FROM jobs WHERE status = 'done' AND ($n IS NULL OR numerics = $n)
                    AND ($s IS NULL OR job_id IN (SELECT job_id FROM sweep_jobs WHERE sweep = $s))
                ORDER BY job_id""", {"n": numerics, "s": sweep}).fetchall()]

    def errors(self, job_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(job_id, error) of the failed or diverged jobs among `job_ids`."""
        with self.reader() as con:
            return con.execute("""SELECT job_id, error FROM jobs WHERE list_contains(?, job_id)
                                  AND status IN ('failed', 'diverged') ORDER BY job_id""", [list(job_ids)]).fetchall()

    def sweep_counts(self, busy: Iterable[str] = ()) -> list[tuple[str, str, int, int, int, int, int, int, int]]:
        """(sweep, description, total, done, failed, diverged, running, pending, stale) for every sweep in the
        store.

        done, failed and diverged count the current numerics version only; running counts the jobs without
        a result that a live driver has claimed or that is in `busy` (e.g. in a Slurm task still queued or
        running), pending the others; stale counts the sweep's rows stored
        under an older numerics version (kept and queryable, but not current results).
        """
        busy = set(busy)
        self.ensure_current()
        with self.reader() as con:
            rows = con.execute("""
                SELECT s.name, s.description, count(sj.job_id) AS total,
                    count(*) FILTER (WHERE j.status = 'done' AND j.numerics = $v) AS done,
                    count(*) FILTER (WHERE j.status = 'failed' AND j.numerics = $v) AS failed,
                    count(*) FILTER (WHERE j.status = 'diverged' AND j.numerics = $v) AS diverged,
                    coalesce(list(sj.job_id) FILTER (WHERE j.status IS NULL AND sj.job_id IS NOT NULL), []),
                    (SELECT count(*) FROM jobs o WHERE o.sweep = s.name AND o.numerics < $v) AS stale
                FROM sweeps s LEFT JOIN sweep_jobs sj ON sj.sweep = s.name
                    LEFT JOIN jobs j ON j.job_id = sj.job_id
                GROUP BY s.name, s.description ORDER BY s.name""", {"v": NUMERICS_VERSION}).fetchall()
        counts = []
        for name, description, total, done, failed, diverged, waiting, stale in rows:
            running = len(self.running(j for j in waiting if j not in busy) | busy.intersection(waiting))
            counts.append((name, description, total, done, failed, diverged, running, len(waiting) - running, stale))
        return counts

    # -- shards -------------------------------------------------------------------------------
    def write_shard(self, result: dict[str, Any]) -> Path:
        path = self.shard_path(result["job_id"])
        atomic_write_json(path, result)
        return path

    def shard_statuses(self, job_ids: Iterable[str]) -> dict[str, str]:
        """The status written in each existing, well-formed shard, read without touching the database
        (a bad shard counts as no shard: its job is not done)."""
        found = {}
        for job_id in job_ids:
            path = self.shard_path(job_id)
            if path.exists():
                try:
                    found[job_id] = read_shard(path)["status"]
                except ShardError:
                    continue
        return found

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a shard that cannot be ingested to quarantine/, with its reason beside it; its job then
        counts as not done, and the next `sweep run` trains it again."""
        folder = self.root / "quarantine"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{path.parent.name}-{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, target)
        target.with_name(target.name + ".reason").write_text(f"{path}: {reason}\n")
        self.quarantined.append((path, target, reason))
        return target

    def read_shards(self, paths: Iterable[Path]) -> list[dict[str, Any]]:
        """The well-formed shards among `paths`; each bad one is quarantined (see `quarantined`)."""
        good = []
        for path in paths:
            try:
                good.append(read_shard(path))
            except ShardError as error:
                self.quarantine(path, str(error))
        return good

    def ingest_shards(self, job_ids: Iterable[str], attempts: int = 50) -> int:
        """Ingest the shards that exist for `job_ids`, setting bad ones aside; returns how many ingested."""
        before = len(self.quarantined)
        results = self.read_shards(p for p in (self.shard_path(j) for j in job_ids) if p.exists())
        if not results and len(self.quarantined) == before:
            return 0
        with self.connect(attempts) as con:
            ingested = sum(self.ingest_checked(con, result) for result in results)
            for shard, _, _ in self.quarantined[before:]:  # the shards are the truth: no shard, not done
                _forget(con, shard.parent.name)
        return ingested

    def ingest_or_defer(self, job_ids: Iterable[str]) -> None:
        """Ingest these jobs' shards (and any deferred before); while another process holds the database,
        keep them for later instead of failing: the shards are on disk, so nothing is lost, and the next
        call (or `sweep run`, or `db rebuild`) indexes them."""
        waiting = self.deferred + [j for j in job_ids if j not in self.deferred]
        try:
            self.ingest_shards(waiting, attempts=5)
        except StoreLocked:
            self.deferred = waiting
            return
        self.deferred = []

    def ingest_checked(self, con, result: dict[str, Any]) -> bool:
        """Ingest one well-formed shard; one that the database still refuses is quarantined, not raised."""
        try:
            ingest_result(con, result)
            return True
        except duckdb.Error as exc:
            self.quarantine(self.shard_path(result["job_id"]), f"the store refused it: {str(exc).splitlines()[0]}")
            return False


def _apply_submissions(con, events: list[dict[str, Any]]) -> None:
    """Apply submissions-log events (see Store.submissions_log) to the table."""
    for event in events:
        if event["event"] == "submitted":
            con.execute("""INSERT OR REPLACE INTO submissions (task_id, sweep, cluster, pack_id, job_ids, submitted,
                           state) VALUES (?, ?, ?, ?, ?, ?, 'submitted')""",
                        [event["task_id"], event["sweep"], event["cluster"], event["pack_id"], event["job_ids"],
                         _timestamp(event["at"])])
        else:
            con.execute("""UPDATE submissions SET state = ?, ended = ?, note = ? WHERE list_contains(?, task_id)""",
                        [event["event"], _timestamp(event["at"]), event.get("note", ""), event["task_ids"]])


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def process_running(pid: Any) -> bool:
    """Whether process `pid` runs on this host (a zombie has exited)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):  # no /proc here, or it ended just now
        return Path("/proc").is_dir() is False


JOB_TABLES = ("jobs", "epochs", "metrics", "dim_stats", "points", "artifacts")


def _forget(con, job_id: str) -> None:
    for table in JOB_TABLES:
        con.execute(f"DELETE FROM {table} WHERE job_id = ?", [job_id])


def _register(con, name, path, description, toml, job_ids) -> None:
    con.execute("BEGIN TRANSACTION")
    con.execute("""INSERT OR REPLACE INTO sweeps (name, path, description, toml, updated)
                   VALUES (?, ?, ?, ?, current_timestamp)""", [name, path, description, toml])
    con.execute("DELETE FROM sweep_jobs WHERE sweep = ?", [name])
    con.executemany("INSERT INTO sweep_jobs VALUES (?, ?)", [[name, j] for j in job_ids])
    con.execute("COMMIT")


def ingest_result(con, result: dict[str, Any]) -> None:
    """Insert one shard's rows, replacing whatever the job had: ingesting twice changes nothing."""
    from harness.spec import job_summary

    job_id = result["job_id"]
    summary = job_summary(result["spec"])
    con.execute("BEGIN TRANSACTION")
    try:
        _forget(con, job_id)
        con.execute(
            """INSERT INTO jobs (job_id, numerics, sweep, spec, dataset, arch, prior, gamma, df, alpha, beta,
                latent_dim, epochs, batch_size, lr, seed, status, error, failed_epoch, device, host, pack_id, pack_size,
                started, finished, wall_seconds, peak_memory_bytes, git_commit, versions, shard, run_options)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            # shards that predate the key were written by numerics version 1
            [job_id, result.get("numerics", 1), result.get("sweep", ""), json.dumps(result["spec"], sort_keys=True),
             summary["dataset"], summary["arch"], summary["prior"], summary["gamma"], summary["df"], summary["alpha"],
             summary["beta"], summary["latent_dim"], summary["epochs"], summary["batch_size"], summary["lr"],
             summary["seed"],
             result["status"], result.get("error", ""), result.get("failed_epoch"), result.get("device", ""),
             result.get("host", ""), result.get("pack_id", ""), result.get("pack_size", 1),
             _timestamp(result.get("started")), _timestamp(result.get("finished")), result.get("wall_seconds"),
             result.get("peak_memory_bytes"), result.get("git_commit", ""),
             json.dumps(result.get("versions", {}), sort_keys=True), result.get("shard", ""),
             json.dumps(result.get("run_options", {}), sort_keys=True)])
        epochs = result.get("epochs", [])
        if epochs:
            con.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [[job_id, e["epoch"], e["loss"], e["recon"], e["kl"], e["reg"], e["seconds"],
                              e["samples_per_second"]] for e in epochs])
        _insert_metrics(con, job_id, result.get("metrics", []), result.get("dim_stats", []) + [
            # shards from before the metric registry kept the class magnitudes apart
            {"split": s["split"], "metric": "class_magnitudes", "stat": "mean_abs_loc", "dim": s["dim"],
             "key": s["class_name"], "key_index": s["class_index"], "value": s["mean_abs_loc"]}
            for s in result.get("latent_stats", [])], result.get("points", []))
        artifacts = result.get("artifacts", [])
        if artifacts:
            con.executemany("INSERT INTO artifacts VALUES (?, ?, ?)",
                            [[job_id, a["kind"], a["path"]] for a in artifacts])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _legacy_metric(name: str) -> str:
    """The registry metric that produced a value in a shard that predates the metric column."""
    return "hoyer" if name.startswith("hoyer") else "elbo"


def _insert_metrics(con, job_id: str, metrics: list[dict[str, Any]], dim_stats: list[dict[str, Any]],
                    points: list[dict[str, Any]]) -> None:
    if metrics:
        con.executemany("INSERT INTO metrics (job_id, split, name, value, metric, version) VALUES (?, ?, ?, ?, ?, ?)",
                        [[job_id, m["split"], m["name"], m["value"], m.get("metric", _legacy_metric(m["name"])),
                          m.get("version", 1)] for m in metrics])
    if dim_stats:
        con.executemany("INSERT INTO dim_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [[job_id, r["split"], r["metric"], r["stat"], r["dim"], r["key"], r["key_index"], r["value"]]
                         for r in dim_stats])
    if points:
        con.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[job_id, p["split"], p["metric"], p["idx"], p["x"], p["y"], p["value"], p["label"],
                          p["factor"]] for p in points])


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
        con.execute("ROLLBACK")
        raise


def rebuild(store: Store) -> tuple[int, int]:
    """Recreate the database from the shards and sweep manifests; returns (sweeps, jobs). A damaged
    database file is kept beside the new one as <name>.damaged."""
    if store.path.is_dir():
        raise StoreDamaged(f"{store.path} is a folder, not a database: move it away, then rebuild")
    tmp = store.path.with_name(f".{store.path.name}.rebuild")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)
    fresh = Store(tmp)
    manifests = sorted((store.root / "sweeps").glob("*.json"))
    shards = sorted((store.root / "jobs").glob("*/result.json"))
    with fresh.connect() as con:
        for manifest in manifests:
            m = json.loads(manifest.read_text())
            _register(con, m["name"], m["path"], m["description"], m["toml"], m["job_ids"])
        for shard in store.read_shards(shards):
            store.ingest_checked(con, shard)
        for evaluation in sorted((store.root / "jobs").glob("*/eval/*.json")):  # after their jobs' results
            ingest_evaluation(con, json.loads(evaluation.read_text()))
        if store.submissions_log().exists():
            events = []
            for line in store.submissions_log().read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:  # a line cut short by a crash mid-write: the ones before it stand
                    continue
            _apply_submissions(con, events)
    if store.path.exists():
        try:
            _open(store.path, True, 25).close()
        except StoreDamaged:
            shutil.copyfile(store.path, store.path.with_name(store.path.name + ".damaged"))
    Path(f"{store.path}.wal").unlink(missing_ok=True)
    os.replace(tmp, store.path)
    return len(manifests), len(shards) - len(store.quarantined)


def open_read_only(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}; run a sweep first or pass --store PATH")
    return _open(path, True, 25)


READ_STATEMENTS = {"SELECT", "EXPLAIN"}


def _interrupt(cursor, worker) -> None:
    """Stop the statement running on `cursor` in `worker` and wait for the thread to end (asking again
    while it runs: a request that lands between two steps of the statement is not seen)."""
    while worker.is_alive():
        try:
            cursor.interrupt()
        except duckdb.Error:
            pass
        worker.join(0.1)


def run_query(path: str | Path, sql: str, params: list[Any] | None = None, timeout: float | None = None):
    """Run one read-only statement; returns (column names, rows). Writes are refused before running.

    The statement runs in a thread so that Ctrl-C (KeyboardInterrupt here) and `timeout` seconds can
    interrupt it (QueryInterrupted); the connection is closed either way."""
    import threading

    con = open_read_only(path)
    cursor = con.cursor()  # the query's own connection, so that this thread may interrupt it
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            cursor.execute(sql, params or [])
            outcome["result"] = ([d[0] for d in cursor.description], cursor.fetchall())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise ReadOnlyError(f"give exactly one statement, got {len(statements)}")
        kind = statements[0].type.name
        if kind not in READ_STATEMENTS:
            raise ReadOnlyError(f"the store is read-only here: only SELECT statements run, this one is {kind}")
        worker = threading.Thread(target=execute, daemon=True)
        worker.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while worker.is_alive():
                worker.join(0.05)
                if deadline is not None and time.monotonic() > deadline:
                    _interrupt(cursor, worker)
                    raise QueryInterrupted(f"the query ran past --timeout {timeout:g} s and was stopped")
        except KeyboardInterrupt:
            _interrupt(cursor, worker)
            raise QueryInterrupted("the query was interrupted") from None
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]
    finally:
        for closable in (cursor, con):
            try:
                closable.close()
            except duckdb.Error:  # still marked busy after an interrupted statement; dropped all the same
                pass
