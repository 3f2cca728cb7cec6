"""The store: one DuckDB file, and the files beside it that the database indexes.

Layout next to the database file (default runs/harness.duckdb):
    jobs/<job_id>/result.json         the job's shard: the truth about its run (atomic rename)
    jobs/<job_id>/model.safetensors, spec.json
    jobs/<job_id>/eval/<metric>.json  a metric computed later on the checkpoint (`harness eval`)
    sweeps/<name>.json                the sweep's job list, so `db rebuild` knows memberships
    slurm/submissions.jsonl           the cluster tasks submitted and how they ended, replayed by rebuild
    claims/<job_id>.json              the live driver that runs the job
    resume/<pack_id>/                 a pack's resumable state while it trains
    quarantine/                       shards that could not be ingested, each with its reason

Only one process writes the database, through short-lived connections, so that users can open it
read-only between writes. This module holds the paths, the connections and users' read-only queries;
what is done with them lives in the modules beside it (see Store).
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from harness.db.migrations import current, migrate
from harness.disk import full_disk, is_full, replacing

JOB_ID = re.compile(r"[0-9a-f]{16}")


class StoreUnavailable(RuntimeError):
    """The database cannot be opened now; the message says why and what to do."""


class StoreLocked(StoreUnavailable):
    """Another process holds the database."""


class StoreDamaged(StoreUnavailable):
    """The database file cannot be opened as a DuckDB database (truncated, garbled, a folder)."""


DAMAGE_SIGNS = ("corrupt database file", "could not read enough bytes", "checksum", "not a valid duckdb database",
                "invalid database", "failed to read database header")


def damaged(path: Path, exc: BaseException) -> StoreDamaged | None:
    """The one-line StoreDamaged for a DuckDB error that says the file is damaged (it opened, but a block
    read later failed its checksum or ran past the end), else None."""
    text = str(exc)
    if not isinstance(exc, duckdb.Error) or not any(sign in text.lower() for sign in DAMAGE_SIGNS):
        return None
    first = text.splitlines()[0].removeprefix("IO Error: ").removeprefix("Error: ")
    return StoreDamaged(f"{path} is damaged ({first[:160]}); `harness db rebuild --store {path}` restores it from "
                        "the shards")


def _open(path: Path, read_only: bool, attempts: int):
    """duckdb.connect, retried while another process holds the file's lock. A file that is not a
    database is damaged, not locked: the shards still hold every result, and rebuild restores it."""
    for attempt in range(attempts):
        try:
            if read_only:
                return duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
            return duckdb.connect(str(path))
        except duckdb.Error as exc:
            text = str(exc)
            if is_full(exc):  # a full disk is not a damaged file
                raise full_disk(exc, f"opening {path}") from exc
            if "permission denied" in text.lower():  # nor is a file this user may not read or write
                raise StoreUnavailable(f"{path} cannot be {'read' if read_only else 'written'} by this user "
                                       "(permission denied): check its owner and mode") from exc
            if not isinstance(exc, duckdb.IOException) or "lock" not in text.lower():
                if damaged(path, exc) is not None:
                    raise damaged(path, exc) from exc
                if not isinstance(exc, duckdb.IOException):
                    raise
                raise StoreDamaged(f"{path} is damaged ({text.splitlines()[0].removeprefix('IO Error: ')}); "
                                   f"`harness db rebuild --store {path}` restores it from the shards") from exc
            if attempt == attempts - 1:
                raise StoreLocked(f"{path} is in use by another process; try again in a moment") from exc
            time.sleep(0.2)


class QueryInterrupted(RuntimeError):
    """A query stopped by Ctrl-C or its timeout."""


# Statements interrupted in this process. DuckDB stops the statement at once but may let its other threads
# finish the piece of work they hold (a nested-loop join's piece can take minutes), and closing the
# database, at the latest when the interpreter exits, waits for them: the command line leaves with
# os._exit when this is non-zero (harness.cli.main).
INTERRUPTED_STATEMENTS = 0


class ReadOnlyError(ValueError):
    """A statement that would write was given to a read-only query."""


class StoreWriteError(OSError):
    """A file of the store could not be written (disk full, read-only, permissions); nothing half-written
    is left behind."""


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename: readers see the old file or the new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp, open(tmp, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


def timestamp(seconds: float | None):
    """A TIMESTAMP column's value (UTC, naive) for seconds since the epoch, or NULL."""
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None) if seconds else None


class Store:
    """Where a store's files are, and connections to its database (migrated to today's schema).

    What the store does lives beside it, a module per concern, each a set of functions taking a Store:
    claims (one driver per job), ingest (shards and evaluation shards into the database, quarantine,
    rebuild), sweeps (registered sweeps and their counts), jobs (what the database says about jobs),
    submissions (cluster tasks) and benchmarks; queries holds the reports' named queries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.root = self.path.parent

    # -- paths ----------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r} (16 hex digits)")
        return self.root / "jobs" / job_id

    def shard_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.json"

    def evaluation_path(self, job_id: str, metric: str) -> Path:
        return self.job_dir(job_id) / "eval" / f"{metric}.json"

    def sweep_manifest(self, name: str) -> Path:
        from harness.spec import SWEEP_NAME  # not at the top: spec brings in torch, which the store never needs

        if not SWEEP_NAME.fullmatch(name):  # a sweep name is a file name inside the store, never a path
            raise ValueError(f"not a sweep name: {name!r}")
        return self.root / "sweeps" / f"{name}.json"

    def claim_path(self, job_id: str) -> Path:
        return self.root / "claims" / f"{self.job_dir(job_id).name}.json"

    def submissions_log(self) -> Path:
        """Every change of the `submissions` table, one JSON line each: `db rebuild` replays it, like the
        shards for jobs, so that a rebuilt store still knows the tasks a cluster runs for it."""
        return self.root / "slurm" / "submissions.jsonl"

    def resume_dir(self, pack_id: str) -> Path:
        return self.root / "resume" / pack_id

    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    # -- the database ---------------------------------------------------------------------------
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
        except duckdb.Error as exc:
            if is_full(exc):
                raise full_disk(exc, f"writing {self.path}") from exc
            error = damaged(self.path, exc)
            if error is None:
                raise
            raise error from exc
        finally:
            con.close()

    @contextmanager
    def reader(self):
        """A read-only connection: never blocks a reader on another reader."""
        con = open_read_only(self.path)
        try:
            yield con
        except duckdb.Error as exc:
            error = damaged(self.path, exc)
            if error is None:
                raise
            raise error from exc
        finally:
            con.close()

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


def open_read_only(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}; run a sweep first or pass --store PATH")
    return _open(path, True, 25)


READ_STATEMENTS = {"SELECT", "EXPLAIN"}


def _interrupt(cursor, worker, wait: float = 5.0) -> bool:
    """Stop the statement running on `cursor` in `worker` and wait up to `wait` seconds for the thread to
    end (asking again while it runs: a request that lands between two steps of the statement is not
    seen). Returns whether it ended; if not, the thread is left to end on its own."""
    global INTERRUPTED_STATEMENTS
    INTERRUPTED_STATEMENTS += 1
    deadline = time.monotonic() + wait
    while worker.is_alive() and time.monotonic() < deadline:
        try:
            cursor.interrupt()
        except duckdb.Error:
            pass
        worker.join(0.1)
    return not worker.is_alive()


def run_query(path: str | Path, sql: str, params: list[Any] | None = None, timeout: float | None = None):
    """Run one read-only statement; returns (column names, rows). Writes are refused before running.

    The statement runs in a thread so that Ctrl-C (KeyboardInterrupt here) and `timeout` seconds can
    interrupt it (QueryInterrupted); the connection is closed either way."""
    import threading

    con = open_read_only(path)
    cursor = con.cursor()  # the query's own connection, so that this thread may interrupt it
    outcome: dict[str, Any] = {}
    ended = True

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
                    ended = _interrupt(cursor, worker)
                    raise QueryInterrupted(f"the query ran past --timeout {timeout:g} s and was stopped")
        except KeyboardInterrupt:
            ended = _interrupt(cursor, worker)
            raise QueryInterrupted("the query was interrupted") from None
        if "error" in outcome:
            raise damaged(Path(path), outcome["error"]) or outcome["error"]
        return outcome["result"]
    finally:
        # a statement still running holds its connection: closing would wait for it, so it is left open
        for closable in (cursor, con) if ended else ():
            try:
                closable.close()
            except duckdb.Error:  # still marked busy after an interrupted statement; dropped all the same
                pass


def insert_rows(con, table: str, columns: tuple[str, ...], rows: list[list[Any]]) -> None:
    """Insert `rows` into `table` in one statement: each column goes in as one list parameter, zipped back
    into rows by unnest. DuckDB's executemany costs about a millisecond a row (2.2 s for one pinwheel
    job's points), this a few milliseconds in all."""
    if not rows:
        return
    names = ", ".join(columns)
    unnests = ", ".join(f"unnest(?) AS {c}" for c in columns)
    con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM (SELECT {unnests})",
                [list(column) for column in zip(*rows, strict=True)])
