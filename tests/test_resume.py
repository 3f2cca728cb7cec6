"""A real SIGKILL in the middle of a sweep loses at most the jobs in flight; the same command finishes
the rest without duplicates. Ctrl-C stops cleanly. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.db.store import run_query

pytestmark = [pytest.mark.usefixtures("fashion_mnist_present"), pytest.mark.slow]

HARNESS = [sys.executable, "-m", "harness.cli"]


def start(sweep: Path, store: Path) -> subprocess.Popen:
    return subprocess.Popen([*HARNESS, "sweep", "run", str(sweep), "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_shards(store: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> list[Path]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        shards = sorted((store.parent / "jobs").glob("*/result.json"))
        if len(shards) >= count:
            return shards
        if process.poll() is not None:
            pytest.fail(f"the sweep ended early: {process.stdout.read()}")
        time.sleep(0.1)
    pytest.fail("no job finished in time")


def test_sigkill_then_rerun_completes_without_duplicates(tiny_sweep, tmp_path):
    sweep = tiny_sweep(name="killed", seeds="[1, 2]", epochs=3)  # 8 jobs
    store = tmp_path / "store" / "harness.duckdb"
    process = start(sweep, store)
    finished_before = wait_for_shards(store, 2, process)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker, mid-sweep
    process.wait(timeout=30)
    kept = {p.parent.name: p.stat().st_mtime_ns for p in finished_before}

    rerun = subprocess.run([*HARNESS, "sweep", "run", str(sweep), "--store", str(store)], capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(kept)} already in the store" in rerun.stdout or "already in the store" in rerun.stdout
    _, rows = run_query(store, "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE status = 'done') "
                               "FROM jobs")
    assert rows == [(8, 8, 8)]
    _, epochs = run_query(store, "SELECT count(*), count(DISTINCT (job_id, epoch)) FROM epochs")
    assert epochs == [(24, 24)]
    for job_id, mtime in kept.items():  # finished before the kill: not run again
        assert (store.parent / "jobs" / job_id / "result.json").stat().st_mtime_ns == mtime


def test_ctrl_c_stops_cleanly_and_keeps_what_finished(tiny_sweep, tmp_path):
    sweep = tiny_sweep(name="interrupted", seeds="[1, 2]", epochs=3)
    store = tmp_path / "store" / "harness.duckdb"
    process = start(sweep, store)
    wait_for_shards(store, 1, process)
    time.sleep(0.5)  # let the driver ingest the first pack
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted:" in output and "run the same command to continue" in output
    _, rows = run_query(store, "SELECT count(*) FROM jobs WHERE status = 'done'")
    assert 1 <= rows[0][0] < 8


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(p) for p in text.split()]
    return found


def test_a_worker_that_dies_fails_its_jobs_and_the_sweep_goes_on(tiny_sweep, tmp_path):
    sweep = tiny_sweep(name="crash", seeds="[1]", epochs=3)  # 4 jobs
    store = tmp_path / "store" / "harness.duckdb"
    process = start(sweep, store)
    wait_for_shards(store, 1, process)
    deadline = time.time() + 60
    workers = []
    while not workers and time.time() < deadline:  # the multiprocessing resource tracker is a child too
        workers = [p for p in children(process.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()
                   and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]
        time.sleep(0.05)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)  # like a segfault or the OOM killer
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output  # some jobs failed
    _, rows = run_query(store, "SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")
    counts = dict(rows)
    assert counts.get("failed", 0) >= 1 and sum(counts.values()) == 4
    _, errors = run_query(store, "SELECT DISTINCT error FROM jobs WHERE status = 'failed'")
    assert all("worker process on cpu died (exit code -9)" in e for (e,) in errors)


def workers_of(pid: int) -> list[int]:
    return [p for p in children(pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()
            and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_die_with_their_driver(tiny_sweep, tmp_path):
    """SIGKILL only the driver, at moments spread over a run (starting, training, between packs): its
    worker must be gone within seconds, never left to train or to wait for work for ever."""
    import random

    rng = random.Random(7)
    sweep = tiny_sweep(name="orphans", seeds="[1, 2]", epochs=3)
    store = tmp_path / "store" / "harness.duckdb"
    for _ in range(3):
        process = start(sweep, store)
        deadline, workers = time.time() + 60, []
        while not workers and time.time() < deadline:
            workers = workers_of(process.pid)
            time.sleep(0.05)
        assert workers, "no worker process found"
        time.sleep(rng.uniform(0.2, 4.0))
        os.kill(process.pid, signal.SIGKILL)  # the driver alone: its worker is not in the signal
        process.wait(timeout=30)
        deadline = time.time() + 10
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers), "a worker outlived its driver"


def test_a_second_driver_on_the_same_sweep_runs_nothing_twice(tiny_sweep, tmp_path):
    sweep = tiny_sweep(name="twice", seeds="[1, 2]", epochs=2)  # 8 jobs
    store = tmp_path / "store" / "harness.duckdb"
    first = start(sweep, store)
    head = ""
    while "to run" not in head:  # the plan's line, printed once the first driver holds its claims
        line = first.stdout.readline()
        assert line, head
        head += line
    assert "8 to run" in head, head
    second = subprocess.run([*HARNESS, "sweep", "run", str(sweep), "--store", str(store)], capture_output=True,
                            text=True, timeout=600)
    output, _ = first.communicate(timeout=600)
    output = head + output
    assert first.returncode == 0 and second.returncode == 0, output + second.stdout + second.stderr
    assert "8 jobs are being run by another driver" in second.stdout and "0 to run" in second.stdout
    assert "finished in" in output and "8 done" in output
    assert not list((store.parent / "claims").glob("*.json"))  # released when the run ended


def test_a_killed_pack_resumes_from_its_saved_state_to_the_same_numbers(tiny_sweep, tmp_path):
    """SIGKILL the driver and its worker once the pack has saved a resumable state; the rerun goes on from
    it, and the job's stored numbers equal those of a run that was never interrupted."""
    from harness.executors.worker import RESUME_EVERY

    sweep = tiny_sweep(name="resumed", seeds="[1]", epochs=3 * RESUME_EVERY)
    whole = tmp_path / "whole" / "harness.duckdb"
    assert subprocess.run([*HARNESS, "sweep", "run", str(sweep), "--store", str(whole), "--pack-size", "4"],
                          capture_output=True, text=True, timeout=600).returncode == 0
    store = tmp_path / "store" / "harness.duckdb"
    process = subprocess.Popen([*HARNESS, "sweep", "run", str(sweep), "--store", str(store), "--pack-size", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    states = []
    while not states and time.time() < deadline and process.poll() is None:
        states = list((store.parent / "resume").glob("*/state.json"))
        time.sleep(0.02)
    assert states, "no resumable state was written"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not list((store.parent / "jobs").glob("*/result.json"))  # killed before any job ended
    import json

    saved = json.loads(next((store.parent / "resume").glob("*/state.json")).read_text())
    rerun = subprocess.run([*HARNESS, "sweep", "run", str(sweep), "--store", str(store), "--pack-size", "4"],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    sql = "SELECT job_id, epoch, loss, recon, kl, reg FROM epochs ORDER BY ALL"
    assert run_query(store, sql)[1] == run_query(whole, sql)[1]
    sql = "SELECT job_id, name, value FROM metrics WHERE split = 'test' ORDER BY ALL"
    assert run_query(store, sql)[1] == run_query(whole, sql)[1]
    assert not list((store.parent / "resume").glob("*"))  # removed when the pack ended
    # the saved epochs were carried over, not trained again: their measured seconds are the killed run's
    for member in saved["members"]:
        _, rows = run_query(store, "SELECT epoch, seconds FROM epochs WHERE job_id = ? AND epoch <= ? ORDER BY epoch",
                            [member["job_id"], saved["epoch"]])
        assert rows == [(e["epoch"], e["seconds"]) for e in member["epochs"]] and len(rows) == saved["epoch"]
