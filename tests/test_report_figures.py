"""Every figure from a store of synthetic shards (no training), in the house style (harness/report/style.py):
lines join only settings that differ in the variable they walk, each point says what sets it apart, labels
overlap nothing, every colour has a scale, factors are named by their values, and each figure states its
budget. A figure that breaks the style warns (style.FigureWarning), and here a warning is an error."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import sweeps
from harness.db.ingest import ingest_result
from harness.db.store import Store
from harness.numerics import NUMERICS_VERSION as NV
from harness.report import style
from harness.report.figures import Selection, disentanglement_vs_reconstruction
from harness.spec import validate_job

pytestmark = pytest.mark.filterwarnings("error::harness.report.style.FigureWarning")

ROTATED = {"dataset": {"name": "rotated_mnist", "subset": 500, "subset_mode": "stratified", "test_subset": 2000},
           "arch": "mlp400", "latent_dim": 6, "likelihood": "bernoulli",
           "prior": {"name": "sparse", "gamma": 0.8}, "divergence": "mmd_dim", "epochs": 10, "batch_size": 500,
           "lr": 5e-4, "iwae_k": 10}
# the demo's settings (alpha, beta, gamma): an alpha sweep at beta 1, and the report's settings off it
SETTINGS = [(0, 1, 0.8), (100, 1, 0.8), (1000, 1, 0.8), (0, 1, 0.0), (0, 128, 0.8), (100, 10, 0.8)]
PINWHEEL = {"dataset": {"name": "pinwheel"}, "arch": "mlp", "latent_dim": 2, "likelihood": "normal",
            "prior": {"name": "mixture", "variance": 0.03}, "divergence": "kld_inc", "epochs": 500,
            "batch_size": 400, "lr": 1e-3}


def _metrics(**values: float) -> list[dict]:
    return [{"split": "test", "name": k, "value": v, "metric": k, "version": 1} for k, v in values.items()]


def _ingest(store: Store, sweep: str, shards: list[dict]) -> None:
    sweeps.register(store, sweep, "-", f"synthetic {sweep}", "", [s["job_id"] for s in shards])
    with store.connect() as con:
        for shard in shards:
            ingest_result(con, {"status": "done", "sweep": sweep, "numerics": NV, "git_commit": "abcdef123", **shard})


def rotated_shards(rng: np.random.Generator) -> list[dict]:
    """The demo's six settings, the alpha 0 one with two seeds; Kim & Mnih and the reconstruction error
    within a hair of each other, so that naive labels would pile up."""
    shards = []
    for k, (alpha, beta, gamma) in enumerate(SETTINGS):
        for seed in (1, 2) if k == 0 else (1,):
            raw = {**ROTATED, "alpha": alpha, "beta": beta, "prior": {"name": "sparse", "gamma": gamma}}
            spec = validate_job(raw, seed)
            dims = [{"split": "test", "metric": "class_magnitudes", "stat": "mean_abs_loc", "dim": d, "key": c,
                     "key_index": i, "value": float(rng.uniform())} for i, c in enumerate("012") for d in range(6)]
            dims += [{"split": "test", "metric": "factor_info", "stat": stat, "dim": d, "key": "angle",
                      "key_index": 1, "value": float(rng.uniform(0, 0.2))}
                     for stat in ("normalised_mi", "abs_corr") for d in range(6)]
            points = [{"split": "test", "metric": "tsne", "idx": i, "x": float(rng.normal()), "y": float(rng.normal()),
                       "value": None, "label": i % 10, "factor": i % 5} for i in range(60)]
            shards.append({"job_id": spec.job_id, "spec": spec.to_dict(), "dim_stats": dims, "points": points,
                           "metrics": _metrics(hoyer=0.3 + alpha / 5000 + 0.01 * seed, kim_mnih=0.40 + 0.001 * k,
                                               recon_mse=0.01750 + 0.00001 * k, elbo=-150.0 - k, iwae=-145.0 - k)})
    return shards


def pinwheel_shards() -> list[dict]:
    """A 2 x 2 grid of (alpha, beta), one seed; the aggregate posterior on an 11 x 11 grid: four blobs,
    except at beta 2 (one blob, a hundred times less dense)."""
    axis = np.linspace(-2.5, 2.5, 11)
    shards = []
    for alpha in (0, 10):
        for beta in (0, 2):
            spec = validate_job({**PINWHEEL, "alpha": alpha, "beta": beta}, 1)
            centres = [(0.0, 0.0)] if beta else [(1.5, 0), (0, 1.5), (-1.5, 0), (0, -1.5)]
            points = []
            for i, (y, x) in enumerate((y, x) for y in axis for x in axis):
                value = sum(math.exp(-((x - a) ** 2 + (y - b) ** 2) / 0.1) for a, b in centres) / (100 if beta else 1)
                points.append({"split": "test", "metric": "aggregate_posterior", "idx": i, "x": float(x),
                               "y": float(y), "value": value, "label": None, "factor": None})
            shards.append({"job_id": spec.job_id, "spec": spec.to_dict(), "points": points,
                           "metrics": _metrics(class_separation=0.9 - 0.3 * beta)})
    return shards


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("figures") / "h.duckdb")
    _ingest(store, "rot", rotated_shards(np.random.default_rng(0)))
    _ingest(store, "pin", pinwheel_shards())
    return store


@pytest.fixture(scope="module")
def reports(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    result = CliRunner().invoke(app, ["report", "figures", "--store", str(store.path), "--out", str(out),
                                      "--no-job-images"])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def _rows(path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_every_figure_is_drawn_in_the_house_style(reports):
    """Drawn without a FigureWarning (an error here): no label overlaps, every colour has a scale."""
    for name in ("sparsity_vs_alpha-rot", "class_magnitudes-rot", "disentanglement_vs_reconstruction-rot",
                 "tsne-rot", "angle_information-rot", "iwae-rot", "clustering_density-pin"):
        for suffix in ("png", "pdf", "csv"):
            assert (reports / f"{name}.{suffix}").stat().st_size > 0, name


def test_a_line_joins_only_settings_that_differ_in_the_variable_it_walks(reports):
    rows = _rows(reports / "disentanglement_vs_reconstruction-rot.csv")
    lines: dict[str, list[dict]] = {}
    for r in rows:
        lines.setdefault(r["line_id"], []).append(r)
    joined = {k: sorted((float(r["alpha"]), float(r["beta"])) for r in v) for k, v in lines.items() if k}
    # beta walks at alpha 0 and at alpha 100; alpha 1000 and the classic VAE stand alone
    assert sorted(joined.values()) == [[(0.0, 1.0), (0.0, 128.0)], [(100.0, 1.0), (100.0, 10.0)]]
    assert {(float(r["alpha"]), float(r["gamma"])) for r in lines[""]} == {(1000.0, 0.8), (0.0, 0.0)}
    for v in lines.values():
        for r in v:
            assert (r["alpha"], r["gamma"]) == (v[0]["alpha"], v[0]["gamma"]) or not r["line_id"]
    # each point says what sets it apart, the seeds where they differ; none is labelled by beta alone
    labels = {(float(r["alpha"]), float(r["beta"]), float(r["gamma"])): r["label"] for r in rows}
    assert labels[(100.0, 10.0, 0.8)] == "alpha 100, beta 10, n=1"
    assert labels[(0.0, 1.0, 0.8)] == "alpha 0, beta 1, n=2"
    assert len(set(labels.values())) == len(labels)
    sparsity = _rows(reports / "sparsity_vs_alpha-rot.csv")
    for line in {r["line_id"] for r in sparsity}:
        members = [r for r in sparsity if r["line_id"] == line]
        assert len({(r["beta"], r["gamma"]) for r in members}) == 1 and len({r["alpha"] for r in members}) == len(
            members)
    legends = {r["legend"] for r in sparsity}
    assert legends == {"Gaussian (gamma 0), beta 1", "spike-and-slab, gamma 0.8, beta 1",
                       "spike-and-slab, gamma 0.8, beta 10", "spike-and-slab, gamma 0.8, beta 128"}


def test_the_angle_is_named_in_degrees(reports):
    values = {r["factor_value"] for r in _rows(reports / "tsne-rot.csv")}
    assert values == {"0°", "45°", "90°", "135°", "180°"}


def test_each_figure_states_its_budget_against_the_full_runs(reports):
    page = (reports / "index.html").read_text()
    assert "10 epochs of 5,000 training examples (sweeps/rotated_mnist.toml: 80 epochs of 60,000)" in page
    assert "500 epochs of 400 training examples (the paper: 500 epochs of 400)" in page


def test_the_page_has_a_results_table_per_sweep(reports):
    rot = _rows(reports / "results-rot.csv")
    assert len(rot) == 6 and {r["n"] for r in rot} == {"1", "2"}
    assert {r["label"] for r in rot} >= {"spike-and-slab, gamma 0.8, alpha 100, beta 10",
                                         "Gaussian (gamma 0), alpha 0, beta 1"}
    page = (reports / "index.html").read_text()
    assert page.count('<table class="results">') == 2 and 'id="results-rot"' in page
    assert "alpha 0, beta 1" not in page.split('id="results-rot"')[1].split("</table>")[0]  # columns, not words
    assert "0.315 [" in page  # the two-seed setting's Hoyer mean with its interval


def test_clustering_panels_share_one_colour_scale(reports):
    rows = _rows(reports / "clustering_density-pin.csv")
    assert {(float(r["alpha"]), float(r["beta"])) for r in rows} == {(0, 0), (0, 2), (10, 0), (10, 2)}


def test_a_figure_that_breaks_the_style_warns(store, tmp_path, monkeypatch):
    """The check behind the first test can fail: with every label put at one spot they overlap."""
    monkeypatch.setattr(style, "_DISTANCES", (5,))
    monkeypatch.setattr(style, "_DIRECTIONS", [(1, 1, "left", "bottom")])
    with pytest.warns(style.FigureWarning, match="overlaps"):
        disentanglement_vs_reconstruction(store.path, tmp_path, Selection("rot"))


# -- the style module alone ----------------------------------------------------------------------------


def test_labels_of_crowded_points_overlap_nothing(tmp_path):
    plot = style.plot(1, 1, (4, 3))
    ax = plot.axes[0, 0]
    x = np.array([0.0, 0.01, 0.02, 0.03, 1.0, 1.01])
    y = np.array([0.5, 0.51, 0.49, 0.5, 0.2, 0.21])
    ax.plot(x, y, "-o")
    for i, (a, b) in enumerate(zip(x, y, strict=True)):
        plot.label(ax, a, b, f"alpha {i * 100}, beta {i}")
    plot.save(tmp_path, "crowded", __import__("polars").DataFrame({"x": x}), "provenance")
    assert style.collisions(plot.fig) == []
    texts = [t for t in ax.texts if t.get_gid() == style.LABEL_GID]
    assert len(texts) == 6


def test_a_colour_without_a_scale_is_found(tmp_path):
    plot = style.plot(1, 2, (2, 2))
    left = plot.axes[0, 0].imshow(np.arange(4.0).reshape(2, 2))
    plot.axes[0, 1].imshow(np.arange(4.0).reshape(2, 2))
    assert len(style.unscaled(plot.fig, plot.scaled)) == 2
    plot.colorbar(left, plot.axes[0, 0], "value")
    assert len(style.unscaled(plot.fig, plot.scaled)) == 1  # the right panel has its own norm, no bar


def test_budget_says_epochs_and_data_against_the_papers():
    import polars as pl

    spec = validate_job({**ROTATED, "dataset": {"name": "fashion_mnist", "subset": 1000, "subset_mode": "stratified"},
                         "arch": "conv32", "epochs": 8}, 1)
    runs = pl.DataFrame({"spec": [__import__("json").dumps(spec.to_dict())]})
    assert style.budget(runs) == "8 epochs of 10,000 training examples (the paper: 80 epochs of 60,000)"


def test_jobs_without_a_checkpoint_are_named_on_the_page_not_drawn(store, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "figures", "--store", str(store.path), "--out", str(out),
                                      "--sweep", "pin", "--only", "clustering_density"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "job images of pin: 4 of 4 jobs incomplete" in result.output
    page = (out / "index.html").read_text()
    assert page.count('<div class="job">') == 4 and page.count('<p class="skipped">') == 4
    assert "no checkpoint" in page and 'id="jobs-pin"' in page
