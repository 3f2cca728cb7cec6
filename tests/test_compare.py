"""`harness report compare`: a planted shift of 3 seed standard deviations moves, 0.2 does not; a store
compared with itself moves nothing; settings on one side are listed; bad input is one line with exit 2."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import sweeps
from harness.db.ingest import ingest_result
from harness.db.store import Store
from harness.numerics import NUMERICS_VERSION as NV
from harness.report import compare as comparing
from harness.schema import Options
from harness.spec import JobSpec

BASE = JobSpec(dataset=Options("fashion_mnist", (("size", 32), ("subset", 0), ("subset_mode", "first"),
                                                 ("test_subset", 0))),
               arch="conv32", latent_dim=4, likelihood=Options("laplace", (("scale", 0.1),)),
               prior=Options("sparse", (("gamma", 0.8), ("spike_scale", 0.05))), divergence="mmd_dim",
               alpha=0.0, beta=1.0, epochs=2, batch_size=10, lr=1e-3, seed=1)
SD = 0.02  # the seed noise of hoyer in the synthetic store
SEEDS = (1, 2, 3, 4, 5)


def job(alpha: float, gamma: float, seed: int) -> JobSpec:
    return replace(BASE, alpha=alpha, prior=Options("sparse", (("gamma", gamma), ("spike_scale", 0.05))), seed=seed)


def make_store(path, settings=((0.0, 0.0), (1000.0, 0.8)), seed: int = 0, sweep: str = "s") -> Store:
    """Settings x SEEDS done jobs with hoyer ~ N(0.2 + 0.1 gamma, SD), elbo ~ N(-500, 5) and epochs."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    jobs = [job(a, g, s) for a, g in settings for s in SEEDS]
    sweeps.register(store, sweep, "-", "", "", [j.job_id for j in jobs])
    with store.connect() as con:
        for spec in jobs:
            gamma = spec.prior["gamma"]
            metrics = {"hoyer": 0.2 + 0.1 * gamma + rng.normal(0, SD), "elbo": -500 + rng.normal(0, 5)}
            ingest_result(con, {"job_id": spec.job_id, "spec": spec.to_dict(), "status": "done", "sweep": sweep,
                                "numerics": NV, "git_commit": "abcdef123", "device": "cpu", "pack_size": 1,
                                "metrics": [{"split": "test", "name": k, "value": v, "metric": k, "version": 1}
                                            for k, v in metrics.items()],
                                "epochs": [{"epoch": 1, "loss": 1.0, "recon": 1.0, "kl": 1.0, "reg": 0.0,
                                            "seconds": 2.0, "samples_per_second": 5.0}]})
    return store


def planted(store: Store, path, metric: str, shift: float):
    """A copy of the store with `shift` added to `metric` of every job."""
    shutil.copy(store.path, path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE metrics SET value = value + ? WHERE name = ?", [shift, metric])
    con.close()
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["report", "compare", *args])


@pytest.fixture
def store(tmp_path) -> Store:
    return make_store(tmp_path / "base.duckdb")


def test_a_store_against_itself_moves_nothing(store):
    result = invoke(str(store.path), str(store.path))
    assert result.exit_code == 0, result.output
    assert "6 values over 2 setting(s): 6 no change" in result.output  # hoyer, elbo, seconds, 2 settings


def test_a_planted_shift_of_3_sd_moves_and_0_2_sd_does_not(store, tmp_path):
    moved = invoke(str(store.path), str(planted(store, tmp_path / "big.duckdb", "hoyer", 3 * SD)),
                   "--out", str(tmp_path / "c.csv"), "--figure", str(tmp_path / "c.png"))
    assert moved.exit_code == 1, moved.output
    rows = {(r["setting"], r["metric"]): r for r in csv.DictReader((tmp_path / "c.csv").open())}
    assert {k for k, r in rows.items() if r["status"] == "moved"} == {("alpha=0, prior.gamma=0", "hoyer"),
                                                                       ("alpha=1000, prior.gamma=0.8", "hoyer")}
    shifted = rows[("alpha=0, prior.gamma=0", "hoyer")]
    assert float(shifted["difference"]) == pytest.approx(3 * SD) and shifted["n_base"] == shifted["n_new"] == "5"
    assert shifted["method"] == "paired t" and float(shifted["low"]) > 0
    assert (tmp_path / "c.png").stat().st_size > 0
    small = invoke(str(store.path), str(planted(store, tmp_path / "small.duckdb", "hoyer", 0.2 * SD)))
    assert small.exit_code == 0 and "moved" not in small.output.replace("0 moved", ""), small.output


def test_fresh_seeds_with_a_3_sd_shift_are_found_and_noise_is_not():
    """The same rule on fresh noise (each side its own draws): how often is a shift reported as moved?"""
    rng = np.random.default_rng(1203)
    sel = comparing.Selector("x")

    def side(shift: float) -> pl.DataFrame:
        return pl.DataFrame({"job_id": [str(s) for s in SEEDS], "sweep": "s", "numerics": NV, "git_commit": "",
                             "device": "cpu", "seed": list(SEEDS), "spec": json.dumps({"alpha": 1.0}),
                             "hoyer": 0.3 + shift + rng.normal(0, SD, len(SEEDS))})

    def rate(shift: float, draws: int = 200) -> float:
        return sum(comparing.compare(sel, sel, side(0), side(shift)).moved.height for _ in range(draws)) / draws

    assert rate(3 * SD) >= 0.7  # the paired t test's power at 5 seeds is about 0.85
    # independent noise on each side: a 95% interval excludes 0 about 5% of the time whatever the tolerance
    # (the noise is larger than it); a shift of 0.2 sd adds little to that
    assert rate(0.2 * SD) <= 0.10


def test_settings_on_one_side_are_listed_and_an_export_is_a_side(store, tmp_path):
    other = make_store(tmp_path / "other.duckdb", settings=((0.0, 0.0), (100.0, 0.8)), seed=1)
    result = invoke(str(store.path), str(other.path), "--metric", "hoyer")
    assert result.exit_code == 0, result.output
    assert "1 setting(s) only in BASE, not compared: alpha=1000, prior.gamma=0.8" in result.output
    assert "1 setting(s) only in NEW, not compared: alpha=100, prior.gamma=0.8" in result.output
    exported = tmp_path / "base.csv"
    assert CliRunner().invoke(app, ["report", "export", "--store", str(store.path), "--sweep", "s", "--out",
                                    str(exported)]).exit_code == 0
    assert len(list(csv.DictReader(exported.open()))) == 10
    same = invoke(f"file={exported}", str(store.path), "--out", str(tmp_path / "c.json"))
    assert same.exit_code == 0 and "6 no change" in same.output, same.output
    assert len(json.loads((tmp_path / "c.json").read_text())) == 6


def test_selectors_pick_numerics_commit_and_sweep(store, tmp_path):
    assert invoke(f"numerics={NV},commit=abc", f"store={store.path},sweep=s", "--store", str(store.path)).exit_code == 0
    empty = invoke(f"store={store.path},commit=fff", str(store.path))
    assert empty.exit_code == 2 and "no finished job" in empty.stderr and "commit fff" in empty.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["colour=red", "x.duckdb"], "unknown key 'colour'"),
    (["numerics=two", "numerics=1"], "numerics must be an integer"),
    (["numerics=99", "numerics=1"], "is not a version of this code"),
    (["store=/nope.duckdb", "numerics=1"], "no store at /nope.duckdb"),
    (["quickstart", "numerics=1"], "neither KEY=VALUE nor a path"),
    (["STORE", "numerics=1"], "no finished job"),  # an empty side: this store has no numerics-1 job
    (["STORE", "STORE", "--tolerance", "hoyer"], "expected NAME=VALUE"),
    (["STORE", "STORE", "--metric", "nope"], "no value 'nope' on both sides"),
    (["STORE", "STORE", "--out", "x.txt"], "the suffix says the format"),
])
def test_bad_input_is_one_line_and_exit_2(store, args, message):
    result = invoke(*[str(store.path) if a == "STORE" else a for a in args], "--store", str(store.path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_no_common_setting_is_exit_2(store, tmp_path):
    other = make_store(tmp_path / "other.duckdb", settings=((5.0, 0.0),))
    result = invoke(str(store.path), str(other.path))
    assert result.exit_code == 2 and "no setting is on both sides" in result.stderr


def test_tolerances_default_per_metric_and_can_be_overridden(store, tmp_path):
    assert str(comparing.tolerance_for("hoyer")) == "0.01" and str(comparing.tolerance_for("elbo")) == "1%"
    assert str(comparing.tolerance_for("info_angle_max_nmi")) == "0.01"
    path = planted(store, tmp_path / "p.duckdb", "hoyer", 3 * SD)
    assert invoke(str(store.path), str(path), "--tolerance", "hoyer=0.1").exit_code == 0  # 0.06 < 0.1
    assert invoke(str(store.path), str(path), "--tolerance", "hoyer=20%").exit_code == 1  # 20% of 0.2 < 0.06
