"""`harness report claims`: the qualitative claims of the paper and the report (docs/claims.md), each
checked against the store with its seed noise.

The claims are data: CLAIMS lists each one's id, its words, the experiment it belongs to and the check
that decides it. A check names the differences between settings that the claim asserts (each an `Assertion`:
an effect over seeds with its 95% interval from harness.stats, the side it must lie on, and a margin)
and the verdict follows from them:
- PASS when every tested interval lies wholly on the asserted side of its margin;
- FAIL when any lies wholly on the other side;
- INCONCLUSIVE when none fails and some straddle;
- NOT ENOUGH DATA when a setting the claim needs is missing or has fewer than 2 seeds. With
  `single_seed`, such tests decide on the means alone, and the verdict says "1 seed: no noise estimate".
Requiring every test of a claim to pass needs no correction for their number (an intersection-union
test: each at 97.5% one-sided keeps the claim's false PASS rate under 2.5%).

Settings compared by a claim differ only in what the claim varies (alpha, beta, the prior): where a
sweep mixes other differences (epochs, data), the largest such family is checked and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from harness import stats
from harness.db import queries
from harness.numerics import NUMERICS_VERSION
from harness.report.figures import with_settings

PASS, FAIL, INCONCLUSIVE, NO_DATA = "PASS", "FAIL", "INCONCLUSIVE", "NOT ENOUGH DATA"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NO_DATA)
SINGLE_SEED = "1 seed: no noise estimate"


@dataclass(frozen=True)
class Assertion:
    """One difference a claim asserts: `effect` lies above (">") or below ("<") `margin`."""

    what: str  # "alpha 100: hoyer(gamma 0.8) - hoyer(gamma 0)"
    effect: stats.Effect
    asserts: str  # ">" or "<"
    margin: float = 0.0

    def verdict(self, single_seed: bool = False) -> str:
        if not self.effect.has_interval and not single_seed:
            return NO_DATA
        side = self.effect.side(self.margin)
        if side in ("straddles", "at"):
            return INCONCLUSIVE
        return PASS if side == ("above" if self.asserts == ">" else "below") else FAIL

    def describe(self, single_seed: bool = False) -> str:
        return f"{self.what} = {self.effect.describe()} {self.asserts} {self.margin:g}: {self.verdict(single_seed)}"


@dataclass(frozen=True)
class Verdict:
    """What a check found: the tests it made (none where data are missing) and the numbers behind them."""

    evidence: str
    tests: tuple[Assertion, ...] = ()
    job_ids: list[str] = field(default_factory=list)
    seeds: str = ""
    missing: str = ""  # why there are no tests (NOT ENOUGH DATA), said in words

    def decide(self, single_seed: bool = False) -> str:
        if self.missing or not self.tests:
            return NO_DATA
        verdicts = [t.verdict(single_seed) for t in self.tests]
        if FAIL in verdicts:
            return FAIL
        if NO_DATA in verdicts:
            return NO_DATA
        return PASS if all(v == PASS for v in verdicts) else INCONCLUSIVE


def missing(text: str) -> Verdict:
    return Verdict("", missing=text)


@dataclass(frozen=True)
class Claim:
    claim_id: str
    text: str
    applies: Callable[[pl.DataFrame], bool]  # does this sweep's data belong to the claim's experiment?
    check: Callable[[pl.DataFrame, Path], Verdict]
    needs: str  # the settings the check needs, said in words for NOT ENOUGH DATA


@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    text: str
    sweep: str
    verdict: str
    evidence: str  # the means and each tested difference with its interval, n and verdict
    job_ids: list[str]
    seeds: str  # seeds per setting, e.g. "3 seed(s) per setting"
    tests: list[str] = field(default_factory=list)  # one line per tested difference
    n: str = ""  # the smallest and largest number of seeds of a tested setting, e.g. "3" or "1-3"
    method: str = ""  # the interval's method(s): paired t, Welch t, no interval
    note: str = ""  # "1 seed: no noise estimate" where a test decided on means alone


# -- the settings a claim compares, as seed -> value ----------------------------------------------------


class Settings:
    """The settings of one family of a sweep, each named by (alpha, beta, prior label), with one metric's
    values by seed; `used` collects the jobs that the claim's tests read."""

    def __init__(self, runs: pl.DataFrame, metric: str):
        self.metric = metric
        self.runs = runs.filter(pl.col(metric).is_not_null())
        self.used: dict[str, pl.DataFrame] = {}

    def keys(self, **where) -> list[tuple[float, float, str]]:
        frame = self._where(**where)
        return sorted(set(zip(frame["alpha"].to_list(), frame["beta"].to_list(), frame["prior_label"].to_list(),
                              strict=True)))

    def _where(self, **where) -> pl.DataFrame:
        frame = self.runs
        for column, value in where.items():
            frame = frame.filter(pl.col(column) == value)
        return frame

    def get(self, **where) -> dict[int, float] | None:
        """seed -> value of the setting matching `where` (None where there is none)."""
        frame = self._where(**where)
        if frame.is_empty():
            return None
        self.used[repr(sorted(where.items()))] = frame
        return dict(zip(frame["seed"].to_list(), frame[self.metric].to_list(), strict=True))

    def job_ids(self) -> list[str]:
        return sorted({i for frame in self.used.values() for i in frame["job_id"].to_list()})

    def seeds(self) -> str:
        counts = sorted({frame.height for frame in self.used.values()})
        return f"{'/'.join(str(c) for c in counts)} seed(s) per setting"

    def verdict(self, evidence: str, tests: list[Assertion]) -> Verdict:
        return Verdict(evidence, tuple(tests), self.job_ids(), self.seeds())


def _mean(values: dict[int, float]) -> float:
    return sum(values.values()) / len(values)


def _sparse(runs: pl.DataFrame) -> bool:
    return (runs["prior"] == "sparse").any()


def _hoyer(runs: pl.DataFrame, **where) -> Settings:
    frame = runs.filter(pl.col("prior") == "sparse")
    for column, value in where.items():
        frame = frame.filter(pl.col(column) == value)
    return Settings(frame, "hoyer")


# -- the checks ---------------------------------------------------------------------------------------


def gamma_above_at_every_alpha(runs: pl.DataFrame, store: Path) -> Verdict:
    """With beta 1: at every alpha that has both, hoyer(gamma 0.8) - hoyer(gamma 0) > 0."""
    s = _hoyer(runs, beta=1.0)
    alphas = sorted({a for a, _, _ in s.keys(gamma=0.8)} & {a for a, _, _ in s.keys(gamma=0.0)})
    if len(alphas) < 2:
        return missing(f"{len(alphas)} alpha(s) with both gamma 0 and 0.8 at beta 1; need 2 or more")
    tests = [Assertion(f"alpha {a:g}: hoyer(gamma 0.8) - hoyer(gamma 0)",
                  stats.difference(s.get(alpha=a, gamma=0.0), s.get(alpha=a, gamma=0.8)), ">") for a in alphas]
    return s.verdict("differences (gamma 0.8 - gamma 0) at each alpha", tests)


def sparsity_rises_then_flattens(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0.8, beta 1: sparsity rises from alpha 0 to 100 (h100 - h0 > 0) and rises less from 100 to
    1000 than from 0 to 100 (it flattens: (h100 - h0) - (h1000 - h100) > 0)."""
    s = _hoyer(runs, beta=1.0, gamma=0.8)
    at = {a: s.get(alpha=a) for a in (0.0, 100.0, 1000.0)}
    if any(v is None for v in at.values()):
        return missing(f"gamma 0.8, beta 1 at alphas {sorted(a for a, _, _ in s.keys())}; need 0, 100 and 1000")
    h0, h100, h1000 = at[0.0], at[100.0], at[1000.0]
    tests = [Assertion("rise 0->100: h(100) - h(0)", stats.difference(h0, h100), ">"),
             Assertion("flattening: [h(100) - h(0)] - [h(1000) - h(100)]",
                       stats.contrast([h0, h100, h1000], [-1.0, 2.0, -1.0]), ">")]
    return s.verdict(f"hoyer {_mean(h0):.3f} -> {_mean(h100):.3f} -> {_mean(h1000):.3f} at alpha 0, 100, 1000",
                     tests)


def gaussian_stays_low(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0, beta 1: sparsity does not rise with alpha (hoyer at the largest alpha minus at alpha 0
    below +0.02) and stays below the gamma 0.8 run at the largest alpha."""
    s = _hoyer(runs, beta=1.0)
    dense = sorted(a for a, _, _ in s.keys(gamma=0.0))
    if 0.0 not in dense or len(dense) < 2:
        return missing(f"gamma 0, beta 1 at alphas {dense}; need alpha 0 and a larger one")
    top = dense[-1]
    low, high = s.get(alpha=0.0, gamma=0.0), s.get(alpha=top, gamma=0.0)
    tests = [Assertion(f"gamma 0: h(alpha {top:g}) - h(alpha 0)", stats.difference(low, high), "<", 0.02)]
    sparse = s.get(alpha=top, gamma=0.8)
    if sparse is not None:
        tests.append(Assertion(f"alpha {top:g}: h(gamma 0.8) - h(gamma 0)", stats.difference(high, sparse), ">"))
    return s.verdict(f"gamma 0: hoyer {_mean(low):.3f} at alpha 0, {_mean(high):.3f} at alpha {top:g}", tests)


def beta5_lowest(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0.8: the beta 5 curve is the lowest: at every alpha with betas 0.1, 1 and 5,
    hoyer(beta 5) - hoyer(beta b) < 0 for b in 0.1 and 1."""
    s = _hoyer(runs, gamma=0.8)
    alphas = [a for a in sorted({a for a, _, _ in s.keys()})
              if {0.1, 1.0, 5.0} <= {b for _, b, _ in s.keys(alpha=a)}]
    if not alphas:
        return missing("no alpha with gamma 0.8 at betas 0.1, 1 and 5")
    tests = [Assertion(f"alpha {a:g}: h(beta 5) - h(beta {b:g})",
                  stats.difference(s.get(alpha=a, beta=b), s.get(alpha=a, beta=5.0)), "<")
             for a in alphas for b in (0.1, 1.0)]
    return s.verdict("differences (beta 5 - each other beta) at each alpha", tests)


def _separation_change(runs: pl.DataFrame, fixed: str, varied: str, asserts: str, margin: float) -> Verdict:
    """The four arms' separation in the codes (class_separation: the share of the codes' variance that
    the pinwheel's arms explain) with `fixed` = 0: sep(largest `varied`) - sep(smallest) `asserts` `margin`."""
    s = Settings(runs.filter(pl.col(fixed) == 0), "class_separation")
    values = sorted({k[0 if varied == "alpha" else 1] for k in s.keys()})
    if len(values) < 2:
        return missing(f"{len(values)} setting(s) with {fixed} 0 and class_separation; need 2 or more {varied} "
                       "values (`harness eval --metric class_separation` adds it to older stores)")
    line = {v: s.get(**{varied: v}) for v in values}
    text = ", ".join(f"{varied} {v:g}: {_mean(x):.2f}" for v, x in line.items())
    low, high = values[0], values[-1]
    return s.verdict(f"arm separation (eta^2) with {fixed} 0: {text}",
                     [Assertion(f"sep({varied} {high:g}) - sep({varied} {low:g})",
                                stats.difference(line[low], line[high]), asserts, margin)])


def beta_destroys_clusters(runs: pl.DataFrame, store: Path) -> Verdict:
    """With alpha 0, raising beta destroys the four-arm structure: separation(largest beta) -
    separation(smallest beta) < 0."""
    return _separation_change(runs, "alpha", "beta", "<", 0.0)


def alpha_keeps_clusters(runs: pl.DataFrame, store: Path) -> Verdict:
    """With beta 0, raising alpha keeps the structure: separation(largest alpha) - separation(alpha 0)
    > -0.05."""
    return _separation_change(runs, "beta", "alpha", ">", -0.05)


def structured_priors_disentangle_better(runs: pl.DataFrame, store: Path) -> Verdict:
    """At beta 1: the learnt anisotropic and the Student-t priors each score higher (Kim & Mnih) than the
    isotropic Gaussian: kim(prior) - kim(Gaussian) > 0 for each."""
    s = Settings(runs.filter(pl.col("beta") == 1), "kim_mnih")
    labels = sorted({label for _, _, label in s.keys()})
    others = [k for k in labels if k.startswith("Student-t") or k == "anisotropic (learnt)"]
    if "Gaussian" not in labels or not others:
        return missing(f"priors at beta 1: {labels or 'none'}; need Gaussian and anisotropic (learnt) or "
                       "Student-t")
    iso = s.get(prior_label="Gaussian")
    tests = [Assertion(f"kim({k}) - kim(Gaussian)", stats.difference(iso, s.get(prior_label=k)), ">") for k in others]
    text = f"Gaussian {_mean(iso):.3f}; " + ", ".join(f"{k} {_mean(s.get(prior_label=k)):.3f}" for k in others)
    return s.verdict(text, tests)


def isotropic_gains_nothing_from_beta(runs: pl.DataFrame, store: Path) -> Verdict:
    """The isotropic Gaussian's score at its largest beta is no better than at beta 1 (kim(largest beta) -
    kim(beta 1) < +0.02)."""
    s = Settings(runs.filter(pl.col("prior_label") == "Gaussian"), "kim_mnih")
    betas = sorted({b for _, b, _ in s.keys()})
    if len(betas) < 2 or betas[0] != 1:
        return missing("the isotropic Gaussian needs beta 1 and a larger beta")
    low, high = s.get(beta=1.0), s.get(beta=betas[-1])
    return s.verdict(f"Gaussian: beta 1 {_mean(low):.3f}, beta {betas[-1]:g} {_mean(high):.3f}",
                     [Assertion(f"kim(beta {betas[-1]:g}) - kim(beta 1)", stats.difference(low, high), "<", 0.02)])


def classic_vae_not_sparse(runs: pl.DataFrame, store: Path) -> Verdict:
    """Rotated-MNIST: the classic VAE (alpha 0, beta 1, gamma 0) is the least sparse of the report's settings:
    hoyer(s) - hoyer(classic) > 0 for every other setting s, (alpha 1000, beta 1, gamma 0.8) among them."""
    s = Settings(runs, "hoyer")
    classic = s.get(alpha=0.0, beta=1.0, gamma=0.0)
    if classic is None or s.get(alpha=1000.0, beta=1.0, gamma=0.8) is None:
        return missing("need the classic VAE (0, 1, 0) and (alpha 1000, beta 1, gamma 0.8)")
    settings = sorted({(a, b, g) for a, b, g in zip(s.runs["alpha"].to_list(), s.runs["beta"].to_list(),
                                                     s.runs["gamma"].to_list(), strict=True)} - {(0.0, 1.0, 0.0)})
    others = {(a, b, g): s.get(alpha=a, beta=b, gamma=g) for a, b, g in settings if g is not None}
    tests = [Assertion(f"h(alpha {a:g}, beta {b:g}, gamma {g:g}) - h(classic)", stats.difference(classic, x), ">")
             for (a, b, g), x in others.items()]
    return s.verdict(f"classic VAE {_mean(classic):.3f}; alpha 1000, beta 1, gamma 0.8: "
                     f"{_mean(s.get(alpha=1000.0, beta=1.0, gamma=0.8)):.3f}", tests)


def alpha_adds_more_than_beta(runs: pl.DataFrame, store: Path) -> Verdict:
    """Rotated-MNIST, gamma 0.8: raising alpha (to 1000 at beta 1) adds more sparsity than raising beta (to 128
    at alpha 0), both from (alpha 0, beta 1): [h(1000, 1) - h(0, 1)] - [h(0, 128) - h(0, 1)] =
    h(1000, 1) - h(0, 128) > 0."""
    s = Settings(runs.filter(pl.col("gamma") == 0.8), "hoyer")
    base, by_alpha, by_beta = (s.get(alpha=a, beta=b) for a, b in ((0.0, 1.0), (1000.0, 1.0), (0.0, 128.0)))
    if base is None or by_alpha is None or by_beta is None:
        return missing("need gamma 0.8 at (alpha, beta) = (0, 1), (1000, 1) and (0, 128)")
    return s.verdict(f"from {_mean(base):.3f}: alpha 1000 -> {_mean(by_alpha):.3f}, beta 128 -> {_mean(by_beta):.3f}",
                     [Assertion("h(alpha 1000, beta 1) - h(alpha 0, beta 128)", stats.difference(by_beta, by_alpha),
                           ">")])


def _dataset(*names: str) -> Callable[[pl.DataFrame], bool]:
    return lambda runs: runs["dataset"][0] in names


def _has_factors(runs: pl.DataFrame) -> bool:
    return runs["kim_mnih"].is_not_null().any() and runs["dataset"][0] in ("shapes2d", "dsprites")


CLAIMS: tuple[Claim, ...] = (
    Claim("sparsity.gamma_above", "Sparsity: gamma 0.8 is sparser than gamma 0 at every alpha (beta 1)",
          lambda r: _dataset("fashion_mnist")(r) and _sparse(r), gamma_above_at_every_alpha,
          "gamma 0 and 0.8 at two or more alphas"),
    Claim("sparsity.rises_then_flattens", "Sparsity: with gamma 0.8 it rises steeply from alpha 0 to 100 and "
          "flattens by 1000", lambda r: _dataset("fashion_mnist")(r) and _sparse(r), sparsity_rises_then_flattens,
          "alpha 0, 100, 1000 at gamma 0.8, beta 1"),
    Claim("sparsity.gaussian_low", "Sparsity: with gamma 0 it stays low and does not rise with alpha",
          lambda r: _dataset("fashion_mnist")(r) and _sparse(r), gaussian_stays_low, "gamma 0 at alpha 0 and more"),
    Claim("sparsity.beta5_lowest", "Sparsity: beta 5 gives the lowest gamma 0.8 curve",
          lambda r: _dataset("fashion_mnist")(r) and _sparse(r), beta5_lowest, "betas 0.1, 1, 5 at gamma 0.8"),
    Claim("clustering.beta_destroys", "Clustering: with alpha 0, raising beta destroys the four-arm structure",
          _dataset("pinwheel"), beta_destroys_clusters, "alpha 0 at two or more betas"),
    Claim("clustering.alpha_keeps", "Clustering: with beta 0, raising alpha keeps the structure",
          _dataset("pinwheel"), alpha_keeps_clusters, "beta 0 at two or more alphas"),
    Claim("independence.structured_better", "Independence: learnt anisotropic and Student-t priors disentangle "
          "better than the isotropic Gaussian (beta 1)", _has_factors, structured_priors_disentangle_better,
          "Gaussian and structured priors at beta 1"),
    Claim("independence.iso_beta_no_gain", "Independence: the isotropic Gaussian gains nothing from larger beta",
          _has_factors, isotropic_gains_nothing_from_beta, "the Gaussian at beta 1 and more"),
    Claim("rotated.classic_not_sparse", "Rotated-MNIST: the classic VAE shows no sparsity",
          _dataset("rotated_mnist"), classic_vae_not_sparse, "the classic VAE and alpha 1000"),
    Claim("rotated.alpha_over_beta", "Rotated-MNIST: raising alpha adds more sparsity than raising beta",
          _dataset("rotated_mnist"), alpha_adds_more_than_beta, "(0, 1), (1000, 1), (0, 128) at gamma 0.8"),
)


def main_family(runs: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The jobs of the family (spec up to alpha, beta, prior and seed) with the most jobs, and a note when
    the sweep has others: a claim compares settings that differ only in what it varies."""
    sizes = runs.group_by("family").len().sort(["len", "family"], descending=[True, False])
    chosen = runs.filter(pl.col("family") == sizes["family"][0])
    note = "" if sizes.height == 1 else (f" [the largest of {sizes.height} families of settings: "
                                         f"{chosen.height} of {runs.height} jobs]")
    return chosen, note


def _result(claim: Claim, sweep: str, verdict: Verdict, note: str, single_seed: bool) -> ClaimResult:
    decided = verdict.decide(single_seed)
    lines = [t.describe(single_seed) for t in verdict.tests]
    counts = sorted({n for t in verdict.tests for n in t.effect.n})
    methods = sorted({t.effect.method for t in verdict.tests})
    by_means = single_seed and any(not t.effect.has_interval for t in verdict.tests)
    evidence = verdict.missing or "; ".join([verdict.evidence, *lines])
    return ClaimResult(claim.claim_id, claim.text, sweep, decided, evidence + note, verdict.job_ids, verdict.seeds,
                       lines, "-".join(str(c) for c in sorted({counts[0], counts[-1]})) if counts else "",
                       ", ".join(methods), SINGLE_SEED if by_means else "")


def check_claims(store: Path, numerics: int | None = NUMERICS_VERSION, sweeps: list[str] | None = None,
                 single_seed: bool = False) -> list[ClaimResult]:
    """Every claim against every sweep whose data belong to its experiment. With `single_seed`, tests whose
    settings have one seed decide on the means (and say so) instead of NOT ENOUGH DATA."""
    results = []
    for sweep in sweeps if sweeps is not None else queries.sweeps(store):
        runs = queries.finished_runs(store, sweep, numerics)
        if runs.is_empty():
            continue
        runs, note = main_family(with_settings(runs))
        for claim in CLAIMS:
            if claim.applies(runs):
                results.append(_result(claim, sweep, claim.check(runs, store), note, single_seed))
    return results
