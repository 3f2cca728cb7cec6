"""Job claims name their process by pid and start time: a claim whose pid now belongs to another process
(pid reuse) is stale and taken over; a claims folder or a claim that is not what the harness wrote is one
line, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from harness.db import claims
from harness.db.store import Store

JOB = "0123456789abcdef"


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "h.duckdb")


def test_a_claim_records_when_its_process_started(store):
    mine, others = claims.claim(store, [JOB])
    assert mine == [JOB] and not others
    holder = claims.owner(store, JOB)
    assert holder["start"] == claims.process_start(os.getpid()) is not None


def test_a_reused_pid_does_not_hold_a_job(store):
    """A live process with the claim's pid but another start time is not the claim's owner."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (store.root / "claims").mkdir(parents=True)
        record = {"pid": live.pid, "host": socket.gethostname(), "since": 0.0,
                  "start": claims.process_start(live.pid) - 1}
        store.claim_path(JOB).write_text(json.dumps(record))
        assert claims.running(store, [JOB]) == set()
        mine, others = claims.claim(store, [JOB])
        assert mine == [JOB] and not others
        # the same pid with its own start time is the owner, and holds the job
        claims.release(store, [JOB])
        store.claim_path(JOB).write_text(json.dumps({**record, "start": claims.process_start(live.pid)}))
        assert claims.running(store, [JOB]) == {JOB}
        assert claims.claim(store, [JOB])[0] == []
    finally:
        live.kill()
        live.wait()


def test_a_claims_folder_that_is_a_file_or_a_claim_that_is_a_folder_is_one_line(store):
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "claims").write_text("")
    with pytest.raises(claims.ClaimsUnusable, match="is not a folder"):
        claims.claim(store, [JOB])
    (store.root / "claims").unlink()
    store.claim_path(JOB).mkdir(parents=True)
    with pytest.raises(claims.ClaimsUnusable, match="is a folder, not a claim"):
        claims.claim(store, [JOB])
