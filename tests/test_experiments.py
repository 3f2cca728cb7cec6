"""Each experiment's sweep file validates, and its first job trains end to end on tiny settings through
the same path a worker takes (data loading, packed training, shards)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.db.store import Store
from harness.executors.worker import run_pack
from harness.schema import Options
from harness.spec import Pack, load_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def tiny(job, epochs: int, batch: int, **data_options):
    dataset = Options(job.dataset.name, tuple(sorted({**dict(job.dataset.params), **data_options}.items())))
    return replace(job, epochs=epochs, batch_size=batch, dataset=dataset)


@pytest.mark.parametrize("name, count", [("sparsity", 90), ("quickstart", 6), ("clustering", 48),
                                         ("independence", 84), ("rotated_mnist", 24)])
def test_every_sweep_file_validates(name, count):
    assert len(load_sweep(SWEEPS / f"{name}.toml").jobs) == count


def shard(store: Store, job_id: str) -> dict:
    return json.loads(store.shard_path(job_id).read_text())


def test_clustering_job_trains_on_pinwheel(tmp_path):
    jobs = load_sweep(SWEEPS / "clustering.toml").jobs
    pack = Pack((tiny(jobs[0], epochs=3, batch=400), tiny(jobs[-1], epochs=3, batch=400)))
    store = Store(tmp_path / "h.duckdb")
    run_pack(pack, store, "clustering", "cpu", None)
    for job in pack.jobs:
        result = shard(store, job.job_id)
        assert result["status"] == "done", result["error"]
        assert len(result["epochs"]) == 3


def test_independence_job_trains_on_shapes2d(tmp_path):
    job = load_sweep(SWEEPS / "independence.toml").jobs[0]
    small = tiny(job, epochs=1, batch=64, subset=256, test_subset=128, stride=8)  # a 1,440-image grid to score
    store = Store(tmp_path / "h.duckdb")
    run_pack(Pack((small,)), store, "independence", "cpu", None)
    result = shard(store, small.job_id)
    assert result["status"] == "done", result["error"]
    assert {m["name"] for m in result["metrics"]} >= {"elbo", "hoyer", "recon_mse"}
    # Kim & Mnih read the whole factor grid, the other metrics the test split
    splits = {m["name"]: m["split"] for m in result["metrics"]}
    assert splits["kim_mnih"] == splits["kim_mnih_cm"] == splits["kim_mnih_dlib"] == "grid"
    assert splits["mig"] == splits["hoyer"] == "test"
    votes = [r for r in result["dim_stats"] if r["metric"] == "kim_mnih"]
    assert sum(r["value"] for r in votes) == 20_000 and {r["split"] for r in votes} == {"grid"}


def test_missing_dataset_fails_the_job_with_a_clear_error(tmp_path, monkeypatch):
    from harness.datasets import sources

    monkeypatch.setattr(sources, "DEFAULT_CACHE", tmp_path / "empty-cache")
    job = tiny(load_sweep(SWEEPS / "rotated_mnist.toml").jobs[0], epochs=1, batch=50)
    store = Store(tmp_path / "h.duckdb")
    root = tmp_path / "empty-root"
    root.mkdir()
    run_pack(Pack((job,)), store, "rotated_mnist", "cpu", str(root))
    result = shard(store, job.job_id)
    assert result["status"] == "failed"
    assert result["error"].startswith("DataUnavailable: ") and "mnist" in result["error"].lower()
    assert "\n" not in result["error"]


def test_iwae_is_recorded_when_asked_for(tmp_path):
    job = load_sweep(SWEEPS / "clustering.toml").jobs[0]
    small = replace(tiny(job, epochs=2, batch=400, n_test=25), iwae_k=50)
    store = Store(tmp_path / "h.duckdb")
    run_pack(Pack((small,)), store, "clustering", "cpu", None)
    metrics = {m["name"]: m["value"] for m in shard(store, small.job_id)["metrics"]}
    assert metrics["iwae"] >= metrics["elbo"] - 0.5  # the IWAE bound is the tighter one, up to noise
