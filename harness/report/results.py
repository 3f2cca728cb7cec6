"""What the report page shows of each sweep besides its figures: a table of results (one row per setting,
its main metrics as means over seeds with their 95% t intervals) and the `harness report job` images of
one representative job per setting. No printing: the CLI says what was written and what was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from harness import stats
from harness.db import queries
from harness.numerics import NUMERICS_VERSION
from harness.report.figures import in_words, setting_parts, summarise, with_settings
from harness.report.html import JobImages

# The values a results table shows where the sweep has them, in this order, with their column names.
MAIN_METRICS = {"hoyer": "Hoyer sparsity", "kim_mnih": "Kim & Mnih", "mig": "MIG",
                "class_separation": "arm separation", "recon_mse": "recon. MSE", "elbo": "ELBO (nats)",
                "iwae": "IWAE (nats)"}


@dataclass(frozen=True)
class Results:
    """One row per setting of a sweep: what sets it apart (columns `settings`), n, and each main metric as
    text ('0.312 [0.281, 0.343]'; a bare mean where n = 1). `frame` holds the numbers behind it."""

    sweep: str
    settings: list[str]
    metrics: list[str]
    rows: list[list[str]]  # settings..., n, metrics...
    frame: pl.DataFrame

    @property
    def columns(self) -> list[str]:
        return [*self.settings, "n (seeds)", *(MAIN_METRICS[m] for m in self.metrics)]


def results_table(store: Path, sweep: str, numerics: int | None = NUMERICS_VERSION) -> Results | None:
    """The results table of `sweep` (None where it has no finished job)."""
    runs = queries.finished_runs(store, sweep, numerics)
    if runs.is_empty():
        return None
    runs = with_settings(runs)
    metrics = [m for m in MAIN_METRICS if m in runs.columns and runs[m].is_not_null().any()]
    keys = ["setting", "prior_label", "alpha", "beta"]
    table = runs.group_by("setting").agg(pl.col("prior_label", "alpha", "beta").first(), pl.len().alias("n"),
                                         pl.col("job_id").sort().str.join(";").alias("job_ids"))
    for metric in metrics:
        found = summarise(runs, metric).select("setting", f"{metric}_mean", f"{metric}_low", f"{metric}_high")
        table = table.join(found, on="setting", how="left")
    table = table.sort(["prior_label", "beta", "alpha", "setting"])
    parts = setting_parts(table.select(keys).to_dicts())
    settings = list(dict.fromkeys(k for p in parts for k in p)) or ["setting"]
    rows = []
    for part, row in zip(parts, table.iter_rows(named=True), strict=True):
        cells = [part.get(k, "") for k in settings] if part else ["the sweep's one setting"]
        cells.append(str(row["n"]))
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"]) for m in metrics]
        rows.append(cells)
    frame = table.with_columns(pl.Series("label", [in_words(p) for p in parts], dtype=pl.String)).drop("setting")
    return Results(sweep, settings, metrics, rows, frame)


def _cell(mean: float | None, low: float | None, high: float | None) -> str:
    if mean is None:
        return "-"
    digits = 1 if abs(mean) >= 10 else 3
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


INTERVAL_NOTE = (f"Each value is the mean over the setting's seeds with its {stats.LEVEL:.0%} t interval in "
                 "brackets; a bare value comes from one seed and has no interval.")


def representatives(store: Path, sweep: str, numerics: int | None = NUMERICS_VERSION) -> list[dict]:
    """One job per setting of `sweep`, its lowest seed, with `label` (what sets the setting apart)."""
    runs = queries.finished_runs(store, sweep, numerics)
    if runs.is_empty():
        return []
    runs = with_settings(runs).sort(["setting", "seed"])
    chosen = runs.group_by("setting", maintain_order=True).first().sort(["prior_label", "beta", "alpha", "setting"])
    rows = chosen.to_dicts()
    for row, parts in zip(rows, setting_parts(rows), strict=True):
        row["label"] = in_words(parts) or "the one setting"
    return rows


def draw_job_images(store: Path, row: dict, out: Path, data_root: str | None = None) -> JobImages:
    """Reconstructions, prior samples and (for image data) traversals of one job, drawn from its checkpoint into
    `out` by harness.report.job, unless `out` has them already (a job id fixes the model, so they are the
    same). A job without a checkpoint gets none, and says why."""
    from harness.datasets import DATASETS
    from harness.db.store import Store
    from harness.plugins import PluginError
    from harness.report.job import prior_samples, reconstructions, traversals

    job_id = row["job_id"]
    paths, skipped = [], []
    try:  # 2-D points (pinwheel) have no traversal images; a plugin dataset that cannot load draws all it can
        images = len(DATASETS[row["dataset"]].example_shape) > 1
    except (KeyError, PluginError):
        images = True
    for draw in (reconstructions, prior_samples, traversals) if images else (reconstructions, prior_samples):
        png = out / f"{job_id}_{draw.__name__}.png"
        if png.exists():
            paths.append(png)
            continue
        try:
            paths.append(draw(Store(store), job_id, out, data_root=data_root)[0])
        except ValueError as exc:
            skipped.append(f"{draw.__name__}: {exc}")
        except FileNotFoundError as exc:  # no checkpoint: the others would fail the same way
            return JobImages(job_id, row["label"], paths, row["seed"], str(exc))
    return JobImages(job_id, row["label"], paths, row["seed"], "; ".join(skipped))
