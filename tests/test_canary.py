"""The science canary's baseline (sweeps/canary-baseline.csv): it belongs to today's numerics version and
to today's canary sweep, it holds 3 seeds of every setting, and `report compare` catches a planted edit."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.numerics import NUMERICS_VERSION
from harness.report.compare import read_results, setting_of
from harness.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "sweeps" / "canary-baseline.csv"
REGENERATE = "the canary baseline is out of date: run `make canary-baseline` and commit sweeps/canary-baseline.csv"


@pytest.fixture(scope="module")
def baseline() -> pl.DataFrame:
    return read_results(BASELINE)


def test_the_baseline_is_of_this_numerics_version_and_this_sweep(baseline):
    assert baseline["numerics"].unique().to_list() == [NUMERICS_VERSION], REGENERATE
    jobs = load_sweep(ROOT / "sweeps" / "canary.toml").jobs
    assert sorted(baseline["job_id"].to_list()) == sorted(j.job_id for j in jobs), REGENERATE
    assert BASELINE.stat().st_size <= 100_000


def test_every_setting_has_three_seeds_and_the_values_the_claims_read(baseline):
    settings = baseline.with_columns(pl.col("spec").map_elements(setting_of, return_dtype=pl.String).alias("s"))
    assert settings.group_by("s").len()["len"].to_list() == [3] * 8
    gammas = {(json.loads(s)["alpha"], json.loads(s)["prior"]["gamma"], json.loads(s)["beta"])
              for s in settings["s"].unique()}
    assert {(a, g, 1.0) for a in (0.0, 100.0, 1000.0) for g in (0.0, 0.8)} | {(1000.0, 0.8, 0.1),
                                                                               (1000.0, 0.8, 5.0)} == gammas
    for value in ("hoyer", "elbo", "recon_mse", "class_separation"):
        assert baseline[value].is_not_null().all(), value


def test_a_planted_edit_of_the_baseline_is_caught(baseline, tmp_path):
    """+0.05 on the Hoyer score of one setting's three jobs (about 2.5 of its seed standard deviations)."""
    edited = tmp_path / "edited.csv"
    target = setting_of(baseline["spec"][0])
    in_target = pl.col("spec").map_elements(setting_of, return_dtype=pl.String) == target
    baseline.with_columns(pl.when(in_target).then(pl.col("hoyer") + 0.05).otherwise(pl.col("hoyer"))
                          .alias("hoyer")).write_csv(edited)
    moved = CliRunner().invoke(app, ["report", "compare", str(BASELINE), str(edited), "--skip",
                                     "seconds_per_model_epoch"])
    assert moved.exit_code == 1, moved.output
    assert "1 moved" in moved.output
    same = CliRunner().invoke(app, ["report", "compare", str(BASELINE), str(BASELINE)])
    assert same.exit_code == 0 and "moved" not in same.output.replace("0 moved", ""), same.output
