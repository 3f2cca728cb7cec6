"""`--executor slurm` on a real Slurm: a private single-node cluster that scripts/slurm.sh starts for the
session (tests/slurm_cluster.py). CI installs Slurm and must run these; elsewhere they skip with the reason.

What they prove: a sweep goes through submit, array tasks, shards, ingest and status; a driver killed in the
middle of a sweep and run again re-attaches and submits nothing twice (Slurm's own job list is counted); a pack
whose time limit is shorter than its training is requeued by submitit and ends with the numbers of an
uninterrupted run, bit for bit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db.store import run_query
from tests.slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_present", "slurm_cluster")]


def _slurm_tasks(name: str) -> list[str]:
    """Every array task of the sweep that Slurm knows of, queued, running or ended (MinJobAge keeps ended jobs
    10 minutes): one line per task in `scontrol show job`."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if f"JobName=harness-{name} " in line]


def test_a_sweep_runs_through_real_slurm_end_to_end(tiny_sweep, tmp_path):
    store = tmp_path / "store" / "h.duckdb"
    sweep = tiny_sweep("e2e", epochs=1, grid="alpha = [0, 1000]")
    args = ["sweep", "run", str(sweep), "--store", str(store), "--executor", "slurm", "--pack-size", "1",
            "--slurm", "timeout_min=10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "2 to run in 2 packs on slurm (slurm, submitit)" in result.output
    assert "2 done, 0 failed, 0 diverged (2 tasks submitted by this run)" in result.output
    _, rows = run_query(store, "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FROM jobs")
    assert rows == [(2, 2)]
    _, subs = run_query(store, "SELECT task_id, state FROM submissions ORDER BY task_id")
    assert len(subs) == 2 and all(re.fullmatch(r"\d+_[01]", task) and state == "ended" for task, state in subs)
    assert len(_slurm_tasks("e2e")) == 2
    status = CliRunner().invoke(app, ["sweep", "status", "--store", str(store)])
    cells = [cell.strip() for cell in next(line for line in status.output.splitlines() if " e2e " in line).split("│")]
    assert cells[3:10] == ["2", "2", "0", "0", "0", "0", "0"], status.output  # jobs, done, ..., pending, stale
    again = CliRunner().invoke(app, args)
    assert "2 already in the store, 0 to run" in again.output
    assert len(_slurm_tasks("e2e")) == 2  # nothing submitted the second time


def test_a_driver_killed_mid_sweep_and_run_again_submits_nothing_twice(tiny_sweep, tmp_path):
    store = tmp_path / "store" / "h.duckdb"
    sweep = tiny_sweep("restart", epochs=40, grid="alpha = [0, 1000]")
    args = ["sweep", "run", str(sweep), "--store", str(store), "--executor", "slurm", "--pack-size", "1",
            "--slurm", "timeout_min=10"]
    driver = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_slurm_tasks("restart")) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
        assert len(_slurm_tasks("restart")) == 2, driver.communicate(timeout=30)[0] if driver.poll() else ""
        time.sleep(2)  # the driver records its submissions right after sbatch answers
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    running = [t for t in _slurm_tasks("restart") if "JobState=RUNNING" in t or "JobState=PENDING" in t]
    assert running, "the tasks ended before the driver was killed: the test proves nothing"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "2 jobs are in 2 Slurm tasks an earlier driver submitted" in result.output, result.output
    assert "(0 tasks submitted by this run)" in result.output
    assert len(_slurm_tasks("restart")) == 2, "a task was submitted twice"
    _, subs = run_query(store, "SELECT count(*), count(*) FILTER (WHERE state = 'ended') FROM submissions")
    assert subs == [(2, 2)]
    _, rows = run_query(store, "SELECT count(*) FILTER (WHERE status = 'done') FROM jobs")
    assert rows == [(2,)]


def test_a_pack_past_its_time_limit_is_requeued_and_ends_with_the_same_numbers(tiny_sweep, tmp_path):
    """Two-minute limit, signalled 30 s before it. Slurm may send the signal up to 60 s early (its documented
    resolution), so a run is signalled 30 to 90 s after it starts: never while Python, torch and the pickle load
    (about 10 s, before submitit handles the signal; with a one-minute limit the signal could land there and kill
    the task, as it once did in a run of the slow suite). The pack needs more than two minutes of training even on 2
    quiet cores (so that no run can finish it before the signal), saving every epoch: it ends in the third run or
    so. On busy cores it takes more runs (the limit allows 20)."""
    sweep = tiny_sweep("limit", epochs=240, subset=100, grid="alpha = [100]")
    reference = tmp_path / "reference" / "h.duckdb"
    local = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", str(reference)])
    assert local.exit_code == 0, local.output
    store = tmp_path / "store" / "h.duckdb"
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", str(store), "--executor", "slurm",
                                      "--save-every", "1", "--slurm", "timeout_min=2",
                                      "--slurm", "slurm_signal_delay_s=30", "--slurm", "slurm_max_num_timeout=20"])
    assert result.exit_code == 0, result.output + result.stderr
    tasks = _slurm_tasks("limit")
    assert len(tasks) == 1
    restarts = int(re.search(r"Restarts=(\d+)", tasks[0]).group(1))
    assert restarts >= 1, f"the task was never requeued, so the test proves nothing: {tasks[0]}"
    query = "SELECT e.epoch, e.loss, e.recon, e.kl, e.reg FROM epochs e ORDER BY e.epoch"
    _, expected = run_query(reference, query)
    _, got = run_query(store, query)
    assert len(got) == 240 and got == expected
    metrics = "SELECT split, name, value FROM metrics ORDER BY split, name"
    assert run_query(store, metrics)[1] == run_query(reference, metrics)[1]
    print(f"time-limit test: {restarts} requeues")
