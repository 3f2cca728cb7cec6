"""The Slurm executor: submitit job arrays, one task per pack. submitit's local cluster runs the very
same path on this machine; a fake executor checks what happens when a task dies without a result."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db.store import Store, run_query
from harness.executors.slurm import parse_parameters, run_slurm
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
    assert "4 to run in 2 packs on submitit (local)" in result.output
    _, rows = run_query(store, "SELECT count(*), count(*) FILTER (WHERE status = 'done'), max(pack_size) FROM jobs")
    assert rows == [(4, 4, 2)]
    assert "4 already in the store, 0 to run" in CliRunner().invoke(app, args).output


@dataclass
class FakeTask:
    job_id: str
    state: str = "FAILED"

    def done(self) -> bool:
        return True


class FakeExecutor:
    """Tasks that end at once without running anything, like a node that died."""

    def map_array(self, fn, packs, *args):
        return [FakeTask(f"77_{i}") for i in range(len(packs))]


def test_a_task_that_dies_without_shards_fails_its_jobs(tiny_sweep, tmp_path):
    jobs = load_sweep(tiny_sweep()).jobs
    packs = plan_packs(jobs, 2)
    store = Store(tmp_path / "h.duckdb")
    ended = list(run_slurm(packs, store, "tiny", None, FakeExecutor(), poll_seconds=0))
    assert [len(e.job_ids) for e in ended] == [2, 2]
    _, rows = run_query(store.path, "SELECT status, error FROM jobs ORDER BY job_id")
    assert len(rows) == 4 and all(status == "failed" for status, _ in rows)
    assert rows[0][1].startswith("slurm task 77_") and "ended in state FAILED without a result" in rows[0][1]
