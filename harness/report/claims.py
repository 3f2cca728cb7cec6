"""`harness report claims`: the qualitative claims of the paper and the report (SPEC section 6), each
checked against the store.

The claims are data: CLAIMS lists each one's id, its words, the experiment it belongs to and the check
that decides it. A check reads one sweep's settings (the mean over their seeds, as the figures show them)
and returns PASS, FAIL or NOT ENOUGH DATA with the numbers behind the verdict and the jobs it used.
Settings compared by a claim differ only in what the claim varies (alpha, beta, the prior): where a
sweep mixes other differences (epochs, data), the largest such family is checked and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from harness.db import queries
from harness.numerics import NUMERICS_VERSION
from harness.report.figures import summarise, with_settings

PASS, FAIL, NO_DATA = "PASS", "FAIL", "NOT ENOUGH DATA"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: str
    job_ids: list[str] = field(default_factory=list)
    seeds: str = ""


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
    evidence: str
    job_ids: list[str]
    seeds: str


def _ids(frame: pl.DataFrame) -> list[str]:
    return sorted(i for ids in frame["job_ids"].to_list() for i in ids.split(";"))


def _seeds(frame: pl.DataFrame) -> str:
    counts = sorted(set(frame["n"].to_list()))
    return f"{'/'.join(str(c) for c in counts)} seed(s) per setting"


def _sparse(runs: pl.DataFrame) -> bool:
    return (runs["prior"] == "sparse").any()


def _hoyer_table(runs: pl.DataFrame, beta: float = 1.0) -> pl.DataFrame:
    return summarise(runs.filter((pl.col("prior") == "sparse") & (pl.col("beta") == beta)), "hoyer")


def gamma_above_at_every_alpha(runs: pl.DataFrame, store: Path) -> Verdict:
    """With beta 1: the gamma 0.8 sparsity is above the gamma 0 sparsity at every alpha that has both."""
    table = _hoyer_table(runs)
    sparse, dense = table.filter(pl.col("gamma") == 0.8), table.filter(pl.col("gamma") == 0)
    pairs = sparse.join(dense, on="alpha", suffix="_dense").sort("alpha")
    if pairs.height < 2:
        return Verdict(NO_DATA, f"{pairs.height} alpha(s) with both gamma 0 and 0.8 at beta 1; need 2 or more")
    margins = [(r["alpha"], r["hoyer_mean"] - r["hoyer_mean_dense"]) for r in pairs.iter_rows(named=True)]
    text = ", ".join(f"alpha {a:g}: {m:+.3f}" for a, m in margins)
    used = pl.concat([sparse, dense])
    return Verdict(PASS if all(m > 0 for _, m in margins) else FAIL, f"margins (gamma 0.8 - gamma 0) {text}",
                   _ids(used), _seeds(used))


def sparsity_rises_then_flattens(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0.8, beta 1: sparsity rises from alpha 0 to alpha 100, and rises less from 100 to 1000
    than from 0 to 100 (it flattens)."""
    table = _hoyer_table(runs).filter(pl.col("gamma") == 0.8)
    at = {r["alpha"]: r["hoyer_mean"] for r in table.iter_rows(named=True)}
    if not {0.0, 100.0, 1000.0} <= set(at):
        return Verdict(NO_DATA, f"gamma 0.8, beta 1 at alphas {sorted(at)}; need 0, 100 and 1000")
    first, second = at[100.0] - at[0.0], at[1000.0] - at[100.0]
    used = table.filter(pl.col("alpha").is_in([0.0, 100.0, 1000.0]))
    ok = first > 0 and second < first
    return Verdict(PASS if ok else FAIL, f"hoyer {at[0.0]:.3f} -> {at[100.0]:.3f} -> {at[1000.0]:.3f} "
                   f"(rise 0->100 {first:+.3f}, 100->1000 {second:+.3f})", _ids(used), _seeds(used))


def gaussian_stays_low(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0, beta 1: sparsity does not rise with alpha (largest alpha at most the alpha 0 value plus
    0.02) and stays below the gamma 0.8 run at the largest alpha."""
    table = _hoyer_table(runs)
    dense = {r["alpha"]: r["hoyer_mean"] for r in table.filter(pl.col("gamma") == 0).iter_rows(named=True)}
    sparse = {r["alpha"]: r["hoyer_mean"] for r in table.filter(pl.col("gamma") == 0.8).iter_rows(named=True)}
    if 0.0 not in dense or len(dense) < 2:
        return Verdict(NO_DATA, f"gamma 0, beta 1 at alphas {sorted(dense)}; need alpha 0 and a larger one")
    top = max(dense)
    ok = dense[top] <= dense[0.0] + 0.02 and (top not in sparse or dense[top] < sparse[top])
    used = table.filter(pl.col("gamma") == 0)
    return Verdict(PASS if ok else FAIL, f"gamma 0: hoyer {dense[0.0]:.3f} at alpha 0, {dense[top]:.3f} at alpha "
                   f"{top:g}" + (f"; gamma 0.8 at alpha {top:g}: {sparse[top]:.3f}" if top in sparse else ""),
                   _ids(used), _seeds(used))


def beta5_lowest(runs: pl.DataFrame, store: Path) -> Verdict:
    """With gamma 0.8: the beta 5 curve is the lowest, i.e. at every alpha with betas 0.1, 1 and 5 its
    sparsity is the smallest."""
    table = summarise(runs.filter((pl.col("prior") == "sparse") & (pl.col("gamma") == 0.8)), "hoyer")
    by_alpha = table.group_by("alpha").agg(pl.col("beta"), pl.col("hoyer_mean"))
    rows = [r for r in by_alpha.iter_rows(named=True) if {0.1, 1.0, 5.0} <= set(r["beta"])]
    if not rows:
        return Verdict(NO_DATA, "no alpha with gamma 0.8 at betas 0.1, 1 and 5")
    lowest = {r["alpha"]: r["beta"][r["hoyer_mean"].index(min(r["hoyer_mean"]))] for r in rows}
    text = ", ".join(f"alpha {a:g}: lowest beta {b:g}" for a, b in sorted(lowest.items()))
    return Verdict(PASS if all(b == 5.0 for b in lowest.values()) else FAIL, text, _ids(table), _seeds(table))


def _separation_along(runs: pl.DataFrame, fixed: str, varied: str) -> Verdict | tuple[Verdict, list[float]]:
    """The four arms' separation in the codes (class_separation: the share of the codes' variance that
    the pinwheel's arms explain) along `varied` with `fixed` = 0, as means over seeds. A Verdict where
    data are missing, else (the evidence without a verdict, the values in order of `varied`)."""
    line = summarise(runs.filter(pl.col(fixed) == 0), "class_separation").sort(varied)
    if line.height < 2:
        return Verdict(NO_DATA, f"{line.height} setting(s) with {fixed} 0 and class_separation; need 2 or more "
                       f"{varied} values (`harness eval --metric class_separation` adds it to older stores)")
    values = line["class_separation_mean"].to_list()
    text = ", ".join(f"{varied} {v:g}: {s:.2f}" for v, s in zip(line[varied].to_list(), values, strict=True))
    return Verdict("", f"arm separation (eta^2) with {fixed} 0: {text}", _ids(line), _seeds(line)), values


def beta_destroys_clusters(runs: pl.DataFrame, store: Path) -> Verdict:
    """With alpha 0, raising beta destroys the four-arm structure: the arms' separation at the largest beta
    is lower than at the smallest."""
    result = _separation_along(runs, "alpha", "beta")
    if isinstance(result, Verdict):
        return result
    verdict, values = result
    return Verdict(PASS if values[-1] < values[0] else FAIL, verdict.evidence, verdict.job_ids, verdict.seeds)


def alpha_keeps_clusters(runs: pl.DataFrame, store: Path) -> Verdict:
    """With beta 0, raising alpha keeps the structure: the arms' separation at the largest alpha is at least
    that at alpha 0, less 0.05."""
    result = _separation_along(runs, "beta", "alpha")
    if isinstance(result, Verdict):
        return result
    verdict, values = result
    return Verdict(PASS if values[-1] >= values[0] - 0.05 else FAIL, verdict.evidence, verdict.job_ids,
                   verdict.seeds)


def _kim_table(runs: pl.DataFrame) -> pl.DataFrame:
    return summarise(runs.filter(pl.col("kim_mnih").is_not_null()), "kim_mnih")


def structured_priors_disentangle_better(runs: pl.DataFrame, store: Path) -> Verdict:
    """At beta 1: the learnt anisotropic and the Student-t priors each score higher (Kim & Mnih) than the
    isotropic Gaussian."""
    table = _kim_table(runs).filter(pl.col("beta") == 1)
    by = {r["prior_label"]: r for r in table.iter_rows(named=True)}
    iso = by.get("Gaussian")
    others = {k: v for k, v in by.items() if k.startswith("Student-t") or k == "anisotropic (learnt)"}
    if iso is None or not others:
        return Verdict(NO_DATA, f"priors at beta 1: {sorted(by) or 'none'}; need Gaussian and anisotropic "
                       "(learnt) or Student-t")
    text = f"Gaussian {iso['kim_mnih_mean']:.3f}; " + ", ".join(f"{k} {v['kim_mnih_mean']:.3f}"
                                                              for k, v in sorted(others.items()))
    ok = all(v["kim_mnih_mean"] > iso["kim_mnih_mean"] for v in others.values())
    used = table.filter(pl.col("prior_label").is_in(["Gaussian", *others]))
    return Verdict(PASS if ok else FAIL, text, _ids(used), _seeds(used))


def isotropic_gains_nothing_from_beta(runs: pl.DataFrame, store: Path) -> Verdict:
    """The isotropic Gaussian's score at its largest beta is no better than at beta 1 (within 0.02)."""
    table = _kim_table(runs).filter(pl.col("prior_label") == "Gaussian").sort("beta")
    if table.height < 2 or table["beta"][0] != 1:
        return Verdict(NO_DATA, "the isotropic Gaussian needs beta 1 and a larger beta")
    low, high = table.row(0, named=True), table.row(-1, named=True)
    return Verdict(PASS if high["kim_mnih_mean"] <= low["kim_mnih_mean"] + 0.02 else FAIL,
                   f"Gaussian: beta 1 {low['kim_mnih_mean']:.3f}, beta {high['beta']:g} {high['kim_mnih_mean']:.3f}",
                   _ids(table), _seeds(table))


def classic_vae_not_sparse(runs: pl.DataFrame, store: Path) -> Verdict:
    """Rotated-MNIST: the classic VAE (alpha 0, beta 1, gamma 0) is the least sparse of the report's
    settings, and (alpha 1000, beta 1, gamma 0.8) sparser than it."""
    table = summarise(runs, "hoyer")
    at = {(r["alpha"], r["beta"], r["gamma"]): r for r in table.iter_rows(named=True)}
    classic, sparse = at.get((0.0, 1.0, 0.0)), at.get((1000.0, 1.0, 0.8))
    if classic is None or sparse is None:
        return Verdict(NO_DATA, "need the classic VAE (0, 1, 0) and (alpha 1000, beta 1, gamma 0.8)")
    lowest = min(table["hoyer_mean"].to_list())
    ok = classic["hoyer_mean"] == lowest and sparse["hoyer_mean"] > classic["hoyer_mean"]
    used = table.filter(pl.col("job_ids").is_in([classic["job_ids"], sparse["job_ids"]]))
    return Verdict(PASS if ok else FAIL, f"classic VAE {classic['hoyer_mean']:.3f} (lowest of all: {lowest:.3f}); "
                   f"alpha 1000, beta 1, gamma 0.8: {sparse['hoyer_mean']:.3f}", _ids(used), _seeds(used))


def alpha_adds_more_than_beta(runs: pl.DataFrame, store: Path) -> Verdict:
    """Rotated-MNIST, gamma 0.8: raising alpha (to 1000 at beta 1) adds more sparsity than raising beta
    (to 128 at alpha 0), both from (alpha 0, beta 1)."""
    table = summarise(runs.filter(pl.col("gamma") == 0.8), "hoyer")
    at = {(r["alpha"], r["beta"]): r for r in table.iter_rows(named=True)}
    needed = [(0.0, 1.0), (1000.0, 1.0), (0.0, 128.0)]
    if not all(k in at for k in needed):
        return Verdict(NO_DATA, "need gamma 0.8 at (alpha, beta) = (0, 1), (1000, 1) and (0, 128)")
    base, by_alpha, by_beta = (at[k]["hoyer_mean"] for k in needed)
    used = table.filter(pl.col("job_ids").is_in([at[k]["job_ids"] for k in needed]))
    return Verdict(PASS if by_alpha - base > by_beta - base else FAIL,
                   f"from {base:.3f}: alpha 1000 -> {by_alpha:.3f} ({by_alpha - base:+.3f}), beta 128 -> "
                   f"{by_beta:.3f} ({by_beta - base:+.3f})", _ids(used), _seeds(used))


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


def check_claims(store: Path, numerics: int | None = NUMERICS_VERSION,
                 sweeps: list[str] | None = None) -> list[ClaimResult]:
    """Every claim against every sweep whose data belong to its experiment. A sweep's settings are
    compared as means over their seeds."""
    results = []
    for sweep in sweeps if sweeps is not None else queries.sweeps(store):
        runs = queries.finished_runs(store, sweep, numerics)
        if runs.is_empty():
            continue
        runs, note = main_family(with_settings(runs))
        for claim in CLAIMS:
            if claim.applies(runs):
                verdict = claim.check(runs, store)
                results.append(ClaimResult(claim.claim_id, claim.text, sweep, verdict.verdict, verdict.evidence + note,
                                           verdict.job_ids, verdict.seeds))
    return results
