"""One function per figure, each drawn from the store alone (SQL -> polars -> matplotlib).

Every figure is built per sweep, from the jobs of one numerics version (unless asked for all), and is
honest about what it pools and joins: a point is one setting (a spec up to its seed) with the mean over
its seeds, its 95% t interval (harness.stats; none for a single seed, which the figure says) and its n;
jobs whose specs differ in more than the seed never share a point; a line joins only settings that differ
in the one variable it walks (alpha, or beta), and every point that the axes and the legend do not
identify carries a label saying what sets it apart. The look (units, colour bars, legends, label
placement, the provenance and budget line under each figure) comes from harness.report.style. Each writes
PNG, PDF and the CSV of exactly what it plotted (with the job ids) and returns a Figure with its
provenance; a figure without data returns None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from harness import stats  # noqa: E402
from harness.db import queries  # noqa: E402
from harness.numerics import NUMERICS_VERSION  # noqa: E402
from harness.report import style  # noqa: E402


@dataclass(frozen=True)
class Figure:
    name: str
    paths: list[Path]
    jobs: int
    note: str = ""  # one line on what it shows
    sweep: str = ""
    numerics: str = ""  # the numerics versions of its jobs
    commits: str = ""  # short hashes of the code that trained its jobs
    budget: str = ""  # epochs and training examples against the full run's (style.budget)


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
    `line` (the setting up to alpha: what one line of an alpha sweep may join), `beta_line` (the setting
    up to beta: what a line through betas may join), `family` (the setting up to alpha, beta and the prior:
    what a claim may compare) and a prior label."""
    def key(*dropped: str):
        return pl.struct("spec", "numerics").map_elements(
            lambda r: f"{r['numerics']}|{_without(r['spec'], *dropped)}", return_dtype=pl.String)

    return runs.with_columns(
        key("seed").alias("setting"), key("seed", "alpha").alias("line"), key("seed", "beta").alias("beta_line"),
        key("seed", "alpha", "beta", "prior").alias("family"),
        pl.struct("prior", "gamma", "df", "learn").map_elements(_prior_label, return_dtype=pl.String).alias(
            "prior_label"))


def _prior_label(row: dict) -> str:
    """The prior in words: 'Gaussian', 'spike-and-slab, gamma 0.8' (the sparse prior; with gamma 0 it is
    the Gaussian, 'Gaussian (gamma 0)'), 'anisotropic (learnt)', 'Student-t, df 9'."""
    name = row["prior"]
    if name == "sparse":
        return "Gaussian (gamma 0)" if not row["gamma"] else f"spike-and-slab, gamma {row['gamma']:g}"
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
    keep = ["setting", "line", "beta_line", "numerics", "prior_label", "alpha", "beta", "gamma", "df", "prior",
            "learn"]
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


MARKERS = "osD^vP"  # one per line, so that lines that meet stay apart


def _ends(summary: pl.DataFrame, value: str) -> list[float]:
    """Every mean and interval end of `value` in a summary: what its axis must show."""
    return [v for column in ("mean", "low", "high") for v in summary[f"{value}_{column}"].to_list() if v is not None]


def _n_label(n: int) -> str:
    return "n=1, no interval" if n == 1 else f"n={n}"


# spec keys in the words a label uses; a key not here is shown as its last part ("dataset.subset" -> "subset")
_KEY_WORDS = {"prior.gamma": "gamma", "prior.df": "df", "prior.learn": "learnt", "numerics": "numerics"}
_FIRST = ("prior", "alpha", "beta")  # the order of a label's parts; the rest follow alphabetically


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def setting_parts(rows: list[dict], leave_out: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """For each row (with `setting` and `prior_label`), the values that set its setting apart from the
    others', by name in words: {'alpha': '100', 'beta': '10'}, {'prior': 'spike-and-slab, gamma 0.8'},
    {'epochs': '1'}; the prior's options are said by its label. Keys in `leave_out` (what the axes or the
    legend already say) are left out."""
    specs = []
    for row in rows:
        numerics, spec = row["setting"].split("|", 1)
        specs.append({**_flat(json.loads(spec)), "numerics": numerics})
    varying = [k for k in sorted(set().union(*specs)) if len({s.get(k) for s in specs}) > 1] if specs else []
    found = []
    for row, spec in zip(rows, specs, strict=True):
        parts = {}
        for key in varying:
            top = key.split(".")[0]
            if top in leave_out or key in leave_out:
                continue
            if top == "prior":
                parts["prior"] = row["prior_label"]
                continue
            value = json.loads(spec[key]) if key in spec else None
            parts[_KEY_WORDS.get(key, key.split(".")[-1])] = f"{value:g}" if isinstance(value, float) else str(value)
        first = {k: parts.pop(k) for k in _FIRST if k in parts}
        found.append({**first, **dict(sorted(parts.items()))})
    return found


def distinguish(rows: list[dict], leave_out: tuple[str, ...] = ()) -> list[str]:
    """setting_parts in one line per row: 'alpha 100, beta 10', 'spike-and-slab, gamma 0.8, beta 4', ''
    where nothing is left."""
    return [in_words(parts) for parts in setting_parts(rows, leave_out)]


def in_words(parts: dict[str, str]) -> str:
    """{'prior': 'Gaussian (gamma 0)', 'alpha': '100'} -> 'Gaussian (gamma 0), alpha 100'."""
    return ", ".join(v if k == "prior" else f"{k} {v}" for k, v in parts.items())


def _colours(labels: list[str]) -> dict[str, str]:
    """One colour of the categorical map per label, in order of first appearance."""
    unique = list(dict.fromkeys(labels))
    return {label: f"C{i % 10}" for i, label in enumerate(unique)}


def _drawn(name: str, plot: style.Plot, frame: pl.DataFrame, runs: pl.DataFrame, out: Path, sel: Selection,
           note: str, n: list[int] | None = None) -> Figure:
    """Save a figure drawn in the house style, with its provenance line, and describe it."""
    versions = ", ".join(str(v) for v in sorted(runs["numerics"].unique().to_list()))
    commits = ", ".join(sorted({(c or "unknown")[:7] for c in runs["git_commit"].to_list()}))
    paths = plot.save(out, f"{name}-{sel.sweep}", frame, style.provenance(sel.sweep, runs, n))
    return Figure(name, paths, runs.height, note, sel.sweep, versions, commits, style.budget(runs))


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
    """Save a plain matplotlib figure (timings, which keeps its own look for now)."""
    versions, commits = _provenance(runs)
    return Figure(name, _save(fig, frame, out, f"{name}-{sel.sweep}"), runs.height, note, sel.sweep, versions,
                  commits)


def _runs(store: Path, sel: Selection) -> pl.DataFrame:
    runs = queries.finished_runs(store, sel.sweep, sel.numerics)
    return runs if runs.is_empty() else with_settings(runs)


# -- sparsity (Fashion-MNIST, Rotated-MNIST) --------------------------------------------------------


@style.house_style
def sparsity_vs_alpha(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Normalised Hoyer sparsity against alpha: one line per setting up to alpha (prior, beta, ...), the
    mean over seeds with its 95% t interval (the paper's figure 4, left). A line joins only settings that
    differ in alpha; the legend says what sets the lines apart; n goes in the provenance line, or beside
    each point where the points of a line differ in it."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    runs = runs.filter(pl.col("prior") == "sparse")
    if runs.is_empty() or runs["hoyer"].is_null().all():
        return None
    summary = summarise(runs, "hoyer")
    lines = [line.sort("alpha") for _, line in summary.group_by(["line"], maintain_order=True)]
    names = distinguish([line.row(0, named=True) for line in lines], leave_out=("alpha",))
    names = [name or line["prior_label"][0] for line, name in zip(lines, names, strict=True)]
    betas = sorted(summary["beta"].unique().to_list())
    at = f" at beta {betas[0]:g}" if len(betas) == 1 else ""
    plot = style.plot(1, 1, (6.0, 3.4), title=f"Sparsity against alpha{at}, sweep {sel.sweep}")
    ax = plot.axes[0, 0]
    for k, (line, name) in enumerate(zip(lines, names, strict=True)):
        first = line.row(0, named=True)
        handle = ax.errorbar(line["alpha"], line["hoyer_mean"], yerr=_half_widths(line, "hoyer"),
                             linestyle="-" if first["gamma"] else "--", marker=MARKERS[k % len(MARKERS)],
                             label=name).lines[0]
        if line["n"].n_unique() > 1:  # the points of one line pool different numbers of seeds: say each
            for row in line.iter_rows(named=True):
                plot.label(ax, row["alpha"], row["hoyer_mean"], f"n={row['n']}", handle.get_color())
    alphas = sorted(summary["alpha"].unique().to_list())
    ax.set_xscale("symlog", linthresh=max(1.0, min([a for a in alphas if a > 0], default=10.0)))
    ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
    ax.minorticks_off()
    plot.axis(ax, "x", "alpha")
    plot.axis(ax, "y", "hoyer", _ends(summary, "hoyer"))
    plot.legend(ax, title="prior (gamma: weight of the spike)")
    frame = pl.concat([line.with_columns(pl.lit(k).alias("line_id"), pl.lit(name).alias("legend"))
                       for k, (line, name) in enumerate(zip(lines, names, strict=True))])
    return _drawn("sparsity_vs_alpha", plot, frame.drop("setting", "line", "beta_line"), runs, out, sel,
                  "Hoyer sparsity of the test codes against alpha, per prior and beta: mean over seeds with its 95% "
                  "t interval (none where n = 1).", summary["n"].to_list())


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


@style.house_style
def class_magnitudes(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Per-dimension mean |posterior mean| for three classes, as grouped bars, one panel per chosen job on
    one shared scale (the paper's figure 4, right; the report's digits 0, 1, 2)."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    runs = runs.filter((pl.col("prior") == "sparse") & pl.col("dataset").is_in(list(MAGNITUDE_CLASSES)))
    if runs.is_empty():
        return None
    panels = _magnitude_panels(runs)
    classes = MAGNITUDE_CLASSES[runs["dataset"][0]]
    found = queries.dim_stats(store, [p["job_id"] for p in panels], "class_magnitudes", "mean_abs_loc")
    found = found.filter(pl.col("key").is_in(classes))
    if found.is_empty():
        return None
    panels = [p for p in panels if p["job_id"] in set(found["job_id"].to_list())]
    dims = found["dim"].max() + 1
    plot = style.plot(len(panels), 1, (max(6.0, dims * 0.14), 1.9), sharex=True, sharey=True,
                      title=f"Mean |posterior mean| per latent dimension for three classes, sweep {sel.sweep}")
    width = 0.8 / len(classes)
    for ax, panel in zip(plot.axes[:, 0], panels, strict=True):
        for i, name in enumerate(classes):
            rows = found.filter((pl.col("job_id") == panel["job_id"]) & (pl.col("key") == name)).sort("dim")
            ax.bar([d + (i - (len(classes) - 1) / 2) * width for d in rows["dim"]], rows["value"], width,
                   label=name)
        ax.set_title(f"{panel['prior_label']}, alpha {panel['alpha']:g}, beta {panel['beta']:g} "
                     f"(seed {panel['seed']}, job {panel['job_id']})", loc="left")
        plot.axis(ax, "y", "magnitude", [0.0, *found["value"].to_list()])
        ax.set_xlim(-0.6, dims - 0.4)
    plot.axis(plot.axes[-1, 0], "x", "dimension")
    plot.legend(plot.axes[0, 0], title="class")
    frame = found.join(pl.DataFrame(panels).select("job_id", "alpha", "beta", "gamma", "seed"), on="job_id")
    used = runs.filter(pl.col("job_id").is_in(frame["job_id"].unique().to_list()))
    return _drawn("class_magnitudes", plot, frame, used, out, sel,
                  "Mean |posterior mean| per latent dimension for three classes, per chosen job (one seed each), "
                  "on one scale.", [1] * len(panels))


# -- clustering (pinwheel) ---------------------------------------------------------------------------

DENSITY_RANGE = 1e4  # the density's colour scale spans this factor below the largest value of any panel


@style.house_style
def clustering_density(store: Path, out: Path, sel: Selection) -> Figure | None:
    """The aggregate posterior's density on a grid, beta as rows and alpha as columns, lowest seed of each
    setting (the paper's figure 3): every panel on the same latent axes and one logarithmic colour scale,
    with the share of q(z) that lies inside the panel."""
    runs = _runs(store, sel)
    if runs.is_empty() or "latent_dim" not in runs.columns:
        return None
    runs = runs.filter(pl.col("latent_dim") == 2).sort(["numerics", "seed"], descending=[True, False])
    if runs.is_empty():
        return None
    chosen = runs.group_by(["prior_label", "alpha", "beta"]).first()  # a row per prior and beta where several
    grid = queries.points(store, chosen["job_id"].to_list(), "aggregate_posterior")
    if grid.is_empty():
        return None
    chosen = chosen.filter(pl.col("job_id").is_in(grid["job_id"].unique().to_list()))
    alphas = sorted(chosen["alpha"].unique())
    betas = sorted(set(zip(chosen["prior_label"], chosen["beta"], strict=True)), key=lambda pb: (pb[0], pb[1]))
    several = len({prior for prior, _ in betas}) > 1
    top = float(grid["value"].max())
    norm = LogNorm(vmin=top / DENSITY_RANGE, vmax=top)
    plot = style.plot(len(betas), len(alphas), (2.0, 1.75), sharex=True, sharey=True,
                      title=f"Aggregate posterior q(z) of the test points, sweep {sel.sweep}: rows "
                            f"{'prior and ' if several else ''}beta, columns alpha")
    for ax in plot.axes.flat:
        ax.set_visible(False)
    size = int(round(grid.filter(pl.col("job_id") == grid["job_id"][0]).height ** 0.5))
    masses = {}
    image = None
    for row in chosen.iter_rows(named=True):
        ax = plot.axes[betas.index((row["prior_label"], row["beta"])), alphas.index(row["alpha"])]
        ax.set_visible(True)
        cells = grid.filter(pl.col("job_id") == row["job_id"]).sort("idx")
        x0, x1, y0, y1 = cells["x"].min(), cells["x"].max(), cells["y"].min(), cells["y"].max()
        step = (x1 - x0) / (size - 1)
        density = cells["value"].to_numpy().reshape(size, size)
        masses[row["job_id"]] = float(density.sum() * step * step)
        image = ax.imshow(np.clip(density, norm.vmin, None), origin="lower", norm=norm, cmap=style.SEQUENTIAL,
                          extent=(x0 - step / 2, x1 + step / 2, y0 - step / 2, y1 + step / 2))
        ax.grid(False)
        ax.set_aspect("equal")
        ax.text(0.03, 0.03, f"{masses[row['job_id']]:.0%} of q in view", transform=ax.transAxes, fontsize=6,
                color="white", va="bottom")
    for j, alpha in enumerate(alphas):
        plot.axes[0, j].set_title(f"alpha {alpha:g}")
        plot.axes[-1, j].set_xlabel(style.QUANTITIES["z1"].label)
    for i, (prior, beta) in enumerate(betas):
        plot.axes[i, 0].set_ylabel(f"{prior + ', ' if several else ''}beta {beta:g}\n{style.QUANTITIES['z2'].label}")
    plot.colorbar(image, plot.axes, style.QUANTITIES["density"].label)
    frame = grid.join(chosen.select("job_id", "prior_label", "alpha", "beta", "seed"), on="job_id")
    return _drawn("clustering_density", plot, frame, chosen, out, sel,
                  "Density of the aggregate posterior of the test points on shared axes and one log colour scale; "
                  f"rows {'prior and ' if several else ''}beta, columns alpha; one seed per panel.",
                  [1] * chosen.height)


# -- independence (dSprites / shapes2d) ------------------------------------------------------------


@style.house_style
def disentanglement_vs_reconstruction(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Kim & Mnih disentanglement against reconstruction error, one colour per prior, mean over n seeds with
    95% t intervals on both axes (the paper's figure 5). A line joins only settings that differ in beta
    alone; each point is labelled with what sets it apart from the others of its colour (beta, alpha)."""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["kim_mnih"].is_null().all():
        return None
    runs = runs.filter(pl.col("kim_mnih").is_not_null() & pl.col("recon_mse").is_not_null())
    if runs.is_empty():
        return None
    recon = summarise(runs, "recon_mse").select("setting", "recon_mse_mean", "recon_mse_min", "recon_mse_max",
                                                "recon_mse_low", "recon_mse_high")
    summary = summarise(runs, "kim_mnih").join(recon, on="setting").sort(["prior_label", "alpha", "beta"])
    rows = summary.to_dicts()
    tags = distinguish(rows, leave_out=("prior",))
    varied_n = summary["n"].n_unique() > 1
    colours = _colours(summary["prior_label"].to_list())
    plot = style.plot(1, 1, (5.0, 3.6), title=f"Disentanglement against reconstruction, sweep {sel.sweep}")
    ax = plot.axes[0, 0]
    line_ids: dict[str, int] = {}
    for (key,), line in summary.group_by(["beta_line"], maintain_order=True):
        if line.height > 1:  # settings that differ in beta alone
            line_ids[key] = len(line_ids)
            line = line.sort("beta")
            ax.plot(line["recon_mse_mean"], line["kim_mnih_mean"], "-", color=colours[line["prior_label"][0]],
                    lw=1.2, zorder=1)
    texts = []
    for row, tag in zip(rows, tags, strict=True):
        colour = colours[row["prior_label"]]
        one = pl.DataFrame([row])
        ax.errorbar(one["recon_mse_mean"], one["kim_mnih_mean"], xerr=_half_widths(one, "recon_mse"),
                    yerr=_half_widths(one, "kim_mnih"), fmt="o", color=colour, zorder=2)
        texts.append(", ".join(t for t in (tag, f"n={row['n']}" if varied_n else "") if t))
        if texts[-1]:
            plot.label(ax, row["recon_mse_mean"], row["kim_mnih_mean"], texts[-1], colour)
    summary = summary.with_columns(
        pl.Series("line_id", [line_ids.get(r["beta_line"]) for r in rows], dtype=pl.Int64),
        pl.Series("label", texts, dtype=pl.String))
    plot.axis(ax, "x", "recon_mse", _ends(summary, "recon_mse"))
    plot.axis(ax, "y", "kim_mnih", _ends(summary, "kim_mnih"))
    handles = [Line2D([], [], color=c, marker="o", label=label) for label, c in colours.items()]
    plot.legend(ax, title="prior", handles=handles)
    return _drawn("disentanglement_vs_reconstruction", plot, summary.drop("setting", "line", "beta_line"), runs,
                  out, sel, "Kim & Mnih score against reconstruction error per prior; lines join settings that "
                  "differ in beta alone; mean over seeds with 95% t intervals (none where n = 1).",
                  summary["n"].to_list())


# -- Rotated-MNIST -----------------------------------------------------------------------------------


def _report_jobs(runs: pl.DataFrame) -> list[dict]:
    runs = runs.sort(["numerics", "seed"], descending=[True, False])
    found = [runs.filter((pl.col("alpha") == a) & (pl.col("beta") == b) & (pl.col("gamma") == g)).head(1)
             for a, b, g in REPORT_SETTINGS]
    return [frame.row(0, named=True) for frame in found if not frame.is_empty()]


def factor_values(spec: str) -> list[str]:
    """The second factor's values in words, by index: Rotated-MNIST's angles in degrees ('45°'); [] where
    the dataset has no such factor."""
    dataset = json.loads(spec)["dataset"]
    if dataset["name"] != "rotated_mnist":
        return []
    from harness.datasets.rotated_mnist import DEFAULT_ANGLES

    return [f"{a:g}°" for a in dataset.get("angles", DEFAULT_ANGLES)]


@style.house_style
def tsne(store: Path, out: Path, sel: Selection) -> Figure | None:
    """t-SNE of the test codes coloured by class and, where there is a second factor (the angle), by its
    value in degrees on a colour bar: one row per job that has one (`harness eval --metric tsne`), the
    report's settings first."""
    runs = _runs(store, sel)
    if runs.is_empty():
        return None
    embedded = queries.points(store, runs["job_id"].to_list(), "tsne")
    if embedded.is_empty():
        return None
    with_tsne = runs.filter(pl.col("job_id").is_in(embedded["job_id"].unique().to_list()))
    rows = _report_jobs(with_tsne) or with_tsne.sort("job_id").head(3).to_dicts()
    has_factor = embedded["factor"].is_not_null().any()
    values = factor_values(rows[0]["spec"]) if has_factor else []
    if has_factor and not values:
        values = [str(v) for v in range(int(embedded["factor"].max()) + 1)]
    plot = style.plot(len(rows), 2 if has_factor else 1, (3.3, 3.0),
                      title=f"t-SNE of the test codes, sweep {sel.sweep}")
    classes = sorted(embedded["label"].unique().to_list())
    class_norm = BoundaryNorm(np.arange(11) - 0.5, 10)
    angle_norm = BoundaryNorm(np.arange(len(values) + 1) - 0.5, len(values)) if has_factor else None
    angle_map = ListedColormap(plt.get_cmap(style.SEQUENTIAL)(np.linspace(0, 1, max(len(values), 2))))
    image = None
    for i, row in enumerate(rows):
        pts = embedded.filter(pl.col("job_id") == row["job_id"])
        ax = plot.axes[i, 0]
        digits = ax.scatter(pts["x"], pts["y"], c=pts["label"], cmap=style.CATEGORICAL, norm=class_norm, s=2,
                            linewidths=0)
        ax.set_title(f"{row['prior_label']}, alpha {row['alpha']:g}, beta {row['beta']:g}: by digit")
        if has_factor:
            ax = plot.axes[i, 1]
            image = ax.scatter(pts["x"], pts["y"], c=pts["factor"], cmap=angle_map, norm=angle_norm, s=2,
                               linewidths=0)
            ax.set_title("by rotation angle")
    for ax in plot.axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_xlabel(style.QUANTITIES["tsne1"].label)
        ax.set_ylabel(style.QUANTITIES["tsne2"].label)
    cmap = plt.get_cmap(style.CATEGORICAL)
    handles = [Line2D([], [], ls="", marker="o", color=cmap(c % 10), label=str(c)) for c in classes]
    legend = plot.axes[0, 0].legend(handles=handles, title="digit", loc="upper right", bbox_to_anchor=(-0.12, 1.0),
                                    frameon=False, borderaxespad=0)
    plot.categories(digits, legend)  # every row shares the digits' norm and this legend
    if has_factor:
        plot.colorbar(image, plot.axes[:, 1], "rotation angle (degrees)", ticks=list(range(len(values))),
                      ticklabels=values)
    used = with_tsne.filter(pl.col("job_id").is_in([r["job_id"] for r in rows]))
    frame = embedded.filter(pl.col("job_id").is_in(used["job_id"].to_list()))
    if values:
        frame = frame.with_columns(pl.col("factor").map_elements(lambda k: values[k], return_dtype=pl.String)
                                   .alias("factor_value"))
    return _drawn("tsne", plot, frame, used, out, sel,
                  "t-SNE of the test codes, coloured by digit and by rotation angle (degrees); one seed per row.",
                  [1] * used.height)


@style.house_style
def angle_information(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Per-dimension normalised mutual information with the rotation angle (and |correlation|), for the
    report's settings, on one scale: does a particular dimension carry the angle?"""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["dataset"][0] != "rotated_mnist":
        return None
    rows = _report_jobs(runs) or runs.sort("job_id").head(3).to_dicts()
    ids = [r["job_id"] for r in rows]
    info = queries.dim_stats(store, ids, "factor_info", "normalised_mi").filter(pl.col("key") == "angle")
    if info.is_empty():
        return None
    rows = [r for r in rows if r["job_id"] in set(info["job_id"].to_list())]
    corr = queries.dim_stats(store, ids, "factor_info", "abs_corr").filter(pl.col("key") == "angle")
    dims = int(info["dim"].max()) + 1
    angles = factor_values(rows[0]["spec"])
    plot = style.plot(len(rows), 1, (max(6.0, dims * 0.14), 1.9), sharex=True, sharey=True,
                      title=f"How much each latent dimension says about the rotation angle"
                            f"{' (' + ', '.join(angles) + ')' if angles else ''}, sweep {sel.sweep}")
    for ax, row in zip(plot.axes[:, 0], rows, strict=True):
        nmi = info.filter(pl.col("job_id") == row["job_id"]).sort("dim")
        cor = corr.filter(pl.col("job_id") == row["job_id"]).sort("dim")
        ax.bar(nmi["dim"] - 0.2, nmi["value"], 0.4, label="normalised mutual information")
        ax.bar(cor["dim"] + 0.2, cor["value"], 0.4, label="|correlation|")
        ax.set_title(f"{row['prior_label']}, alpha {row['alpha']:g}, beta {row['beta']:g} "
                     f"(seed {row['seed']}, job {row['job_id']})", loc="left")
        plot.axis(ax, "y", "angle_dependence", [0.0, *info["value"].to_list(), *corr["value"].to_list()])
        ax.set_xlim(-0.6, dims - 0.4)
    plot.axis(plot.axes[-1, 0], "x", "dimension")
    plot.legend(plot.axes[0, 0], title="with the angle")
    frame = pl.concat([info.with_columns(pl.lit("normalised_mi").alias("stat")),
                       corr.with_columns(pl.lit("abs_corr").alias("stat"))])
    return _drawn("angle_information", plot, frame, runs.filter(pl.col("job_id").is_in(ids)), out, sel,
                  "How much each latent dimension says about the rotation angle (normalised MI and |correlation|), "
                  "per chosen job (one seed each).", [1] * len(rows))


@style.house_style
def iwae(store: Path, out: Path, sel: Selection) -> Figure | None:
    """The IWAE estimate of log p(x) next to the ELBO, per setting (mean over seeds with its 95% t
    interval), where iwae_k was set; each setting named by what sets it apart."""
    runs = _runs(store, sel)
    if runs.is_empty() or runs["iwae"].is_null().all():
        return None
    runs = runs.filter(pl.col("iwae").is_not_null())
    summary = summarise(runs, "iwae").join(summarise(runs, "elbo").select("setting", "elbo_mean", "elbo_low",
                                                                          "elbo_high"), on="setting")
    rows = summary.to_dicts()
    tags = distinguish(rows)
    labels = [f"{tag or row['prior_label']} ({_n_label(row['n'])})" for row, tag in zip(rows, tags, strict=True)]
    plot = style.plot(1, 1, (7.0, 0.3 * len(labels) + 1.4), title=f"IWAE and ELBO per setting, sweep {sel.sweep}")
    ax = plot.axes[0, 0]
    positions = list(range(len(labels)))
    ax.barh([p - 0.2 for p in positions], summary["elbo_mean"], 0.4, xerr=_half_widths(summary, "elbo"),
            label="ELBO")
    ax.barh([p + 0.2 for p in positions], summary["iwae_mean"], 0.4, xerr=_half_widths(summary, "iwae"),
            label="IWAE estimate of log p(x)")
    ax.set_yticks(positions, labels)
    plot.axis(ax, "x", "nats")
    plot.legend(ax, above=True)
    return _drawn("iwae", plot, summary.drop("setting", "line", "beta_line"), runs, out, sel,
                  "IWAE estimate of log p(x) next to the ELBO, per setting: mean over seeds with its 95% t interval "
                  "(none where n = 1).", summary["n"].to_list())


def timings(store: Path, out: Path, sel: Selection) -> Figure | None:
    """Seconds per model-epoch and samples per second of the sweep's jobs, by device, pack size, CPU workers
    and threads, and commit: the median over the jobs of a group (each job: the median of its epochs), with
    the jobs' range as whiskers and n, so that a slowdown in real use shows."""
    per_job = queries.epoch_timings(store, sel.sweep)
    if per_job.is_empty():
        return None
    keys = ["device", "pack_size", "workers", "threads", "git_commit"]
    stats = [agg for column in ("seconds_per_model_epoch", "samples_per_second")
             for agg in (pl.col(column).median(), pl.col(column).min().alias(f"{column}_low"),
                         pl.col(column).max().alias(f"{column}_high"))]
    groups = (per_job.group_by(keys)
              .agg(*stats, pl.len().alias("n"), pl.col("job_id").sort().str.join(";").alias("job_ids"))
              .sort(keys))
    labels = [f"{r['device']}, pack {r['pack_size']}"
              + (f", {r['workers']} workers x {r['threads']} threads" if r["threads"] else "")
              + f", {r['git_commit'] or '?'} (n={r['n']})" for r in groups.iter_rows(named=True)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.4 * len(labels) + 1.6), sharey=True)
    positions = list(range(len(labels)))
    for ax, column, colour, label in ((axes[0], "seconds_per_model_epoch", "tab:blue", "seconds per model-epoch"),
                                      (axes[1], "samples_per_second", "tab:orange", "samples per second")):
        middle = groups[column]
        whiskers = [(middle - groups[f"{column}_low"]).to_list(), (groups[f"{column}_high"] - middle).to_list()]
        ax.barh(positions, middle, color=colour, xerr=whiskers, capsize=3)
        ax.set_xlabel(f"{label} (median over jobs; whiskers: their range)")
    axes[0].set_yticks(positions, labels, fontsize=7)
    fig.suptitle(f"Training speed, sweep {sel.sweep}", fontsize=9)
    timed = queries.finished_runs(store, sel.sweep, None).filter(pl.col("job_id").is_in(per_job["job_id"].to_list()))
    return _figure("timings", fig, groups, timed, out, sel,
                   "Seconds per model-epoch and samples per second by device, pack size, CPU workers x threads and "
                   "commit: median over the jobs, whiskers from the fastest to the slowest job.")


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
