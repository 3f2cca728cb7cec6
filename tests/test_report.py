"""Figures and claims from a store of synthetic shards (no training): honest pooling, per-sweep figures,
and claims whose verdicts follow the numbers."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import sweeps
from harness.db.ingest import ingest_result
from harness.db.store import Store
from harness.numerics import NUMERICS_VERSION as NV
from harness.report.claims import FAIL, INCONCLUSIVE, NO_DATA, PASS, SINGLE_SEED, check_claims
from harness.schema import Options
from harness.spec import JobSpec

BASE = JobSpec(dataset=Options("fashion_mnist", (("size", 32), ("subset", 0), ("subset_mode", "first"),
                                                 ("test_subset", 0))),
               arch="conv32", latent_dim=4, likelihood=Options("laplace", (("scale", 0.1),)),
               prior=Options("sparse", (("gamma", 0.8), ("spike_scale", 0.05))), divergence="mmd_dim",
               alpha=0.0, beta=1.0, epochs=2, batch_size=10, lr=1e-3, seed=1)


def job(alpha: float, gamma: float, seed: int = 1, **changes) -> JobSpec:
    prior = Options("sparse", (("gamma", gamma), ("spike_scale", 0.05)))
    return replace(BASE, alpha=alpha, prior=prior, seed=seed, **changes)


def add(store: Store, sweep: str, jobs: list[tuple[JobSpec, float]]) -> None:
    """Register `sweep` with these jobs and ingest a done shard for each, with the given Hoyer value."""
    sweeps.register(store, sweep, "-", "", "", [j.job_id for j, _ in jobs])
    with store.connect() as con:
        for spec, hoyer in jobs:
            ingest_result(con, {"job_id": spec.job_id, "spec": spec.to_dict(), "status": "done", "sweep": sweep,
                                "numerics": NV, "git_commit": "abcdef123",
                                "metrics": [{"split": "test", "name": "hoyer", "value": hoyer, "metric": "hoyer",
                                             "version": 1}]})


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "h.duckdb")
    add(store, "main", [(job(0, 0.8, 1), 0.30), (job(0, 0.8, 2), 0.32), (job(1000, 0.8, 1), 0.50),
                        (job(1000, 0.8, 2), 0.52), (job(0, 0.0, 1), 0.20), (job(1000, 0.0, 1), 0.19),
                        # differs in more than the seed: its own line, never pooled into (1000, 0.8)
                        (job(1000, 0.8, 1, epochs=1), 0.90)])
    add(store, "other", [(job(1000, 0.8, 3), 0.99)])  # another sweep must not move main's points
    return store


def test_a_point_pools_only_seeds_of_one_setting_and_says_its_n(store, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "figures", "--store", str(store.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "sparsity_vs_alpha-main.csv").open()))
    points = {(float(r["alpha"]), float(r["gamma"]), r["n"]): float(r["hoyer_mean"]) for r in rows}
    assert points == {(0.0, 0.8, "2"): pytest.approx(0.31), (1000.0, 0.8, "2"): pytest.approx(0.51),
                      (1000.0, 0.8, "1"): pytest.approx(0.90), (0.0, 0.0, "1"): pytest.approx(0.20),
                      (1000.0, 0.0, "1"): pytest.approx(0.19)}
    # the mean's 95% t interval where there are two seeds (0.30, 0.32: 0.31 +- 12.706 * 0.01), none for one
    by_point = {(float(r["alpha"]), float(r["gamma"]), r["n"]): r for r in rows}
    two, one = by_point[(0.0, 0.8, "2")], by_point[(0.0, 0.0, "1")]
    assert (float(two["hoyer_low"]), float(two["hoyer_high"])) == (pytest.approx(0.31 - 0.12706, abs=1e-4),
                                                                   pytest.approx(0.31 + 0.12706, abs=1e-4))
    assert two["interval"] == "95% t" and (one["hoyer_low"], one["interval"]) == ("", "none (n = 1)")
    assert (out / "sparsity_vs_alpha-other.png").exists()  # each sweep apart
    page = (out / "index.html").read_text()
    assert "sparsity_vs_alpha-main.png" in page and "abcdef1" in page


def test_claims_follow_the_numbers_and_fail_the_exit_code(store, tmp_path):
    results = {r.claim_id: r for r in check_claims(store.path, sweeps=["main"])}
    # gamma 0 has one seed at each alpha: no noise estimate, so no verdict
    assert results["sparsity.gamma_above"].verdict == NO_DATA and "n 1/2" in results["sparsity.gamma_above"].evidence
    single = {r.claim_id: r for r in check_claims(store.path, sweeps=["main"], single_seed=True)}
    above = single["sparsity.gamma_above"]
    assert above.verdict == PASS and above.note == SINGLE_SEED
    assert "alpha 0, beta 1: hoyer(gamma 0.8) - hoyer(gamma 0) = +0.11 (no interval, n 1/2)" in above.evidence
    assert "alpha 1000, beta 1: hoyer(gamma 0.8) - hoyer(gamma 0) = +0.32 (no interval, n 1/2)" in above.evidence
    assert len(above.job_ids) == 6  # the beta-1 line's seeds of both gammas, not the epochs variant
    assert single["sparsity.gaussian_low"].verdict == PASS
    assert results["sparsity.rises_then_flattens"].verdict == NO_DATA  # no alpha 100
    assert results["sparsity.beta5_lowest"].verdict == NO_DATA
    # a second seed of gamma 0: the differences now have intervals, paired by seed, well above 0
    add(store, "main", [(job(0, 0.0, 2), 0.21), (job(1000, 0.0, 2), 0.18)])
    above = {r.claim_id: r for r in check_claims(store.path, sweeps=["main"])}["sparsity.gamma_above"]
    assert above.verdict == PASS and above.note == "" and above.n == "2" and above.method == "paired t"
    assert ("alpha 1000, beta 1: hoyer(gamma 0.8) - hoyer(gamma 0) = +0.325 [+0.134, +0.516] (paired t, n 2/2)"
            in above.evidence)
    assert above.data == "fashion_mnist: 2 epochs of 60,000 training examples (the paper: 80 epochs of 60,000)"
    # make gamma 0 sparser at alpha 1000 on two seeds: the claim now fails, and so does the command
    add(store, "main2", [(job(1000, 0.8, 5), 0.50), (job(1000, 0.0, 5), 0.70), (job(0, 0.8, 5), 0.3),
                         (job(0, 0.0, 5), 0.2), (job(1000, 0.8, 6), 0.51), (job(1000, 0.0, 6), 0.72),
                         (job(0, 0.8, 6), 0.31), (job(0, 0.0, 6), 0.22)])
    assert {r.claim_id: r for r in check_claims(store.path, sweeps=["main2"])}["sparsity.gamma_above"].verdict == FAIL
    result = CliRunner().invoke(app, ["report", "claims", "--store", str(store.path), "--sweep", "main2"])
    assert result.exit_code == 1 and "FAIL" in result.output and "[-0.2" in result.output
    ok = CliRunner().invoke(app, ["report", "claims", "--store", str(store.path), "--sweep", "main"])
    assert ok.exit_code == 0, ok.output


def test_an_effect_within_the_seed_noise_is_inconclusive_and_exits_0(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    noisy = {(0, 0.8): (0.30, 0.36, 0.25), (0, 0.0): (0.29, 0.33, 0.28), (1000, 0.8): (0.31, 0.26, 0.37),
             (1000, 0.0): (0.30, 0.31, 0.29)}
    add(store, "noise", [(job(a, g, seed), v) for (a, g), values in noisy.items()
                         for seed, v in enumerate(values, start=1)])
    above = {r.claim_id: r for r in check_claims(store.path)}["sparsity.gamma_above"]
    assert above.verdict == INCONCLUSIVE and above.n == "3"
    result = CliRunner().invoke(app, ["report", "claims", "--store", str(store.path)])
    assert result.exit_code == 0 and "INCONCLUSIVE" in result.output


def test_an_unknown_sweep_is_one_line(store):
    result = CliRunner().invoke(app, ["report", "claims", "--store", str(store.path), "--sweep", "nope"])
    assert result.exit_code == 2 and "no sweep 'nope'" in result.stderr


def test_iwae_is_plotted_next_to_the_elbo_where_it_was_asked_for(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    spec = replace(job(0, 0.8, 1), iwae_k=50)
    sweeps.register(store, "iw", "-", "", "", [spec.job_id])
    with store.connect() as con:
        ingest_result(con, {"job_id": spec.job_id, "spec": spec.to_dict(), "status": "done", "sweep": "iw",
                            "numerics": NV, "metrics": [
                                {"split": "test", "name": "elbo", "value": -90.0, "metric": "elbo", "version": NV},
                                {"split": "test", "name": "iwae", "value": -85.0, "metric": "elbo", "version": NV}]})
    out = tmp_path / "r"
    assert CliRunner().invoke(app, ["report", "figures", "--store", str(store.path), "--out", str(out),
                                    "--only", "iwae"]).exit_code == 0
    rows = list(csv.DictReader((out / "iwae-iw.csv").open()))
    assert [(float(r["elbo_mean"]), float(r["iwae_mean"]), r["n"]) for r in rows] == [(-90.0, -85.0, "1")]


def test_timings_are_per_model_epoch_by_device_pack_and_commit(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    specs = [job(0, 0.8, 1), job(1000, 0.8, 1), job(100, 0.8, 1)]
    sweeps.register(store, "t", "-", "", "", [s.job_id for s in specs])
    with store.connect() as con:
        for spec, pack, ran in zip(specs, (1, 4, 1), ({}, {}, {"threads": 1, "workers": 2}), strict=True):
            ingest_result(con, {"job_id": spec.job_id, "spec": spec.to_dict(), "status": "done", "sweep": "t",
                                "numerics": NV, "device": "cpu", "pack_size": pack, "git_commit": "abcdef123",
                                "run_options": ran,
                                "epochs": [{"epoch": e, "loss": 1.0, "recon": 1.0, "kl": 1.0, "reg": 0.0,
                                            "seconds": 8.0, "samples_per_second": 100.0} for e in (1, 2, 3)]})
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "timings", "--store", str(store.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {(int(r["pack_size"]), int(r["workers"])): r for r in csv.DictReader((out / "timings-t.csv").open())}
    assert sorted(rows) == [(1, 0), (1, 2), (4, 0)]  # workers x threads apart: 0 where a job did not record them
    rows = {pack: rows[(pack, 0)] for pack in (1, 4)}
    assert float(rows[1]["seconds_per_model_epoch"]) == 8.0 and float(rows[4]["seconds_per_model_epoch"]) == 2.0
    assert "2 x 1" in result.output
    assert rows[4]["git_commit"] == "abcdef1" and "8.00" in result.output and "2.00" in result.output


def test_a_claims_effects_against_the_budget(store, tmp_path):
    """The diagnosis of a claim: its tested effects per sweep, in the given order, with their intervals and
    the margin, as a figure and its CSV; a sweep the claim does not apply to gives no rows."""
    from harness.report.budget import budget_figure, claim_effects

    add(store, "longer", [(job(a, g, s, epochs=4), h) for (a, g, s, h) in
                          [(0, 0.8, 1, 0.30), (0, 0.8, 2, 0.31), (1000, 0.8, 1, 0.60), (1000, 0.8, 2, 0.62),
                           (0, 0.0, 1, 0.20), (0, 0.0, 2, 0.21), (1000, 0.0, 1, 0.19), (1000, 0.0, 2, 0.18)]])
    effects = claim_effects(store.path, "sparsity.gamma_above", ["main", "longer"])
    assert effects["sweep"].unique(maintain_order=True).to_list() == ["main", "longer"]
    longer = effects.filter(effects["sweep"] == "longer")
    assert longer["what"].to_list() == ["alpha 0, beta 1: hoyer(gamma 0.8) - hoyer(gamma 0)",
                                        "alpha 1000, beta 1: hoyer(gamma 0.8) - hoyer(gamma 0)"]
    assert longer["estimate"].to_list() == pytest.approx([0.10, 0.425])
    assert longer["test_verdict"].to_list() == [PASS, PASS] and longer["margin"].to_list() == [0.0, 0.0]
    assert "4 epochs of 60,000 training examples" in longer["data"][0]
    assert claim_effects(store.path, "rotated.alpha_over_beta", ["main"]).is_empty()
    paths = budget_figure(store.path, "sparsity.gamma_above", ["main", "longer"], ["2 epochs", "4 epochs"], tmp_path)
    assert [p.name for p in paths] == ["diagnosis-sparsity.gamma_above.png", "diagnosis-sparsity.gamma_above.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
