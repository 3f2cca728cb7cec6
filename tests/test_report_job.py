"""Per-job figures from a stored checkpoint: files that exist and read back as images of the right kind,
one traversal row per chosen dimension, and clear errors for vector data and a missing job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.image as mpimg
import polars as pl
import pytest

from harness.db import sweeps
from harness.db.store import Store
from harness.executors.worker import run_pack
from harness.report.job import prior_samples, reconstructions, traversals
from harness.schema import Options
from harness.spec import Pack, load_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def _train(store: Store, job) -> str:
    sweeps.register(store, "tiny", "-", "", "", [job.job_id])
    run_pack(Pack((job,)), store, "tiny", "cpu", None)
    return job.job_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("report_job") / "h.duckdb")


@pytest.fixture(scope="module")
def image_job(store):
    """A tiny shapes2d job (64x64 binary images), latent_dim 4."""
    job = load_sweep(SWEEPS / "independence.toml").jobs[0]
    dataset = Options("shapes2d", tuple(sorted({**dict(job.dataset.params), "subset": 128,
                                                "test_subset": 64, "stride": 8}.items())))
    return _train(store, replace(job, epochs=1, batch_size=64, latent_dim=4, dataset=dataset))


@pytest.fixture(scope="module")
def vector_job(store):
    """A tiny pinwheel job (2-D points, mixture prior), 100 test points."""
    job = load_sweep(SWEEPS / "clustering.toml").jobs[0]
    dataset = Options("pinwheel", tuple(sorted({**dict(job.dataset.params), "n_test": 25}.items())))
    return _train(store, replace(job, epochs=2, batch_size=400, dataset=dataset))


def _check(paths: list[Path], name: str) -> tuple:
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf", f"{name}.csv"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    image = mpimg.imread(paths[0])
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 200
    assert image.std() > 0.01  # not a blank canvas
    return image, pl.read_csv(paths[2])


def test_image_reconstructions(store, image_job, tmp_path):
    image, frame = _check(reconstructions(store, image_job, tmp_path, n=6), f"{image_job}_reconstructions")
    assert image.shape[1] > image.shape[0]  # two rows of six: wider than tall
    assert frame["index"].to_list() == list(range(6))
    assert frame["mean_abs_error"].is_between(0, 1).all()


def test_image_prior_samples(store, image_job, tmp_path):
    paths = prior_samples(store, image_job, tmp_path, n=16)
    _, frame = _check(paths, f"{image_job}_prior_samples")
    assert frame.columns == ["index", "z_0", "z_1", "z_2", "z_3"] and len(frame) == 16
    again = pl.read_csv(prior_samples(store, image_job, tmp_path / "again", n=16)[2])
    assert again.equals(frame)  # a fixed stream: the same samples every time


def test_image_traversals(store, image_job, tmp_path):
    _, frame = _check(traversals(store, image_job, tmp_path, steps=5), f"{image_job}_traversals")
    assert sorted(frame["dim"].to_list()) == [0, 1, 2, 3]  # all 4 dims (fewer than 10), one row each
    assert frame["variance_of_means"].to_list() == sorted(frame["variance_of_means"].to_list(), reverse=True)
    assert frame["values"][0] == "-2;-1;0;1;2"
    _, chosen = _check(traversals(store, image_job, tmp_path / "two", dims=[3, 1]), f"{image_job}_traversals")
    assert chosen["dim"].to_list() == [3, 1]
    with pytest.raises(ValueError, match="dims must be"):
        traversals(store, image_job, tmp_path, dims=[4])


def test_vector_data_scatters(store, vector_job, tmp_path):
    _, recon = _check(reconstructions(store, vector_job, tmp_path), f"{vector_job}_reconstructions")
    assert {"input_0", "input_1", "recon_0", "recon_1"} <= set(recon.columns) and len(recon) == 8
    _, samples = _check(prior_samples(store, vector_job, tmp_path, n=32), f"{vector_job}_prior_samples")
    assert {"z_0", "z_1", "x_0", "x_1"} <= set(samples.columns) and len(samples) == 32
    with pytest.raises(ValueError, match="traversals need image data"):
        traversals(store, vector_job, tmp_path)


def test_a_missing_job_names_itself(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="job 0123456789abcdef: no checkpoint"):
        reconstructions(store, "0123456789abcdef", tmp_path)
    assert not list(tmp_path.iterdir())
