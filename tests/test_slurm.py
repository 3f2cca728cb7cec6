"""The Slurm executor: submitit job arrays, one task per pack. submitit's local cluster runs the very
same path on this machine; a fake executor checks what happens when a task dies without a result."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import jobs, submissions, sweeps
from harness.db.ingest import Ingest
from harness.db.store import Store, run_query
from harness.driver import Ingested, drive, what_is_left
from harness.executors import slurm
from harness.executors.slurm import parse_parameters
from harness.spec import load_sweep, plan_packs


def test_parameters_are_typed():
    assert parse_parameters(["slurm_partition=gpu", "timeout_min=240", "mem_gb=7.5"]) == {
        "slurm_partition": "gpu", "timeout_min": 240, "mem_gb": 7.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_parameters(["gpu"])


def test_unknown_parameter_is_refused_before_the_store_is_touched(tiny_sweep, tmp_path):
    store = tmp_path / "store" / "h.duckdb"
    result = CliRunner().invoke(app, ["sweep", "run", str(tiny_sweep()), "--store", str(store), "--executor",
                                      "slurm", "--slurm-cluster", "local", "--slurm", "bogus=1"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --slurm: Parameter 'bogus'")
    assert not store.exists()


@pytest.mark.usefixtures("fashion_mnist_present")
def test_a_sweep_runs_as_a_job_array_on_submitits_local_cluster(tiny_sweep, tmp_path):
    store = tmp_path / "store" / "h.duckdb"
    args = ["sweep", "run", str(tiny_sweep(epochs=1)), "--store", str(store), "--executor", "slurm",
            "--slurm-cluster", "local", "--pack-size", "2", "--slurm", "timeout_min=10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "4 to run in 2 packs on submitit's local cluster" in result.output
    _, rows = run_query(store, "SELECT count(*), count(*) FILTER (WHERE status = 'done'), max(pack_size) FROM jobs")
    assert rows == [(4, 4, 2)]
    assert "4 already in the store, 0 to run" in CliRunner().invoke(app, args).output


@dataclass
class FakeTask:
    job_id: str


class FakeSubmitit:
    """Stands in for submitit's executor: counts submissions and hands out Slurm-like array task ids; the
    tasks never run (a test decides through `queued` whether Slurm still has them)."""

    cluster = "slurm"

    def __init__(self, array: int = 77):
        self.array, self.calls, self.tasks = array, 0, 0

    def map_array(self, fn, packs, *args):
        self.calls += 1
        self.tasks += len(packs)
        array, self.array = self.array, self.array + 1
        return [FakeTask(f"{array}_{i}") for i in range(len(packs))]


def _slurm(monkeypatch, live: dict[str, str], finals: dict[str, str] | None = None):
    """Make squeue report `live` (task -> state; mutate it to let tasks end) and sacct `finals`."""
    def pick(states, tasks):
        tasks = set(tasks)
        return {t: s for t, s in states.items() if t in tasks}

    monkeypatch.setattr(slurm, "queued", lambda cluster, tasks: pick(live, tasks))
    monkeypatch.setattr(slurm, "end_states", lambda tasks: pick(finals or {}, tasks))


def test_a_task_that_dies_without_shards_fails_its_jobs(tiny_sweep, tmp_path, monkeypatch):
    _slurm(monkeypatch, {}, {"77_0": "FAILED", "77_1": "OUT_OF_MEMORY"})
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    executor = slurm.SlurmExecutor(store, sweep, None, 2, FakeSubmitit(), "slurm", poll_seconds=0)
    ended = [e for e in drive(executor, plan_packs(sweep.jobs, 2), Ingest(store), poll_seconds=0)
             if isinstance(e, Ingested)]
    assert [len(e.job_ids) for e in ended] == [2, 2]
    _, rows = run_query(store.path, "SELECT status, error FROM jobs ORDER BY error")
    assert [status for status, _ in rows] == ["failed"] * 4
    assert rows[0][1] == "slurm task 77_0 ended in state FAILED without a result"
    assert rows[3][1] == "slurm task 77_1 ended in state OUT_OF_MEMORY without a result"
    _, subs = run_query(store.path, "SELECT task_id, state, note FROM submissions ORDER BY task_id")
    assert subs == [("77_0", "ended", "FAILED"), ("77_1", "ended", "OUT_OF_MEMORY")]


def test_a_driver_run_again_re_attaches_to_queued_tasks_and_submits_nothing_twice(tiny_sweep, tmp_path,
                                                                                    monkeypatch):
    sweep_file = tiny_sweep()
    sweep = load_sweep(sweep_file)
    store = Store(tmp_path / "h.duckdb")
    first = FakeSubmitit()
    live = {"77_0": "RUNNING", "77_1": "PENDING"}
    _slurm(monkeypatch, live)
    # the first driver registers the sweep, submits its two packs and is killed before any ends
    sweeps.register(store, sweep.name, sweep.path, sweep.description, sweep_file.read_text(),
                         [j.job_id for j in sweep.jobs])
    slurm.SlurmExecutor(store, sweep, None, 2, first, "slurm").submit(plan_packs(sweep.jobs, 2))
    assert first.tasks == 2
    left = what_is_left(store, sweep, write=False)
    assert left.todo == [] and set(left.in_tasks) == {j.job_id for j in sweep.jobs}
    plan = CliRunner().invoke(app, ["sweep", "plan", str(sweep_file), "--store", str(store.path)])
    assert "4 jobs: 0 done, 0 failed, 0 diverged, 4 running, 0 pending -> 0 packs" in plan.output, plan.output
    assert "2 Slurm tasks of an earlier driver are queued or running" in plan.output
    status = CliRunner().invoke(app, ["sweep", "status", "--store", str(store.path)])
    assert "Slurm has 2 of its tasks queued or running (77_0, 77_1)" in status.output, status.output

    # task 77_0 leaves the queue while no driver watches; 77_1 still runs when the second driver starts
    del live["77_0"]
    second = FakeSubmitit(array=90)
    monkeypatch.setattr(slurm, "submitit_executor", lambda *args: second)
    polls = []

    def poll(self, timeout):  # 77_1 ends after the driver has looked twice
        polls.append(1)
        if len(polls) == 2:
            live.clear()
        return real_poll(self, 0)

    real_poll = slurm.SlurmExecutor.poll
    monkeypatch.setattr(slurm.SlurmExecutor, "poll", poll)
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep_file), "--store", str(store.path), "--executor",
                                      "slurm", "--pack-size", "2"])
    assert second.calls == 0, "a task still queued was submitted again"
    assert "slurm task 77_0 ended while no driver watched" in result.output, result.output
    assert "2 jobs are in 1 Slurm tasks an earlier driver submitted (77_1): re-attached" in result.output
    assert result.exit_code == 1  # every job failed: the fake tasks never wrote results
    _, rows = run_query(store.path, "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM jobs")
    assert rows == [(4, 4)]
    _, subs = run_query(store.path, "SELECT task_id, state FROM submissions ORDER BY task_id")
    assert subs == [("77_0", "ended"), ("77_1", "ended")]


def test_where_slurm_cannot_be_asked_recorded_tasks_count_as_running(tiny_sweep, tmp_path, monkeypatch):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    _slurm(monkeypatch, {})
    slurm.SlurmExecutor(store, sweep, None, 4, FakeSubmitit(), "slurm").submit(plan_packs(sweep.jobs, 4))

    def unavailable(cluster, tasks):
        raise slurm.SlurmUnavailable("squeue is not installed here")

    monkeypatch.setattr(slurm, "queued", unavailable)
    left = what_is_left(store, sweep, write=True)
    assert left.todo == [] and all("unknown: squeue is not installed here" in str(task)
                                   for task in left.in_tasks.values())


def test_cancel_scancels_the_tasks_still_queued(tiny_sweep, tmp_path, monkeypatch):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    live = {"77_1": "PENDING"}
    _slurm(monkeypatch, live)
    slurm.SlurmExecutor(store, sweep, None, 2, FakeSubmitit(), "slurm").submit(plan_packs(sweep.jobs, 2))
    commands = []
    monkeypatch.setattr(slurm, "_run", lambda command, timeout=30: commands.append(command)
                        or subprocess.CompletedProcess(command, 0, "", ""))
    result = CliRunner().invoke(app, ["sweep", "cancel", "tiny", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    assert commands == [["scancel", "77_1"]]
    assert "cancelled 1 Slurm tasks of sweep tiny: 77_1" in result.output
    _, subs = run_query(store.path, "SELECT task_id, state FROM submissions ORDER BY task_id")
    assert subs == [("77_0", "submitted"), ("77_1", "cancelled")]
    # a cancelled task's jobs are pending again for the next run (77_0 is still recorded: it ended unseen)
    live.clear()
    assert {j.job_id for j in what_is_left(store, sweep, write=False).todo} == {j.job_id for j in sweep.jobs}


def test_a_rebuilt_store_still_knows_its_slurm_tasks(tiny_sweep, tmp_path, monkeypatch):
    """db rebuild replays runs/slurm/submissions.jsonl as it replays shards: otherwise a rebuilt store would
    forget the tasks Slurm still runs for it, and the next run would submit them again."""
    sweep_file = tiny_sweep()
    sweep = load_sweep(sweep_file)
    store = Store(tmp_path / "h.duckdb")
    sweeps.register(store, sweep.name, sweep.path, "", sweep_file.read_text(), [j.job_id for j in sweep.jobs])
    _slurm(monkeypatch, {"77_0": "RUNNING"})
    slurm.SlurmExecutor(store, sweep, None, 2, FakeSubmitit(), "slurm").submit(plan_packs(sweep.jobs, 2))
    submissions.close(store, ["77_1"], "cancelled", "harness sweep cancel")
    query = "SELECT task_id, sweep, pack_id, job_ids, state, note FROM submissions ORDER BY task_id"
    before = run_query(store.path, query)[1]
    store.path.unlink()
    assert CliRunner().invoke(app, ["db", "rebuild", "--store", str(store.path)]).exit_code == 0
    assert run_query(store.path, query)[1] == before
    assert [s["task_id"] for s in submissions.still_open(store, "tiny")] == ["77_0"]


def test_a_driver_watching_a_cancelled_task_leaves_its_jobs_pending(tiny_sweep, tmp_path, monkeypatch):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    live = {"77_0": "RUNNING", "77_1": "RUNNING"}
    _slurm(monkeypatch, live)
    executor = slurm.SlurmExecutor(store, sweep, None, 2, FakeSubmitit(), "slurm", poll_seconds=0)
    executor.submit(plan_packs(sweep.jobs, 2))
    monkeypatch.setattr(slurm, "_run", lambda command, timeout=30: subprocess.CompletedProcess(command, 0, "", ""))
    assert slurm.cancel(store, "tiny") == ["77_0", "77_1"]
    live.clear()  # scancel took them out of the queue; the driver sees them gone at its next poll
    assert [len(e.job_ids) for e in executor.poll(0)] == [2, 2]
    assert jobs.statuses(store, [j.job_id for j in sweep.jobs]) == {}  # not failed: pending for the next run
    assert len(what_is_left(store, sweep, write=True).todo) == 4
