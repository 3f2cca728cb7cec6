"""One function per figure, each drawn from the store alone (SQL -> polars -> matplotlib).

Every figure is built per sweep, from the jobs of one numerics version (unless asked for all), and is
honest about what it pools: a point is one setting (a spec up to its seed) with the mean over its seeds,
its 95% t interval (harness.stats; none for a single seed, which the label says) and its n written
beside it; jobs whose specs differ in more than the seed never share a point; legends
name the prior. Each writes PNG, PDF and the CSV of exactly what it plotted (with the job ids) and
returns a Figure with its provenance; a figure without data returns None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from harness import stats  # noqa: E402
from harness.db import queries  # noqa: E402
from harness.numerics import NUMERICS_VERSION  # noqa: E402


@dataclass(frozen=True)
class Figure:
    name: str
    paths: list[Path]
    jobs: int
    note: str = ""  # one line on what it shows
    sweep: str = ""
    numerics: str = ""  # the numerics versions of its jobs
    commits: str = ""  # short hashes of the code that trained its jobs


@dataclass(frozen=True)
class Selection:
    """Which jobs a figure may use: one sweep, one numerics version (None: every version, drawn apart)."""

    sweep: str
    numerics: int | None = NUMERICS_VERSION


# -- shared pieces ----------------------------------------------------------------------------------


def _without(spec: str, *keys: str) -> str:
    data = json.loads(spec)
    for key in keys:
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def with_settings(runs: pl.DataFrame) -> pl.DataFrame:
    """Add `setting` (the spec up to the seed, plus the numerics version: what one point may pool),
    `line` (the setting up to alpha: what one line of an alpha sweep may join), `family` (the setting up
    to alpha, beta and the prior: what a claim may compare) and a prior label."""
    return runs.with_columns(
        pl.struct("spec", "numerics").map_elements(lambda r: f"{r['numerics']}|{_without(r['spec'], 'seed')}",
                                                   return_dtype=pl.String).alias("setting"),
        pl.struct("spec", "numerics").map_elements(
            lambda r: f"{r['numerics']}|{_without(r['spec'], 'seed', 'alpha')}", return_dtype=pl.String).alias("line"),
        pl.struct("spec", "numerics").map_elements(
            lambda r: f"{r['numerics']}|{_without(r['spec'], 'seed', 'alpha', 'beta', 'prior')}",
            return_dtype=pl.String).alias("family"),
        pl.struct("prior", "gamma", "df", "learn").map_elements(_prior_label, return_dtype=pl.String).alias(
            "prior_label"))


def _prior_label(row: dict) -> str:
    """The prior in words: 'Gaussian', 'sparse, gamma 0.8', 'anisotropic (learnt)', 'Student-t, df 9'."""
    name = row["prior"]
    if name == "sparse":
        return "Gaussian (sparse, gamma 0)" if not row["gamma"] else f"sparse, gamma {row['gamma']:g}"
    if name == "normal":
        return "Gaussian"
    if name == "anisotropic":
        return f"anisotropic ({'learnt' if row['learn'] else 'fixed'})"
    if name == "student_t":
        return f"Student-t, df {row['df']:g}"
    return {"mixture": "mixture of 4 Gaussians"}.get(name, name)


def summarise(runs: pl.DataFrame, value: str) -> pl.DataFrame:
    """One row per setting: mean, min, max and n of `value` over its seeds, the mean's 95% t interval
    (`value`_low, `value`_high and how it was computed, `interval`; null where n = 1: one seed gives no noise
    estimate), the job ids and seeds."""
    keep = ["setting", "line", "numerics", "prior_label", "alpha", "beta", "gamma", "df", "prior", "learn"]
    table = (runs.filter(pl.col(value).is_not_null())
             .group_by(keep)
             .agg(pl.col(value).mean().alias(f"{value}_mean"), pl.col(value).min().alias(f"{value}_min"),
                  pl.col(value).max().alias(f"{value}_max"), pl.len().alias("n"),
                  pl.col(value).alias("_values"),
                  pl.col("seed").sort().cast(pl.String).str.join(",").alias("seeds"),
                  pl.col("job_id").sort().str.join(";").alias("job_ids"))
             .sort(["numerics", "prior_label", "beta", "alpha"]))
    intervals = [stats.mean_interval(values) for values in table["_values"].to_list()]
    return table.drop("_values").with_columns(
        pl.Series(f"{value}_low", [i.low for i in intervals], dtype=pl.Float64),
        pl.Series(f"{value}_high", [i.high for i in intervals], dtype=pl.Float64),
        pl.Series("interval", [f"{stats.LEVEL:.0%} t" if i.n > 1 else "none (n = 1)" for i in intervals],
                  dtype=pl.String))


def _half_widths(frame: pl.DataFrame, value: str) -> list[list[float]]:
    """Error bar lengths [below, above] of each row's interval (0 where n = 1: drawn without one)."""
    low = frame[f"{value}_low"].fill_null(frame[f"{value}_mean"]).to_list()
    high = frame[f"{value}_high"].fill_null(frame[f"{value}_mean"]).to_list()
    mean = frame[f"{value}_mean"].to_list()
    return [[m - lo for m, lo in zip(mean, low, strict=True)], [hi - m for m, hi in zip(mean, high, strict=True)]]


def _n_label(n: int) -> str:
    return "n=1, no interval" if n == 1 else f"n={n}"


def _provenance(runs: pl.DataFrame) -> tuple[str, str]:
    versions = ", ".join(str(v) for v in sorted(runs["numerics"].unique().to_list()))
    commits = ", ".join(sorted({(c or "unknown")[:7] for c in runs["git_commit"].to_list()}))
    return versions, commits


def _save(fig, frame: pl.DataFrame, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    frame.write_csv(paths[2])
    return paths


def _figure(name: str, fig, frame: pl.DataFrame, runs: pl.DataFrame, out: Path, sel: Selection,
            note: str) -> Figure:
    versions, commits = _provenance(runs)
    return Figure(name, _save(fig, frame, out, f"{name}-{sel.sweep}"), runs.height, note, sel.sweep, versions,
                  commits)


def _runs(store: Path, sel: Selection) -> pl.DataFrame:
    runs = queries.finished_runs(store, sel.sweep, sel.numerics)
    return runs if runs.is_empty() else with_settings(runs)


def _version_suffix(numerics, versions) -> str:
    return f", numerics {numerics}" if len(versions) > 1 else ""


# -- sparsity (Fashion-MNIST, Rotated-MNIST) --------------------------------------------------------


def sparsity_vs_alpha(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Normalised Hoyer sparsity against alpha: one line per setting up to alpha (prior, beta, ...), the
    mean over seeds with its 95% t interval, n beside each point (the paper's figure 4, left)."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    runs = runs.filter(pl.col("prior") == "sparse")
    if runs.is_empty() or runs["hoyer"].is_null().all():
        return None
    summary = summarise(runs, "hoyer")
    versions = summary["numerics"].unique().to_list()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lines = summary.group_by(["line"], maintain_order=True)
    labels_seen: dict[str, int] = {}
    for (_,), line in lines:
        line = line.sort("alpha")
        first = line.row(0, named=True)
        label = f"{first['prior_label']}, beta {first['beta']:g}{_version_suffix(first['numerics'], versions)}"
        labels_seen[label] = labels_seen.get(label, 0) + 1
        if labels_seen[label] > 1:  # same prior and beta but another difference in the spec
            label += f" (variant {labels_seen[label]})"
        style = "-" if first["gamma"] else "--"
        handle = ax.errorbar(line["alpha"], line["hoyer_mean"], yerr=_half_widths(line, "hoyer"), fmt=style,
                             marker="o", capsize=3, label=label).lines[0]
        for row in line.iter_rows(named=True):
            ax.annotate(_n_label(row["n"]), (row["alpha"], row["hoyer_mean"]), textcoords="offset points",
                        xytext=(3, 4), fontsize=6, color=handle.get_color())
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("alpha")
    ax.set_ylabel("normalised Hoyer sparsity (test set)")
    ax.set_title(f"Sparsity against alpha, sweep {sel.sweep} (mean over n seeds, 95% t interval)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _figure("sparsity_vs_alpha", fig, summary.drop("setting", "line"), runs, out, sel,
                   "Hoyer sparsity of the test codes against alpha, per prior and beta: mean over seeds with its 95% "
                   "t interval (none where n = 1).")


MAGNITUDE_CLASSES = {"fashion_mnist": ("Trouser", "Dress", "Shirt"), "mnist": ("0", "1", "2"),
                     "rotated_mnist": ("0", "1", "2")}
# (alpha, beta, gamma) panels: the report's three Rotated-MNIST settings
REPORT_SETTINGS = ((0.0, 1.0, 0.0), (1000.0, 1.0, 0.8), (100.0, 10.0, 0.8))


def _magnitude_panels(runs: pl.DataFrame) -> list[dict]:
    """The jobs whose class magnitudes are drawn, lowest seed each. Rotated-MNIST: the report's three
    settings. Otherwise: the paper's (alpha 1000, beta 1, gamma 0.8) or else the sparse run with the
    largest alpha, next to the same setting at alpha 0, so the sparsity can be seen."""
    runs = runs.sort(["numerics", "seed"], descending=[True, False])
    if runs["dataset"][0] == "rotated_mnist":
        chosen = [runs.filter((pl.col("alpha") == a) & (pl.col("beta") == b) & (pl.col("gamma") == g)).head(1)
                  for a, b, g in REPORT_SETTINGS]
        return [frame.row(0, named=True) for frame in chosen if not frame.is_empty()]
    sparse = runs.filter(pl.col("gamma") > 0)
    if sparse.is_empty():
        return []
    paper = sparse.filter((pl.col("alpha") == 1000) & (pl.col("beta") == 1) & (pl.col("gamma") == 0.8))
    pick = (paper if not paper.is_empty() else sparse.sort("alpha", descending=True)).row(0, named=True)
    baseline = runs.filter((pl.col("line") == pick["line"]) & (pl.col("alpha") == 0) & (pl.col("seed") == pick["seed"]))
    return ([baseline.row(0, named=True)] if not baseline.is_empty() and pick["alpha"] != 0 else []) + [pick]


def class_magnitudes(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Per-dimension mean |posterior mean| for three classes, as grouped bars, one panel per chosen job
    (the paper's figure 4, right; the report's digits 0, 1, 2)."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    runs = runs.filter((pl.col("prior") == "sparse") & pl.col("dataset").is_in(list(MAGNITUDE_CLASSES)))
    if runs.is_empty():
        return None
    panels = _magnitude_panels(runs)
    classes = MAGNITUDE_CLASSES[runs["dataset"][0]]
    stats = queries.dim_stats(store, [p["job_id"] for p in panels], "class_magnitudes", "mean_abs_loc")
    stats = stats.filter(pl.col("key").is_in(classes))
    if stats.is_empty():
        return None
    dims = stats["dim"].max() + 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, dims * 0.16), 2.4 * len(panels)), squeeze=False,
                             sharey=True)
    width = 0.8 / len(classes)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        for i, name in enumerate(classes):
            rows = stats.filter((pl.col("job_id") == panel["job_id"]) & (pl.col("key") == name)).sort("dim")
            ax.bar([d + (i - 1) * width for d in rows["dim"]], rows["value"], width, label=name)
        ax.set_title(f"{panel['prior_label']}, alpha {panel['alpha']:g}, beta {panel['beta']:g} "
                     f"(seed {panel['seed']}, job {panel['job_id']})", fontsize=8)
        ax.set_ylabel("mean |posterior mean|", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("latent dimension")
    frame = stats.join(pl.DataFrame(panels).select("job_id", "alpha", "beta", "gamma", "seed"), on="job_id")
    used = runs.filter(pl.col("job_id").is_in(frame["job_id"].unique().to_list()))
    return _figure("class_magnitudes", fig, frame, used, out, sel,
                   "Mean |posterior mean| per latent dimension for three classes, per chosen job.")


# -- clustering (pinwheel) ---------------------------------------------------------------------------


def clustering_density(store: Path, out: Path, sel: Selection) -> Figure | None:
    """The aggregate posterior's density on a grid, beta as rows and alpha as columns, lowest seed of each
    setting (the paper's figure 3)."""
    runs = _runs(store, sel)
    if runs.is_empty() or "latent_dim" not in runs.columns:
        return None
    runs = runs.filter(pl.col("latent_dim") == 2).sort(["numerics", "seed"], descending=[True, False])
    if runs.is_empty():
        return None
    chosen = runs.group_by(["alpha", "beta"]).first()
    grid = queries.points(store, chosen["job_id"].to_list(), "aggregate_posterior")
    if grid.is_empty():
        return None
    chosen = chosen.filter(pl.col("job_id").is_in(grid["job_id"].unique().to_list()))
    alphas, betas = sorted(chosen["alpha"].unique()), sorted(chosen["beta"].unique())
    fig, axes = plt.subplots(len(betas), len(alphas), figsize=(1.9 * len(alphas), 1.9 * len(betas)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    size = int(round(grid.filter(pl.col("job_id") == grid["job_id"][0]).height ** 0.5))
    for row in chosen.iter_rows(named=True):
        ax = axes[betas.index(row["beta"]), alphas.index(row["alpha"])]
        cells = grid.filter(pl.col("job_id") == row["job_id"]).sort("idx")
        extent = (cells["x"].min(), cells["x"].max(), cells["y"].min(), cells["y"].max())
        ax.imshow(cells["value"].to_numpy().reshape(size, size), origin="lower", extent=extent, cmap="viridis")
    for j, alpha in enumerate(alphas):
        axes[0, j].set_title(f"alpha {alpha:g}", fontsize=8)
    for i, beta in enumerate(betas):
        axes[i, 0].set_ylabel(f"beta {beta:g}", fontsize=8)
    fig.suptitle(f"Aggregate posterior q(z), sweep {sel.sweep} (lowest seed of each setting)", fontsize=9)
    frame = grid.join(chosen.select("job_id", "alpha", "beta", "seed"), on="job_id")
    return _figure("clustering_density", fig, frame, chosen, out, sel,
                   "Density of the aggregate posterior of the test points; rows beta, columns alpha.")


# -- independence (dSprites / shapes2d) ------------------------------------------------------------


def disentanglement_vs_reconstruction(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Kim & Mnih disentanglement against reconstruction error, one colour per prior, beta beside each
    point, mean over n seeds with 95% t intervals on both axes (the paper's figure 5)."""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["kim_mnih"].is_null().all():
        return None
    runs = runs.filter(pl.col("kim_mnih").is_not_null())
    recon = summarise(runs, "recon_mse").select("setting", "recon_mse_mean", "recon_mse_min", "recon_mse_max",
                                                "recon_mse_low", "recon_mse_high")
    summary = summarise(runs, "kim_mnih").join(recon, on="setting")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (label,), group in summary.group_by(["prior_label"], maintain_order=True):
        group = group.sort("beta")
        handle = ax.errorbar(group["recon_mse_mean"], group["kim_mnih_mean"], xerr=_half_widths(group, "recon_mse"),
                             yerr=_half_widths(group, "kim_mnih"), fmt="o-", capsize=2, label=label).lines[0]
        for row in group.iter_rows(named=True):
            ax.annotate(f"beta {row['beta']:g} ({_n_label(row['n'])})", (row["recon_mse_mean"], row["kim_mnih_mean"]),
                        textcoords="offset points", xytext=(3, 3), fontsize=6, color=handle.get_color())
    ax.set_xlabel("reconstruction error (MSE per pixel, test set)")
    ax.set_ylabel("Kim & Mnih disentanglement (reference protocol)")
    ax.set_title(f"Disentanglement against reconstruction, sweep {sel.sweep}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _figure("disentanglement_vs_reconstruction", fig, summary.drop("setting", "line"), runs, out, sel,
                   "Kim & Mnih score against reconstruction error per prior; each point one beta, mean over seeds "
                   "with 95% t intervals (none where n = 1).")


# -- Rotated-MNIST -----------------------------------------------------------------------------------


def _report_jobs(runs: pl.DataFrame) -> list[dict]:
    runs = runs.sort(["numerics", "seed"], descending=[True, False])
    found = [runs.filter((pl.col("alpha") == a) & (pl.col("beta") == b) & (pl.col("gamma") == g)).head(1)
             for a, b, g in REPORT_SETTINGS]
    return [frame.row(0, named=True) for frame in found if not frame.is_empty()]


def tsne(store: Path, out: Path, sel: Selection) -> Figure | None:
    """t-SNE of the test codes coloured by class and, where there is a second factor (the angle), by it:
    one row per job that has one (`harness eval --metric tsne`), the report's settings first."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    embedded = queries.points(store, runs["job_id"].to_list(), "tsne")
    if embedded.is_empty():
        return None
    with_tsne = runs.filter(pl.col("job_id").is_in(embedded["job_id"].unique().to_list()))
    preferred = [r for r in _report_jobs(with_tsne)]
    rows = preferred or with_tsne.sort("job_id").head(3).to_dicts()
    has_factor = embedded["factor"].is_not_null().any()
    fig, axes = plt.subplots(len(rows), 2 if has_factor else 1, figsize=(8 if has_factor else 4, 3.6 * len(rows)),
                             squeeze=False)
    for i, row in enumerate(rows):
        pts = embedded.filter(pl.col("job_id") == row["job_id"])
        ax = axes[i, 0]
        scatter = ax.scatter(pts["x"], pts["y"], c=pts["label"], cmap="tab10", s=3)
        ax.legend(*scatter.legend_elements(), fontsize=5, title="class", title_fontsize=6, loc="best")
        ax.set_title(f"{row['prior_label']}, alpha {row['alpha']:g}, beta {row['beta']:g}: by class", fontsize=7)
        if has_factor:
            ax = axes[i, 1]
            scatter = ax.scatter(pts["x"], pts["y"], c=pts["factor"], cmap="viridis", s=3)
            ax.legend(*scatter.legend_elements(), fontsize=5, title="angle index", title_fontsize=6, loc="best")
            ax.set_title("by angle", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    used = with_tsne.filter(pl.col("job_id").is_in([r["job_id"] for r in rows]))
    return _figure("tsne", fig, embedded.filter(pl.col("job_id").is_in(used["job_id"].to_list())), used, out, sel,
                   "t-SNE of the test codes, coloured by class and by rotation angle.")


def angle_information(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Per-dimension normalised mutual information with the rotation angle (and |correlation|), for the
    report's settings: does a particular dimension carry the angle?"""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["dataset"][0] != "rotated_mnist":
        return None
    rows = _report_jobs(runs) or runs.sort("job_id").head(3).to_dicts()
    ids = [r["job_id"] for r in rows]
    info = queries.dim_stats(store, ids, "factor_info", "normalised_mi").filter(pl.col("key") == "angle")
    if info.is_empty():
        return None
    corr = queries.dim_stats(store, ids, "factor_info", "abs_corr").filter(pl.col("key") == "angle")
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 2.2 * len(rows)), squeeze=False, sharey=True)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        nmi = info.filter(pl.col("job_id") == row["job_id"]).sort("dim")
        cor = corr.filter(pl.col("job_id") == row["job_id"]).sort("dim")
        ax.bar(nmi["dim"] - 0.2, nmi["value"], 0.4, label="normalised MI")
        ax.bar(cor["dim"] + 0.2, cor["value"], 0.4, label="|correlation|")
        ax.set_title(f"{row['prior_label']}, alpha {row['alpha']:g}, beta {row['beta']:g} (job {row['job_id']})",
                     fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("latent dimension")
    frame = pl.concat([info.with_columns(pl.lit("normalised_mi").alias("stat")),
                       corr.with_columns(pl.lit("abs_corr").alias("stat"))])
    return _figure("angle_information", fig, frame, runs.filter(pl.col("job_id").is_in(ids)), out, sel,
                   "How much each latent dimension says about the rotation angle.")


def iwae(store: Path, out: Path, sel: Selection) -> Figure | None:
    """The IWAE estimate of log p(x) next to the ELBO, per setting (mean over seeds with its 95% t
    interval), where iwae_k was set."""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["iwae"].is_null().all():
        return None
    runs = runs.filter(pl.col("iwae").is_not_null())
    summary = summarise(runs, "iwae").join(summarise(runs, "elbo").select("setting", "elbo_mean", "elbo_low",
                                                                          "elbo_high"), on="setting")
    labels = [f"{r['prior_label']}, a {r['alpha']:g}, b {r['beta']:g} ({_n_label(r['n'])})"
              for r in summary.iter_rows(named=True)]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(labels) + 1.5))
    positions = list(range(len(labels)))
    ax.barh([p - 0.2 for p in positions], summary["elbo_mean"], 0.4, xerr=_half_widths(summary, "elbo"), capsize=2,
            label="ELBO")
    ax.barh([p + 0.2 for p in positions], summary["iwae_mean"], 0.4, xerr=_half_widths(summary, "iwae"), capsize=2,
            label="IWAE log p(x)")
    ax.set_yticks(positions, labels, fontsize=6)
    ax.set_xlabel("nats per test datapoint")
    ax.legend(fontsize=7)
    return _figure("iwae", fig, summary.drop("setting", "line"), runs, out, sel,
                   "IWAE estimate of log p(x) next to the ELBO, per setting: mean over seeds with its 95% t interval "
                   "(none where n = 1).")


def timings(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Seconds per model-epoch and samples per second of the sweep's jobs, by device, pack size and commit
    (median over each job's epochs, then median and n over the jobs of a group), so that a slowdown in
    real use shows."""
    per_job = queries.epoch_timings(store, sel.sweep)
    if per_job.is_empty():
        return None
    groups = (per_job.group_by(["device", "pack_size", "git_commit"])
              .agg(pl.col("seconds_per_model_epoch").median(), pl.col("samples_per_second").median(),
                   pl.len().alias("n"), pl.col("job_id").sort().str.join(";").alias("job_ids"))
              .sort(["device", "pack_size", "git_commit"]))
    labels = [f"{r['device']}, pack {r['pack_size']}, {r['git_commit'] or '?'} (n={r['n']})"
              for r in groups.iter_rows(named=True)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.4 * len(labels) + 1.6), sharey=True)
    positions = list(range(len(labels)))
    axes[0].barh(positions, groups["seconds_per_model_epoch"])
    axes[0].set_xlabel("seconds per model-epoch (median)")
    axes[0].set_yticks(positions, labels, fontsize=7)
    axes[1].barh(positions, groups["samples_per_second"], color="tab:orange")
    axes[1].set_xlabel("samples per second (median)")
    fig.suptitle(f"Training speed, sweep {sel.sweep}", fontsize=9)
    timed = queries.finished_runs(store, sel.sweep, None).filter(pl.col("job_id").is_in(per_job["job_id"].to_list()))
    return _figure("timings", fig, groups, timed, out, sel,
                   "Seconds per model-epoch and samples per second by device, pack size and commit.")


FIGURES: dict[str, Callable[[Path, Path, Selection], Figure | None]] = {
    "sparsity_vs_alpha": sparsity_vs_alpha,
    "class_magnitudes": class_magnitudes,
    "clustering_density": clustering_density,
    "disentanglement_vs_reconstruction": disentanglement_vs_reconstruction,
    "tsne": tsne,
    "angle_information": angle_information,
    "iwae": iwae,
    "timings": timings,
}


def build_all(store: Path, out: Path, only: list[str] | None = None, numerics: int | None = NUMERICS_VERSION,
              sweeps: list[str] | None = None) -> dict[tuple[str, str], Figure | None]:
    """Every figure (or those in `only`) for each sweep (default: every sweep in the store, each apart),
    from the jobs of numerics version `numerics` (None: all). Keys: (figure, sweep)."""
    built = {}
    for sweep in sweeps if sweeps is not None else queries.sweeps(store):
        for name, fn in FIGURES.items():
            if not only or name in only:
                built[(name, sweep)] = fn(store, out, Selection(sweep, numerics))
    return built
