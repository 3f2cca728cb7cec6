"""Claims with seed noise, on simulated seeds: pure noise is INCONCLUSIVE far more often than PASS, a strong
effect PASSes, a strong opposite effect FAILs, and a single seed decides nothing unless asked to."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from harness.report.claims import (
    FAIL,
    INCONCLUSIVE,
    NO_DATA,
    PASS,
    gamma_above_at_every_alpha,
    sparsity_rises_then_flattens,
)

ALPHAS = (0.0, 100.0, 1000.0)


def sparsity_runs(rng: np.random.Generator, mean, sd: float = 0.02, seeds: int = 3) -> pl.DataFrame:
    """A sweep's runs (the columns the sparsity checks read): hoyer ~ N(mean(alpha, gamma), sd) per seed,
    where each seed shifts every setting alike by a shared N(0, sd) (its initialisation and data order)."""
    shared = rng.normal(0, sd, seeds)
    rows = [{"job_id": f"{alpha:g}-{gamma:g}-{seed}", "prior": "sparse", "prior_label": f"sparse, gamma {gamma:g}",
             "alpha": alpha, "beta": 1.0, "gamma": gamma, "seed": seed,
             "hoyer": mean(alpha, gamma) + shared[seed] + rng.normal(0, sd)}
            for alpha in ALPHAS for gamma in (0.0, 0.8) for seed in range(seeds)]
    return pl.DataFrame(rows)


def verdicts(check, mean, draws: int = 300, **options) -> Counter:
    rng = np.random.default_rng(15)
    return Counter(check(sparsity_runs(rng, mean, **options), None).decide() for _ in range(draws))


def test_pure_noise_is_inconclusive_far_more_often_than_pass():
    rates = verdicts(gamma_above_at_every_alpha, lambda alpha, gamma: 0.25)
    assert rates[INCONCLUSIVE] >= 0.85 * 300 and rates[PASS] <= 0.02 * 300, rates
    # no rise at all is not a steep one (above 0.05): the claim never passes, and fails where the noise is small
    rates = verdicts(sparsity_rises_then_flattens, lambda alpha, gamma: 0.25)
    assert rates[PASS] <= 0.02 * 300 and rates[INCONCLUSIVE] + rates[FAIL] >= 0.98 * 300, rates


def test_a_real_but_shallow_rise_is_not_steep():
    """A rise of 0.02 (real: seven paired standard deviations at sd 0.002) is below the 0.05 that "steeply"
    means, so the claim fails rather than passing on the sign alone."""
    curve = {0.0: 0.20, 100.0: 0.22, 1000.0: 0.22}
    rates = verdicts(sparsity_rises_then_flattens, lambda alpha, gamma: curve[alpha], sd=0.002)
    assert rates[FAIL] >= 0.95 * 300, rates


def test_a_strong_effect_passes_and_its_opposite_fails():
    # a difference of 0.2 against a seed noise of 0.02 (7 standard deviations of a paired difference)
    sparser = verdicts(gamma_above_at_every_alpha, lambda alpha, gamma: 0.25 + 0.25 * gamma)
    assert sparser[PASS] >= 0.95 * 300, sparser
    denser = verdicts(gamma_above_at_every_alpha, lambda alpha, gamma: 0.25 - 0.25 * gamma)
    assert denser[FAIL] >= 0.95 * 300, denser
    curve = {0.0: 0.20, 100.0: 0.45, 1000.0: 0.46}  # the paper's shape: a steep rise, then flat
    shaped = verdicts(sparsity_rises_then_flattens, lambda alpha, gamma: curve[alpha])
    assert shaped[PASS] >= 0.9 * 300, shaped


def test_one_seed_decides_nothing_unless_asked():
    runs = sparsity_runs(np.random.default_rng(1), lambda alpha, gamma: 0.25 + 0.1 * gamma, seeds=1)
    verdict = gamma_above_at_every_alpha(runs, None)
    assert verdict.decide() == NO_DATA and verdict.decide(single_seed=True) == PASS
    assert all(not t.effect.has_interval for t in verdict.tests)


# -- the quantified claims: each threshold decides, not the sign alone --------------------------------------


def settings_runs(values: dict[tuple, list[float]], metric: str, **columns) -> pl.DataFrame:
    """Runs with `metric` per seed for each (alpha, beta, prior_label) key."""
    rows = [{"job_id": f"{alpha:g}-{beta:g}-{label}-{seed}", "alpha": alpha, "beta": beta, "prior_label": label,
             "prior": columns.get("prior", "normal"), "gamma": columns.get("gamma"), "seed": seed, metric: value}
            for (alpha, beta, label), seeds in values.items() for seed, value in enumerate(seeds)]
    return pl.DataFrame(rows)


def test_beta_destroys_needs_half_the_separation_gone():
    from harness.report.claims import beta_destroys_clusters

    def runs(high):
        return settings_runs({(0.0, 0.0, "mix"): [0.80, 0.82, 0.79], (0.0, 2.0, "mix"): high}, "posterior_separation")

    assert beta_destroys_clusters(runs([0.20, 0.22, 0.18]), None).decide() == PASS
    # a real but small loss (0.80 -> 0.70) does not destroy the structure
    assert beta_destroys_clusters(runs([0.70, 0.71, 0.69]), None).decide() == FAIL


def test_alpha_keeps_fails_when_alpha_does_not_act():
    """Non-inferiority alone would pass an alpha that does nothing; the divergence it weights must fall."""
    from harness.report.claims import alpha_keeps_clusters

    sep = {(0.0, 0.0, "mix"): [0.80, 0.82, 0.79], (10.0, 0.0, "mix"): [0.81, 0.82, 0.80]}
    runs = settings_runs(sep, "posterior_separation")
    acting = runs.with_columns(pl.Series("reg", [0.50, 0.52, 0.49, 0.10, 0.12, 0.11]))
    idle = runs.with_columns(pl.Series("reg", [0.50, 0.52, 0.49, 0.51, 0.52, 0.50]))
    assert alpha_keeps_clusters(acting, None).decide() == PASS
    assert alpha_keeps_clusters(idle, None).decide() in (FAIL, INCONCLUSIVE)


def test_structured_better_compares_the_reference_df_after_the_change_of_measure():
    from harness.report.claims import structured_priors_disentangle_better

    kim = {(0.0, 1.0, "Gaussian"): [0.60, 0.62, 0.61], (0.0, 1.0, "Student-t, df 9"): [0.70, 0.71, 0.72],
           (0.0, 1.0, "Student-t, df 20"): [0.55, 0.56, 0.54], (0.0, 1.0, "anisotropic (learnt)"): [0.68, 0.69, 0.70]}
    runs = settings_runs(kim, "kim_mnih_cm").with_columns(pl.lit(0.0).alias("kim_mnih"))
    verdict = structured_priors_disentangle_better(runs, None)
    assert verdict.decide() == PASS  # df 20 (nearly Gaussian) is not one of the priors the paper shows
    assert [t.what for t in verdict.tests] == ["kim_mnih_cm(anisotropic (learnt)) - kim_mnih_cm(Gaussian)",
                                               "kim_mnih_cm(Student-t, df 9) - kim_mnih_cm(Gaussian)"]


def test_little_cost_allows_ten_percent():
    from harness.report.claims import structured_priors_cost_little

    def runs(structured):
        return settings_runs({(0.0, 1.0, "Gaussian"): [0.0100, 0.0101, 0.0099],
                              (0.0, 1.0, "anisotropic (learnt)"): structured}, "recon_mse")

    assert structured_priors_cost_little(runs([0.0103, 0.0104, 0.0102]), None).decide() == PASS
    assert structured_priors_cost_little(runs([0.0130, 0.0131, 0.0129]), None).decide() == FAIL


def test_few_dimensions_per_class_reads_the_class_magnitudes(monkeypatch):
    from harness.db import queries
    from harness.report.claims import few_dimensions_per_class

    def rows(job_ids, strong):  # per class: `strong` dims at 0.6, the rest of 50 at 0.01
        return pl.DataFrame([{"job_id": j, "dim": d, "key": c, "key_index": k, "value": 0.6 if d < strong[j] else 0.01}
                             for j in job_ids for k, c in enumerate(("trouser", "dress")) for d in range(50)])

    runs = settings_runs({(1000.0, 1.0, "spike-and-slab"): [0, 0, 0]}, "hoyer", prior="sparse", gamma=0.8)
    runs = pl.concat([runs, settings_runs({(1000.0, 1.0, "Gaussian (gamma 0)"): [0, 0, 0]}, "hoyer", prior="sparse",
                                          gamma=0.0)])
    strong = {j: (4 if "spike" in j else 50) for j in runs["job_id"].to_list()}
    monkeypatch.setattr(queries, "dim_stats", lambda store, ids, metric, stat: rows(ids, strong))
    verdict = few_dimensions_per_class(runs, "store")
    assert verdict.decide(single_seed=True) == PASS, verdict
    strong = dict.fromkeys(strong, 50)  # every dimension used alike: not a few
    assert few_dimensions_per_class(runs, "store").decide(single_seed=True) == FAIL


def test_the_claims_table_in_the_docs_lists_every_claim_with_its_threshold():
    from pathlib import Path

    from harness.report.claims import CLAIMS

    text = (Path(__file__).resolve().parents[1] / "docs" / "claims.md").read_text()
    for claim in CLAIMS:
        assert claim.threshold, claim.claim_id
        assert f"| `{claim.claim_id}` | {claim.text.split(': ', 1)[1]} | {claim.threshold} |" in text, claim.claim_id


def test_posterior_separation_counts_the_posteriors_spread():
    """Four arms whose means stay apart: with tight posteriors q(z) keeps them (both measures near 1); with
    posteriors wider than the arms' spacing q(z) is one blob, which only posterior_separation sees."""
    import torch

    from harness.metrics.registry import METRICS, Encodings

    labels = torch.arange(4).repeat_interleave(100)
    centres = torch.tensor([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    loc = centres[labels] + 0.05 * torch.randn(400, 2, generator=torch.Generator().manual_seed(0))

    def separation(scale: float) -> dict[str, float]:
        enc = Encodings("test", loc, torch.full((400, 2), scale), labels, ("a", "b", "c", "d"))
        return METRICS["class_separation"].compute(enc, torch.Generator()).values

    tight, wide = separation(0.01), separation(5.0)
    assert tight["class_separation"] == wide["class_separation"] > 0.99
    assert tight["posterior_separation"] > 0.99 and wide["posterior_separation"] < 0.05
