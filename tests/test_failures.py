"""Failures must not look like success, and mistakes get one line: failed jobs keep a sweep unfinished,
running jobs show as running, a full disk leaves nothing half-written, a query can be stopped, and a
second file under the same sweep name is refused."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import jobs, sweeps
from harness.db.ingest import ingest_result
from harness.db.store import Store, StoreWriteError, atomic_write_json
from harness.spec import load_sweep


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def stored(tmp_path, tiny_sweep, failed: int = 1):
    """The tiny sweep's 4 jobs already in a store: `failed` of them failed, the rest done (no training)."""
    path = tiny_sweep()
    sweep = load_sweep(path)
    store = Store(tmp_path / "store" / "harness.duckdb")
    sweeps.register(store, sweep.name, sweep.path, sweep.description, path.read_text(), [j.job_id for j in sweep.jobs])
    with store.connect() as con:
        for i, job in enumerate(sweep.jobs):
            ingest_result(con, {"job_id": job.job_id, "spec": job.to_dict(), "numerics": 2, "sweep": sweep.name,
                                "status": "failed" if i < failed else "done", "error": "boom" if i < failed else ""})
    return path, store, sweep


def test_a_rerun_with_failed_jobs_says_so_and_exits_non_zero(tmp_path, tiny_sweep):
    path, store, _ = stored(tmp_path, tiny_sweep)
    result = invoke("sweep", "run", str(path), "--store", str(store.path))
    assert result.exit_code == 1, result.output
    assert "0 to run" in result.output and "1 failed jobs of this sweep wait for `--retry-failed`" in result.output


def test_status_and_plan_show_claimed_jobs_as_running(tmp_path, tiny_sweep):
    path = tiny_sweep()
    sweep = load_sweep(path)
    store = Store(tmp_path / "store" / "harness.duckdb")
    sweeps.register(store, sweep.name, sweep.path, "", path.read_text(), [j.job_id for j in sweep.jobs])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store.root / "claims").mkdir()
        store.claim_path(sweep.jobs[0].job_id).write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}"}}')
        status = invoke("sweep", "status", "--store", str(store.path)).output
        row = next(line for line in status.splitlines() if sweep.name in line)
        assert [c.strip() for c in row.split("│")[3:10]] == ["4", "0", "0", "0", "1", "3", "0"]
        plan = invoke("sweep", "plan", str(path), "--store", str(store.path)).output
        assert "1 running, 3 pending -> 3 packs" in plan
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreWriteError, match="No space left on device"):
        atomic_write_json(tmp_path / "jobs" / "x.json", {"a": 1})
    assert list((tmp_path / "jobs").iterdir()) == []


def test_a_long_query_stops_at_its_timeout(tmp_path, tiny_sweep):
    _, store, _ = stored(tmp_path, tiny_sweep)
    # in a process of its own, as a user runs it: DuckDB's threads may go on with the piece of the join they
    # hold for minutes after the statement is stopped, and the command must not wait for them on its way out
    query = subprocess.run([sys.executable, "-m", "harness.cli", "db", "query", "SELECT count(*) FROM range(20000000) "
                            "a, range(20000000) b WHERE a.range * b.range % 7 = 3", "--store", str(store.path),
                            "--timeout", "0.5"], capture_output=True, text=True, timeout=60)
    assert query.returncode == 1 and query.stderr == "error: the query ran past --timeout 0.5 s and was stopped\n", \
        query.stderr


def test_a_second_file_under_the_same_sweep_name_is_refused(tmp_path, tiny_sweep):
    path, store, sweep = stored(tmp_path, tiny_sweep, failed=0)
    other = tmp_path / "other" / "tiny.toml"
    other.parent.mkdir()
    other.write_text(path.read_text().replace("alpha = [0, 1000]", "alpha = [0, 10]"))
    result = invoke("sweep", "run", str(other), "--store", str(store.path))
    assert result.exit_code == 2
    assert f"sweep name '{sweep.name}' is already used in this store by {path}" in result.stderr
    assert len(jobs.statuses(store, [j.job_id for j in sweep.jobs])) == 4  # the first sweep's list is untouched


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    import signal
    import time

    # `python -m harness` is the `harness` script's entry point; the signal lands while torch loads
    process = subprocess.Popen([sys.executable, "-m", "harness", "--version"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    maps = f"/proc/{process.pid}/maps"
    while process.poll() is None and "libtorch" not in open(maps).read():
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (130, "", "error: interrupted while starting; nothing was done\n")


@pytest.mark.slow
def test_ctrl_c_stops_a_long_query(tmp_path, tiny_sweep):
    import signal
    import time

    _, store, _ = stored(tmp_path, tiny_sweep)
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "db", "query", "SELECT count(*) FROM "
                                "range(20000000) a, range(20000000) b WHERE a.range * b.range % 7 = 3", "--store",
                                str(store.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # past the imports: the query is running
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "the query was interrupted" in err, err


def test_mistakes_get_one_line(tmp_path, tiny_sweep):
    path, store, _ = stored(tmp_path, tiny_sweep, failed=0)
    cases = [
        (["sweep", "run", str(path), "--store", "/proc/nowhere/h.duckdb"], 1, "cannot write /proc/nowhere"),
        (["report", "figures", "--store", str(store.path), "--out", "/proc/nowhere"], 2, "--out /proc/nowhere"),
        (["db", "query", "SELECT 1", "--store", str(store.path), "--out", "/proc/nowhere/t.csv"], 1, "cannot write"),
        (["db", "query", "SELECT 1", "--store", str(store.path), "--out", str(tmp_path / "t.xlsx")], 2,
         "cannot tell the format"),
        (["db", "query", "SELECT alpah FROM runs", "--store", str(store.path)], 2, 'Candidate bindings: "alpha"'),
        (["sweep", "plan", str(path), "--store", str(store.path), "--device", "gpu"], 2, "'gpu' is not one of"),
    ]
    for args, code, words in cases:
        result = invoke(*args)
        assert result.exit_code == code, (args, result.output, result.stderr)
        text = result.stderr
        assert words in text and "Traceback" not in text, (args, text)


def test_version_and_format_from_the_extension(tmp_path, tiny_sweep):
    from harness.numerics import NUMERICS_VERSION

    assert f"numerics version {NUMERICS_VERSION}" in invoke("--version").output
    _, store, _ = stored(tmp_path, tiny_sweep, failed=0)
    out = tmp_path / "q.json"
    result = invoke("db", "query", "SELECT job_id FROM runs", "--store", str(store.path), "--out", str(out))
    assert result.exit_code == 0
    assert out.read_text().startswith("[")


def test_output_outside_a_terminal_keeps_whole_ids(tmp_path, tiny_sweep):
    path, store, sweep = stored(tmp_path, tiny_sweep, failed=0)
    env = {**os.environ, "COLUMNS": "60"}
    plan = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "plan", str(path), "--store",
                           str(store.path)], capture_output=True, text=True, env=env, timeout=120)
    assert all(job.job_id in plan.stdout for job in sweep.jobs), plan.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_present")
def test_the_gpu_check_runs_on_the_cpu_in_its_tiny_setting():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--tiny", "--device", "cpu", "--row-seconds", "5"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("pack of 3 against alone", "same job twice  ", "identical", "pack of 2, eager",
                 "hoyer at alpha 1000"):
        assert line in done.stdout, done.stdout
