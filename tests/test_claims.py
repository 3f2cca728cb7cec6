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
    rates = verdicts(sparsity_rises_then_flattens, lambda alpha, gamma: 0.25)
    assert rates[INCONCLUSIVE] >= 0.85 * 300 and rates[PASS] <= 0.02 * 300, rates


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
