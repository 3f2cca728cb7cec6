"""One function per figure. Each writes PNG, PDF and the CSV of exactly what it plotted, stamped with
the job ids it used, and returns the paths; a figure without data returns nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from harness.db import queries  # noqa: E402
from harness.numerics import NUMERICS_VERSION  # noqa: E402


@dataclass(frozen=True)
class Figure:
    name: str
    paths: list[Path]
    jobs: int
    note: str = ""


def _save(fig, frame: pl.DataFrame, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    frame.write_csv(paths[2])
    return paths


def sparsity_vs_alpha(store: Path, out: Path, numerics: int | None) -> Figure | None:
    """Normalised Hoyer sparsity against alpha, one line per (beta, gamma): mean over seeds, with the
    min-max band (the paper's figure 4, left). With every numerics version, each is its own line."""
    runs = queries.sparsity_runs(store, numerics)
    if runs.is_empty():
        return None
    summary = (runs.group_by(["numerics", "beta", "gamma", "alpha"])
               .agg(pl.col("hoyer").mean().alias("hoyer_mean"), pl.col("hoyer").std().alias("hoyer_std"),
                    pl.col("hoyer").min().alias("hoyer_min"), pl.col("hoyer").max().alias("hoyer_max"),
                    pl.len().alias("seeds"), pl.col("job_id").sort().str.join(";").alias("job_ids"))
               .sort(["numerics", "beta", "gamma", "alpha"]))
    versions = summary["numerics"].unique().to_list()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (version, beta, gamma), line in summary.group_by(["numerics", "beta", "gamma"], maintain_order=True):
        style = "-" if gamma and gamma > 0 else "--"
        label = f"beta={beta:g}, gamma={gamma:g}" + (f", numerics {version}" if len(versions) > 1 else "")
        ax.plot(line["alpha"], line["hoyer_mean"], style, marker="o", label=label)
        ax.fill_between(line["alpha"].to_list(), line["hoyer_min"].to_list(), line["hoyer_max"].to_list(),
                        alpha=0.15)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("alpha")
    ax.set_ylabel("normalised Hoyer sparsity (test set)")
    ax.set_title("Sparsity against alpha (mean, min-max over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return Figure("sparsity_vs_alpha", _save(fig, summary, out, "sparsity_vs_alpha"), len(runs))


MAGNITUDE_CLASSES = ("Trouser", "Dress", "Shirt")


def _magnitude_job(runs: pl.DataFrame) -> pl.DataFrame:
    """The paper's setting (alpha 1000, beta 1, gamma 0.8) if present, else the sparsest gamma > 0 run
    with the largest alpha; the lowest seed."""
    exact = runs.filter((pl.col("alpha") == 1000) & (pl.col("beta") == 1) & (pl.col("gamma") == 0.8))
    if not exact.is_empty():
        return exact.sort(["numerics", "seed"], descending=[True, False]).head(1)
    sparse = runs.filter(pl.col("gamma") > 0)
    pool = sparse if not sparse.is_empty() else runs
    return pool.sort(["numerics", "alpha", "hoyer", "seed"], descending=[True, True, True, False]).head(1)


def class_magnitudes(store: Path, out: Path, numerics: int | None) -> Figure | None:
    """Per-dimension mean |posterior mean| for trouser, dress and shirt, as grouped bars (figure 4, right)."""
    runs = queries.sparsity_runs(store, numerics)
    if runs.is_empty():
        return None
    job = _magnitude_job(runs).row(0, named=True)
    stats = queries.class_magnitudes(store, job["job_id"]).filter(pl.col("class_name").is_in(MAGNITUDE_CLASSES))
    if stats.is_empty():
        return None
    stats = stats.with_columns(pl.lit(job["job_id"]).alias("job_id"), pl.lit(job["alpha"]).alias("alpha"),
                               pl.lit(job["beta"]).alias("beta"), pl.lit(job["gamma"]).alias("gamma"),
                               pl.lit(job["seed"]).alias("seed"), pl.lit(job["numerics"]).alias("numerics"))
    dims = sorted(stats["dim"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(6, len(dims) * 0.18), 3.5))
    width = 0.8 / len(MAGNITUDE_CLASSES)
    for i, name in enumerate(MAGNITUDE_CLASSES):
        rows = stats.filter(pl.col("class_name") == name).sort("dim")
        ax.bar([d + (i - 1) * width for d in rows["dim"]], rows["mean_abs_loc"], width, label=name)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("mean |posterior mean|")
    ax.set_title(f"Per-class latent magnitudes (alpha={job['alpha']:g}, beta={job['beta']:g}, "
                 f"gamma={job['gamma']:g}, seed {job['seed']}, job {job['job_id']})", fontsize=8)
    ax.legend(fontsize=7)
    return Figure("class_magnitudes", _save(fig, stats, out, "class_magnitudes"), 1)


FIGURES: dict[str, Callable[[Path, Path, int | None], Figure | None]] = {
    "sparsity_vs_alpha": sparsity_vs_alpha,
    "class_magnitudes": class_magnitudes,
}


def build_all(store: Path, out: Path, only: list[str] | None = None,
              numerics: int | None = NUMERICS_VERSION) -> dict[str, Figure | None]:
    """Every figure (or those in `only`) from the jobs of numerics version `numerics` (None: all)."""
    return {name: fn(store, out, numerics) for name, fn in FIGURES.items() if not only or name in only}
