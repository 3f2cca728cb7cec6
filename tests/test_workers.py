"""CPU workers and threads chosen per kind of pack (harness.workers): the FLOP count agrees with torch's
own counter, the rule gives tiny models one single-threaded worker per core and large ones more threads,
memory caps the workers, the overrides win, and a run records what it used."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from harness import workers
from harness.cli import app
from harness.datasets import planned_sizes
from harness.db.store import Store, run_query
from harness.executors.local import LocalExecutor, plan_cpu
from harness.models import nets
from harness.models.likelihoods import build_likelihood
from harness.spec import JobSpec, load_sweep

PINWHEEL = """
[sweep]
name = "{name}"
seeds = {seeds}
[base]
dataset = {{ name = "pinwheel", n_train = 20, n_test = 20 }}
arch = "mlp"
latent_dim = 2
likelihood = "normal"
prior = {{ name = "normal" }}
divergence = "none"
epochs = 2
batch_size = 40
lr = 1e-3
[grid]
alpha = [0]
"""


def pinwheel_sweep(tmp_path, name="pin", seeds="[1, 2, 3]"):
    path = tmp_path / f"{name}.toml"
    path.write_text(PINWHEEL.format(name=name, seeds=seeds))
    return path


SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def _job(sweep: str, batch: int | None = None) -> JobSpec:
    """The last job of one of the repository's sweep files, at another batch size where given."""
    job = load_sweep(SWEEPS / sweep).jobs[-1]
    return replace(job, batch_size=batch) if batch else job


CASES = ["demo/clustering.toml", "demo/rotated_mnist.toml", "canary.toml", "quickstart.toml",
         "demo/independence.toml"]


@pytest.mark.parametrize("sweep", CASES)
def test_the_flop_count_agrees_with_torchs_counter(sweep):
    job = _job(sweep)
    batch, shape = job.batch_size, planned_sizes(job.dataset)[2]
    encoder, decoder = nets.build(job.arch, 2, job.latent_dim, shape,
                                  build_likelihood(job.likelihood).params_per_pixel)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        loc, _ = encoder(torch.zeros(2, batch, *shape))
        decoder(loc)
    counted = 3 * counter.get_total_flops()
    assert workers.step_flops(job, members=2) == pytest.approx(counted, rel=0.05)


def test_tiny_models_get_one_single_threaded_worker_per_core():
    job = _job("demo/clustering.toml")
    choice = workers.choose(job, 1, packs=9, n_cores=2, memory=2**34)
    assert (choice.workers, choice.threads) == (2, 1)
    assert "2 workers x 1 thread" in choice.why
    assert workers.choose(job, 1, packs=9, n_cores=16, memory=2**34).workers == 9  # no more than the packs


def test_large_models_get_more_threads_and_fewer_workers():
    job = _job("quickstart.toml")  # conv32 at batch 500: about 27 GFLOP a step
    assert (lambda c: (c.workers, c.threads))(workers.choose(job, 1, packs=6, n_cores=2, memory=2**34)) == (1, 2)
    assert (lambda c: (c.workers, c.threads))(workers.choose(job, 1, packs=6, n_cores=16, memory=2**34)) == (6, 2)
    small = _job("canary.toml")  # conv32 at batch 100: about 5 GFLOP, one thread
    assert workers.choose(small, 1, packs=6, n_cores=2, memory=2**34).threads == 1


def test_memory_caps_the_workers_and_the_overrides_win():
    job = _job("independence.toml")  # the full shapes2d grid: 12 GB of float32
    capped = workers.choose(job, 1, packs=4, n_cores=2, memory=20 * 2**30)
    assert capped.workers == 1 and "memory" in capped.why
    forced = workers.choose(job, 1, packs=4, n_cores=2, memory=20 * 2**30, workers=3, threads=2)
    assert (forced.workers, forced.threads) == (3, 2)
    assert "--workers" in forced.why and "--threads" in forced.why


def test_mixed_kinds_share_the_planned_threads(tmp_path):
    """Two kinds in one sweep: each pack keeps its kind's threads, and the budget is the largest kind's."""
    tiny = load_sweep(pinwheel_sweep(tmp_path)).jobs
    large = [_job("quickstart.toml")]
    planned = plan_cpu(list(tiny) + large, 1)
    threads = [planned.threads[p.pack_id] for p in planned.packs]
    assert threads[:3] == [1, 1, 1] and threads[3] >= 1
    assert len(planned.notes) == 2 and planned.budget >= max(threads)


def test_a_cpu_run_records_its_threads_and_workers(tmp_path):
    store = tmp_path / "h.duckdb"
    sweep = pinwheel_sweep(tmp_path)
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", str(store), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "pinwheel mlp: 2 workers x 1 thread" in result.output
    _, rows = run_query(store, "SELECT DISTINCT run_options FROM jobs")
    assert [{k: json.loads(r[0])[k] for k in ("threads", "workers")} for r in rows] == [{"threads": 1, "workers": 2}]

    again = tmp_path / "again" / "h.duckdb"  # its own folder: shards live beside the database
    result = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", str(again), "--device", "cpu",
                                      "--workers", "1", "--threads", "2"])
    assert result.exit_code == 0, result.output
    _, rows = run_query(again, "SELECT DISTINCT run_options FROM jobs")
    assert [{k: json.loads(r[0])[k] for k in ("threads", "workers")} for r in rows] == [{"threads": 2, "workers": 1}]


def test_plan_shows_the_choice_and_bad_overrides_are_one_line(tmp_path):
    sweep = pinwheel_sweep(tmp_path)
    store = str(tmp_path / "h.duckdb")
    planned = CliRunner().invoke(app, ["sweep", "plan", str(sweep), "--store", store, "--device", "cpu"])
    assert planned.exit_code == 0, planned.output
    assert "pinwheel mlp: 2 workers x 1 thread" in planned.output
    zero = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", store, "--workers", "0"])
    assert zero.exit_code == 2 and "--workers" in zero.output
    slurm = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--store", store, "--executor", "slurm",
                                     "--threads", "2"])
    assert slurm.exit_code == 2
    assert "--workers and --threads are for the local executor" in slurm.output + slurm.stderr
    assert not Store(store).path.exists()  # refused before the store was touched


def test_the_executor_waits_for_threads_before_handing_out_a_pack(tmp_path):
    """A pack that asks for more threads than are free waits for the packs in flight."""
    sweep = load_sweep(pinwheel_sweep(tmp_path))
    executor = LocalExecutor(Store(tmp_path / "h.duckdb"), sweep, ["cpu"], None, None)
    packs = executor.plan(list(sweep.jobs))
    executor._pack_threads = {packs[0].pack_id: 1, packs[1].pack_id: 2, packs[2].pack_id: 1}
    executor._budget = 2
    sent = []

    class Queue:
        def put(self, item):
            sent.append(item)

    executor._workers = {slot: (None, Queue(), None) for slot in executor._slots}
    executor._pending = list(packs)
    for slot in executor._slots:
        executor._hand_out(slot)
    assert [item[0].pack_id for item in sent] == [packs[0].pack_id]  # the 2-thread pack waits for the first
    assert sent[0][1].threads == 1
