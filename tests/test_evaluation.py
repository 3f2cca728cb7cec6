"""Evaluation as its own stage: training ends with every registry metric that applies, and `harness eval`
adds a metric to a finished store from the checkpoints alone, with the same numbers training gives."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import sweeps
from harness.db.ingest import Ingest, rebuild, write_shard
from harness.db.migrations import _runs_view
from harness.db.store import Store, run_query
from harness.executors.worker import run_pack
from harness.metrics.registry import METRICS, runs_columns
from harness.schema import Options
from harness.spec import Pack, load_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny shapes2d job (factors: shape, scale, orientation, posX, posY), trained and ingested."""
    job = load_sweep(SWEEPS / "independence.toml").jobs[0]
    dataset = Options("shapes2d", tuple(sorted({**dict(job.dataset.params), "subset": 256,
                                                "test_subset": 300, "stride": 8}.items())))
    job = replace(job, epochs=1, batch_size=64, latent_dim=4, dataset=dataset)
    store = Store(tmp_path_factory.mktemp("eval") / "h.duckdb")
    sweeps.register(store, "tiny", "-", "", "", [job.job_id])
    run_pack(Pack((job,)), store, "tiny", "cpu", None)
    Ingest(store).shards([job.job_id])
    return store, job


def values(store: Store, job_id: str) -> dict[tuple[str, str], tuple[float, int]]:
    _, rows = run_query(store.path, "SELECT metric, name, value, version FROM metrics WHERE job_id = ? "
                                    "AND split IN ('test', 'grid')", [job_id])
    return {(metric, name): (value, version) for metric, name, value, version in rows}


def test_training_runs_every_metric_that_applies(trained):
    store, job = trained
    got = values(store, job.job_id)
    for name in ("kim_mnih", "kim_mnih_dlib", "mig", "hoyer"):
        assert (name, name) in got and got[(name, name)][1] == METRICS[name].version
    assert 0.2 <= got[("kim_mnih", "kim_mnih")][0] <= 1 and 0 <= got[("mig", "mig")][0] <= 1
    assert {n for _, n in got} >= {f"info_{f}_max_nmi" for f in ("shape", "scale", "orientation", "posX", "posY")}
    _, rows = run_query(store.path, "SELECT metric, stat, count(*) FROM dim_stats WHERE job_id = ? GROUP BY ALL "
                                    "ORDER BY ALL", [job.job_id])
    counts = {(m, s): n for m, s, n in rows}
    assert counts[("mig", "mutual_info")] == 4 * 5  # every (dimension, factor)
    assert counts[("factor_info", "normalised_mi")] == 4 * 5
    assert counts[("class_magnitudes", "mean_abs_loc")] == 4 * 3  # 3 shapes are the classes
    _, runs = run_query(store.path, "SELECT kim_mnih, kim_mnih_dlib, mig FROM runs WHERE job_id = ?", [job.job_id])
    assert None not in runs[0]


def test_eval_adds_a_metric_from_the_checkpoint_alone(trained):
    """Drop mig and kim_mnih as if the store predated them; `harness eval` restores the same numbers
    from the checkpoint (same random stream), retrains nothing, and a rebuild keeps them."""
    store, job = trained
    before = values(store, job.job_id)
    shard = json.loads(store.shard_path(job.job_id).read_text())
    dropped = {"mig", "kim_mnih"}
    shard["metrics"] = [m for m in shard["metrics"] if m.get("metric") not in dropped]
    shard["dim_stats"] = [r for r in shard["dim_stats"] if r["metric"] not in dropped]
    write_shard(store, shard)
    rebuild(store)
    assert ("mig", "mig") not in values(store, job.job_id)
    _, epochs_before = run_query(store.path, "SELECT * FROM epochs ORDER BY ALL")

    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--metric", "mig", "--metric", "kim_mnih", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    assert "1 finished jobs, 1 to evaluate" in result.output and "stored mig, kim_mnih" in result.output
    after = values(store, job.job_id)
    for name in dropped:
        assert after[(name, name)] == before[(name, name)]
    _, epochs_after = run_query(store.path, "SELECT * FROM epochs ORDER BY ALL")
    assert epochs_after == epochs_before
    assert store.evaluation_path(job.job_id, "mig").exists()

    again = runner.invoke(app, ["eval", "--metric", "mig", "--store", str(store.path)])
    assert "0 to evaluate" in again.output  # already there at its current version
    rebuild(store)
    assert values(store, job.job_id)[("mig", "mig")] == before[("mig", "mig")]


def test_eval_refuses_an_unknown_metric(trained):
    store, _ = trained
    result = CliRunner().invoke(app, ["eval", "--metric", "nope", "--store", str(store.path)])
    assert result.exit_code == 2 and "unknown metric 'nope'" in result.stderr


def test_the_runs_view_has_a_column_per_registry_value_and_prior_option(trained):
    from harness.db.migrations import prior_columns
    from harness.models.priors import prior_schemas

    view = _runs_view()
    assert all(f"AS {column}" in view for column in runs_columns())
    assert {"kim_mnih", "kim_mnih_dlib", "mig", "hoyer"} <= set(runs_columns())
    options = {option for schema in prior_schemas().values() for option in schema}
    assert set(prior_columns()) == {f"prior_{o}" for o in options} and prior_columns()["prior_learn"] == "BOOLEAN"
    store, job = trained
    _, rows = run_query(store.path, "SELECT prior, prior_scale, prior_df, prior_learn FROM runs WHERE job_id = ?",
                        [job.job_id])
    assert rows == [("normal", 1.0, None, None)]


def test_aggregate_posterior_is_a_density_on_the_grid():
    import math

    import torch

    from harness.metrics.registry import GRID_SIZE, Encodings

    loc = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    enc = Encodings("test", loc, torch.full_like(loc, 0.3), torch.tensor([0, 1]), ("a", "b"))
    out = METRICS["aggregate_posterior"].compute(enc, torch.Generator())
    assert METRICS["aggregate_posterior"].applies(enc) and len(out.points) == GRID_SIZE**2
    assert out.values["aggregate_posterior_mass"] == pytest.approx(1.0, abs=1e-3)
    peak = max(out.points, key=lambda p: p.value)
    assert (peak.x, peak.y) in {(0.0, 0.0), (1.0, -1.0)}
    assert peak.value == pytest.approx(0.5 / (2 * math.pi * 0.09), rel=1e-3)


def test_tsne_runs_only_through_eval_and_stores_points(trained):
    store, job = trained
    assert not METRICS["tsne"].at_training
    _, before = run_query(store.path, "SELECT count(*) FROM points WHERE job_id = ? AND metric = 'tsne'", [job.job_id])
    assert before == [(0,)]
    result = CliRunner().invoke(app, ["eval", "--metric", "tsne", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    _, rows = run_query(store.path, "SELECT count(*), count(DISTINCT label), min(factor), max(factor), "
                                    "bool_and(isfinite(x) AND isfinite(y)) FROM points WHERE job_id = ? "
                                    "AND metric = 'tsne'", [job.job_id])
    count, labels, low, high, finite = rows[0]
    assert count == 300 and labels == 3 and finite  # every test point; 3 shapes; positions in the factor
    assert 0 <= low <= high < 32


def test_a_reader_sees_the_columns_of_a_metric_added_since(tmp_path, monkeypatch):
    """The runs view follows the registry: a store whose view predates a metric gets the new column when
    a reader (report, db query) opens it, without a migration."""
    from harness.metrics import registry

    store = Store(tmp_path / "h.duckdb")
    with store.connect():
        pass
    later = registry.Metric("later", 1, "a metric added after the store was written",
                            lambda enc, gen: registry.MetricOutput({}), columns=("later_value",))
    monkeypatch.setattr(registry, "METRICS", registry.Registry("metrics", {**registry.METRICS.builtins, "later": later},
                                                               "metric", callable))
    store.ensure_current()
    columns, _ = run_query(store.path, "SELECT * FROM runs")
    assert "later_value" in columns


def test_ingesting_a_result_again_keeps_what_eval_added(tmp_path):
    """Every `sweep run` ingests the shards of its finished jobs again; the evaluations that `harness eval`
    stored for them come back from their own shards instead of being dropped with the job's old rows."""
    from harness.db.store import run_query

    job = replace(load_sweep(SWEEPS / "clustering.toml").jobs[0], epochs=2)
    store = Store(tmp_path / "h.duckdb")
    sweeps.register(store, "tiny", "-", "", "", [job.job_id])
    run_pack(Pack((job,)), store, "tiny", "cpu", None)
    Ingest(store).shards([job.job_id])
    result = CliRunner().invoke(app, ["eval", "--metric", "tsne", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    sql = "SELECT count(*) FROM points WHERE job_id = ? AND metric = 'tsne'"
    assert run_query(store.path, sql, [job.job_id])[1] == [(400,)]
    assert Ingest(store).shards([job.job_id]) == 1  # what sweep run does with the shards it finds
    assert run_query(store.path, sql, [job.job_id])[1] == [(400,)]
