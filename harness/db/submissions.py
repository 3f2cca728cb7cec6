"""Cluster tasks a driver submitted (one per pack), so that a driver run again re-attaches to those still
queued or running instead of submitting their jobs twice.

Every change goes to the store's submissions log (one JSON line each) before the `submissions` table:
`db rebuild` replays the log as it replays the shards. States: submitted (the cluster has it), ended (its
shards are ingested or its jobs marked failed) or cancelled (`harness sweep cancel`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from harness.db.store import Store, timestamp


def add(store: Store, sweep: str, cluster: str, tasks: list[tuple[str, str, list[str]]]) -> None:
    """Record submitted cluster tasks as (task_id, pack_id, job_ids), state `submitted`."""
    events = [{"event": "submitted", "task_id": task, "sweep": sweep, "cluster": cluster, "pack_id": pack,
               "job_ids": list(ids), "at": time.time()} for task, pack, ids in tasks]
    _log(store, events)
    with store.connect() as con:
        apply(con, events)


def still_open(store: Store, sweep: str | None = None) -> list[dict[str, Any]]:
    """The tasks still `submitted` (of one sweep, or all), oldest first, as dicts of the table's columns."""
    if not store.path.exists():
        return []
    store.ensure_current()
    with store.reader() as con:
        cursor = con.execute("""SELECT task_id, sweep, cluster, pack_id, job_ids, submitted FROM submissions
                                WHERE state = 'submitted' AND (? IS NULL OR sweep = ?)
                                ORDER BY submitted, task_id""", [sweep, sweep])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def close(store: Store, task_ids: Iterable[str], state: str, note: str = "") -> None:
    """Mark tasks `ended` or `cancelled`, with a note (e.g. the state the cluster gave)."""
    ids = list(task_ids)
    if ids:
        events = [{"event": state, "task_ids": ids, "note": note, "at": time.time()}]
        _log(store, events)
        with store.connect() as con:
            apply(con, events)


def logged(store: Store) -> list[dict[str, Any]]:
    """The events of the submissions log, oldest first."""
    path = store.submissions_log()
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut short by a crash mid-write: the ones before it stand
            continue
    return events


def apply(con, events: list[dict[str, Any]]) -> None:
    """Apply submissions-log events to the table."""
    for event in events:
        if event["event"] == "submitted":
            con.execute("""INSERT OR REPLACE INTO submissions (task_id, sweep, cluster, pack_id, job_ids, submitted,
                           state) VALUES (?, ?, ?, ?, ?, ?, 'submitted')""",
                        [event["task_id"], event["sweep"], event["cluster"], event["pack_id"], event["job_ids"],
                         timestamp(event["at"])])
        else:
            con.execute("""UPDATE submissions SET state = ?, ended = ?, note = ? WHERE list_contains(?, task_id)""",
                        [event["event"], timestamp(event["at"]), event.get("note", ""), event["task_ids"]])


def _log(store: Store, events: list[dict[str, Any]]) -> None:
    path = store.submissions_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write("".join(json.dumps(event, sort_keys=True) + "\n" for event in events))
        handle.flush()
        os.fsync(handle.fileno())
