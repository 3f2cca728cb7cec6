"""Seed noise: the one place where the harness turns values over seeds into intervals and sides.

Claims, figures and `harness report compare` all call this module; it prints nothing and knows no store.
The statistics come from scipy.stats. The method is Student's t, because these samples are small
(a sweep has 2 to 10 seeds per setting) and, at such sizes, a bootstrap interval is too narrow: with
3 seeds a percentile bootstrap can only return values between the smallest and the largest resampled
mean, and covers the truth far less often than 95%. The t interval is exact for normal noise and
holds its level approximately for the mildly skewed noise of training runs.

- An effect is a contrast of settings' means over their seeds: b - a for two settings, or any
  weighted sum (a second difference, for a curve that flattens).
- Paired by seed where every setting has the same seeds (2 or more): the contrast is taken seed by
  seed and its mean gets a one-sample t interval (scipy.stats.ttest_1samp). Pairing removes what the
  seeds share (the same initialisation and data order), so it is the sharper test where it applies.
- Otherwise Welch's t (unequal variances): scipy.stats.ttest_ind(equal_var=False) for two settings,
  and for more the Welch-Satterthwaite degrees of freedom with scipy.stats.t's quantile.
- A setting with fewer than 2 seeds gives no interval: the effect carries its estimate only, and
  says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
PAIRED, WELCH, SINGLE = "paired t", "Welch t", "no interval"


@dataclass(frozen=True)
class Interval:
    """The mean of one setting's values over its seeds, with its LEVEL t interval (None for n < 2)."""

    mean: float
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class Effect:
    """A contrast of settings' means with its interval (None where a setting has fewer than 2 seeds)."""

    estimate: float
    low: float | None
    high: float | None
    n: tuple[int, ...]  # seeds per setting, in the order given
    method: str  # PAIRED, WELCH or SINGLE

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    def side(self, threshold: float = 0.0) -> str:
        """'above' or 'below' when the interval lies wholly on that side of `threshold`, 'straddles'
        when it contains it; without an interval, the side of the estimate ('above', 'below' or 'at')."""
        low, high = (self.low, self.high) if self.has_interval else (self.estimate, self.estimate)
        if low > threshold:
            return "above"
        if high < threshold:
            return "below"
        return "straddles" if self.has_interval else "at"

    def describe(self) -> str:
        """'+0.083 [+0.051, +0.115] (paired t, n 3/3)'; '+0.083 (no interval, n 1/1)'."""
        seeds = "/".join(str(n) for n in self.n)
        if not self.has_interval:
            return f"{self.estimate:+.3g} ({SINGLE}, n {seeds})"
        return f"{self.estimate:+.3g} [{self.low:+.3g}, {self.high:+.3g}] ({self.method}, n {seeds})"


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of `values` with its t interval (scipy.stats.ttest_1samp's); no interval for n < 2."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("mean_interval of no values")
    if len(x) < 2:
        return Interval(float(x[0]), None, None, 1)
    low, high = _quiet(lambda: stats.ttest_1samp(x, 0.0).confidence_interval(level))
    return Interval(float(x.mean()), float(low), float(high), len(x))


def difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Effect:
    """mean(b) - mean(a) over seeds (seed -> value), paired where both have the same seeds."""
    return contrast([a, b], [-1.0, 1.0], level)


def contrast(groups: Sequence[Mapping[int, float]], weights: Sequence[float], level: float = LEVEL) -> Effect:
    """sum_i weights[i] * mean(groups[i]) with its interval; each group maps a seed to its value."""
    if len(groups) != len(weights) or not groups:
        raise ValueError("contrast needs one weight per group")
    if any(len(g) == 0 for g in groups):
        raise ValueError("contrast of a group without values")
    n = tuple(len(g) for g in groups)
    means = [float(np.mean(list(g.values()))) for g in groups]
    estimate = float(sum(w * m for w, m in zip(weights, means, strict=True)))
    if min(n) < 2:
        return Effect(estimate, None, None, n, SINGLE)
    seeds = set(groups[0])
    if all(set(g) == seeds for g in groups):
        per_seed = np.array([sum(w * g[s] for w, g in zip(weights, groups, strict=True)) for s in sorted(seeds)])
        low, high = _quiet(lambda: stats.ttest_1samp(per_seed, 0.0).confidence_interval(level))
        return Effect(estimate, float(low), float(high), n, PAIRED)
    samples = [np.array(list(g.values()), dtype=float) for g in groups]
    if len(groups) == 2 and weights[0] == -weights[1]:
        result = _quiet(lambda: stats.ttest_ind(samples[1], samples[0], equal_var=False))
        low, high = result.confidence_interval(level)
        scale = weights[1]  # (b - a) times the weight
        low, high = sorted((low * scale, high * scale))
        return Effect(estimate, float(low), float(high), n, WELCH)
    low, high = _welch_satterthwaite(samples, weights, estimate, level)
    return Effect(estimate, low, high, n, WELCH)


def _welch_satterthwaite(samples: list[np.ndarray], weights: Sequence[float], estimate: float,
                         level: float) -> tuple[float, float]:
    """The interval of a contrast of independent means with unequal variances: standard error
    sqrt(sum w_i^2 s_i^2 / n_i), degrees of freedom (sum v_i)^2 / sum v_i^2 / (n_i - 1)."""
    parts = [w * w * x.var(ddof=1) / len(x) for w, x in zip(weights, samples, strict=True)]
    se = math.sqrt(sum(parts))
    if se == 0:
        return estimate, estimate
    dof = sum(parts) ** 2 / sum(p * p / (len(x) - 1) for p, x in zip(parts, samples, strict=True) if p > 0)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return estimate - half, estimate + half


def _quiet(compute):
    """scipy warns of lost precision when the values are (nearly) identical, as reruns of one job on one
    machine are; the interval it returns then is the (near-)point one, which is right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return compute()
