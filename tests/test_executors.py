"""The executor layer: the registry, how the local executor plans packs, and run options reaching the store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from harness import packing
from harness.cli import app
from harness.db.store import Store, run_query
from harness.executors.local import LocalExecutor
from harness.executors.registry import EXECUTORS
from harness.spec import load_sweep


def test_the_registry_names_both_executors():
    assert sorted(EXECUTORS) == ["local", "slurm"]


def test_the_local_executor_refuses_slurm_options(tiny_sweep, tmp_path):
    with pytest.raises(ValueError, match="the local executor takes no parameters"):
        EXECUTORS["local"].create(store=Store(tmp_path / "h.duckdb"), sweep=load_sweep(tiny_sweep()), data_root=None,
                                  pack_size=None, parameters=["timeout_min=5"])


def test_on_a_gpu_without_pack_size_the_local_executor_measures_each_kind_of_pack(tiny_sweep, tmp_path,
                                                                                  monkeypatch):
    """Without --pack-size on a GPU the pack size comes from harness.packing, once per kind of pack; with it,
    or on the CPU, nothing is measured."""
    sweep = load_sweep(tiny_sweep(seeds="[1, 2, 3]"))  # 12 jobs of one kind
    asked = []
    monkeypatch.setattr("harness.datasets.load_dataset", lambda spec, root, device, dtype: "data on " + device)
    monkeypatch.setattr(packing, "choose_pack_size",
                        lambda jobs, data, device: asked.append((len(jobs), data)) or (5, "pack size 5: measured"))
    store = Store(tmp_path / "h.duckdb")
    gpu = LocalExecutor(store, sweep, ["cuda:0"], None, None)
    packs = gpu.plan(list(sweep.jobs))
    assert [len(p.jobs) for p in packs] == [5, 5, 2]
    assert asked == [(12, "data on cuda:0")]
    assert gpu.notes == ["fashion_mnist conv32: pack size 5: measured"]
    assert [len(p.jobs) for p in LocalExecutor(store, sweep, ["cuda:0"], None, 4).plan(list(sweep.jobs))] == [4] * 3
    assert [len(p.jobs) for p in LocalExecutor(store, sweep, ["cpu"], None, None).plan(list(sweep.jobs))] == [1] * 12
    assert len(asked) == 1


@pytest.mark.usefixtures("fashion_mnist_present")
def test_how_a_pack_ran_is_stored_with_each_job(tiny_sweep, tmp_path):
    store = tmp_path / "h.duckdb"
    result = CliRunner().invoke(app, ["sweep", "run", str(tiny_sweep(epochs=1)), "--store", str(store),
                                      "--cudnn-benchmark", "--pack-size", "4"])
    assert result.exit_code == 0, result.output
    _, rows = run_query(store, "SELECT DISTINCT run_options FROM jobs")
    # on a CPU with the threads and workers it ran with (harness.workers: a small pack, one thread)
    assert [json.loads(r[0]) for r in rows] == [{"compile": False, "compiled": False, "compile_error": "",
                                                 "deterministic": False, "threads": 1, "workers": 1}]
