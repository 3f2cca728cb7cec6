"""harness.stats: the intervals are scipy's, pairing is used where the seeds allow it, a single seed gives no
interval, and the 95% intervals cover the truth about 95% of the time on simulated seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from harness import stats


def test_mean_interval_is_the_t_interval_and_one_seed_has_none():
    values = [0.21, 0.25, 0.19, 0.24]
    got = stats.mean_interval(values)
    low, high = sp.t.interval(0.95, 3, loc=np.mean(values), scale=sp.sem(values))
    assert (got.mean, got.n) == (pytest.approx(np.mean(values)), 4)
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    single = stats.mean_interval([0.3])
    assert (single.mean, single.low, single.high, single.n) == (0.3, None, None, 1)


def test_same_seeds_are_paired_and_other_seeds_are_welch():
    a, b = {1: 0.20, 2: 0.30, 3: 0.25}, {1: 0.26, 2: 0.35, 3: 0.31}
    paired = stats.difference(a, b)
    low, high = sp.ttest_rel(list(b.values()), list(a.values())).confidence_interval()
    assert paired.method == stats.PAIRED and (paired.low, paired.high) == (pytest.approx(low), pytest.approx(high))
    # pairing removes what the seeds share: this interval is much narrower than the unpaired one
    c = {4: 0.26, 5: 0.35, 6: 0.31}
    welch = stats.difference(a, c)
    low, high = sp.ttest_ind(list(c.values()), list(a.values()), equal_var=False).confidence_interval()
    assert welch.method == stats.WELCH and (welch.low, welch.high) == (pytest.approx(low), pytest.approx(high))
    assert paired.estimate == pytest.approx(welch.estimate)
    assert paired.high - paired.low < (welch.high - welch.low) / 3


def test_the_welch_satterthwaite_contrast_agrees_with_scipy_for_two_groups():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4), rng.normal(1, 3, 7)
    low, high = stats._welch_satterthwaite([a, b], [-1.0, 1.0], b.mean() - a.mean(), 0.95)
    want = sp.ttest_ind(b, a, equal_var=False).confidence_interval()
    assert (low, high) == (pytest.approx(want.low), pytest.approx(want.high))


def test_a_second_difference_is_paired_by_seed_or_welch_across_three_groups():
    h0, h100, h1000 = {1: 0.2, 2: 0.22}, {1: 0.3, 2: 0.33}, {1: 0.32, 2: 0.34}
    paired = stats.contrast([h0, h100, h1000], [-1, 2, -1])
    per_seed = [2 * h100[s] - h0[s] - h1000[s] for s in (1, 2)]
    assert paired.method == stats.PAIRED and paired.estimate == pytest.approx(np.mean(per_seed))
    assert paired.n == (2, 2, 2)
    unpaired = stats.contrast([h0, {3: 0.3, 4: 0.33}, h1000], [-1, 2, -1])
    assert unpaired.method == stats.WELCH and unpaired.low < unpaired.estimate < unpaired.high


def test_one_seed_gives_an_estimate_without_interval_and_says_so():
    effect = stats.difference({1: 0.2}, {1: 0.3, 2: 0.31})
    assert effect.estimate == pytest.approx(0.105) and not effect.has_interval and effect.n == (1, 2)
    assert effect.side() == "above" and "no interval, n 1/2" in effect.describe()
    with pytest.raises(ValueError):
        stats.contrast([{}], [1.0])


def test_sides_of_an_interval():
    above = stats.Effect(0.1, 0.05, 0.15, (3, 3), stats.PAIRED)
    assert (above.side(), above.side(0.06), above.side(0.2)) == ("above", "straddles", "below")
    # identical reruns: a point interval at 0 is on neither side
    assert stats.difference({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6}).side() == "straddles"


@pytest.mark.parametrize(("paired", "n"), [(True, 3), (False, 3), (True, 10)])
def test_95_percent_intervals_cover_the_true_difference_about_95_percent_of_the_time(paired, n):
    rng = np.random.default_rng(20261203)
    truth, covered, draws = 0.05, 0, 1000
    for _ in range(draws):
        shared = rng.normal(0, 0.02, n)  # what a seed's initialisation does to both settings
        a = 0.30 + shared + rng.normal(0, 0.01, n)
        b = 0.30 + truth + (shared if paired else rng.normal(0, 0.02, n)) + rng.normal(0, 0.01, n)
        seeds_b = range(n) if paired else range(n, 2 * n)
        effect = stats.difference(dict(enumerate(a)), dict(zip(seeds_b, b, strict=True)))
        covered += effect.low <= truth <= effect.high
    assert 0.925 <= covered / draws <= 0.975  # 3.5 standard errors of a 95% rate at 1,000 draws
