"""`harness report compare BASE NEW`: did a change move the results beyond seed noise?

Each side is a selection of finished jobs (a store, an exported results file, a numerics version, a
commit, a sweep). Jobs are grouped into settings (the spec up to the seed) and settings are matched
across the sides. For each matched setting and each value (every metric, the test ELBO family and the
seconds per model-epoch) the difference NEW - BASE gets its 95% interval from harness.stats (paired by
seed where both sides have the same seeds), and it has *moved* when the interval excludes 0 and the
difference exceeds the value's tolerance. Settings found on one side only are listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from harness import stats
from harness.db import queries
from harness.numerics import NUMERICS_VERSION

ID_COLUMNS = ("job_id", "sweep", "numerics", "git_commit", "device", "seed", "spec")
SELECTOR_KEYS = ("store", "file", "numerics", "commit", "sweep")
RESULT_SUFFIXES = (".csv", ".parquet", ".json")


class CompareError(ValueError):
    """Bad input to a comparison, said in one line."""


# -- tolerances -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How large a difference must be to count as moved: `value` in the metric's units ("abs"), or as a
    fraction of the base side's mean ("rel")."""

    kind: str  # "abs" or "rel"
    value: float

    def of(self, base_mean: float) -> float:
        return self.value if self.kind == "abs" else self.value * abs(base_mean)

    def __str__(self) -> str:
        return f"{self.value:g}" if self.kind == "abs" else f"{self.value * 100:g}%"


# Scores in [0, 1] move when they change by 0.01; values in nats by 1% of the base; the logged D_hat (a
# noisy estimate) by 5%; speed by 10%, as `harness bench compare` allows. Any other value: 1%.
TOLERANCES: dict[str, Tolerance] = {
    **{name: Tolerance("abs", 0.01) for name in ("hoyer", "hoyer_raw", "kim_mnih", "kim_mnih_dlib", "mig",
                                                 "class_separation", "aggregate_posterior_mass")},
    **{name: Tolerance("rel", 0.01) for name in ("elbo", "recon", "kl", "loss", "iwae")},
    "reg": Tolerance("rel", 0.05),
    "recon_mse": Tolerance("rel", 0.02),
    "kim_mnih_active_dims": Tolerance("abs", 0.5),
    "kim_mnih_dlib_active_dims": Tolerance("abs", 0.5),
    "seconds_per_model_epoch": Tolerance("rel", 0.10),
}
DEFAULT_TOLERANCE = Tolerance("rel", 0.01)


def tolerance_for(name: str, overrides: dict[str, Tolerance] | None = None) -> Tolerance:
    overrides = overrides or {}
    if name in overrides:
        return overrides[name]
    if name.startswith("info_") and name.endswith("_max_nmi"):  # factor information, in [0, 1]
        return Tolerance("abs", 0.01)
    return TOLERANCES.get(name, DEFAULT_TOLERANCE)


def parse_tolerance(text: str) -> tuple[str, Tolerance]:
    """'hoyer=0.02' (absolute) or 'elbo=2%' (relative to the base mean) -> (name, Tolerance)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        tolerance = (Tolerance("rel", float(value[:-1]) / 100) if value.endswith("%")
                     else Tolerance("abs", float(value)))
        if not tolerance.value >= 0 or math.isnan(tolerance.value):
            raise ValueError
    except ValueError:
        raise CompareError(f"--tolerance {text!r}: expected NAME=VALUE or NAME=PERCENT%, e.g. hoyer=0.02 or "
                           "elbo=2%, with a value >= 0") from None
    return name, tolerance


# -- sides ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """One side of a comparison: where its results are and which of them to take."""

    text: str
    store: Path | None = None  # a DuckDB store
    file: Path | None = None  # or a results file written by `harness report export`
    numerics: int = NUMERICS_VERSION
    commit: str | None = None
    sweep: str | None = None

    @property
    def source(self) -> Path:
        return self.file if self.file is not None else self.store


def parse_selector(text: str, default_store: Path) -> Selector:
    """KEY=VALUE terms joined by commas (keys: store, file, numerics, commit, sweep), or a bare path to a
    store (.duckdb) or a results file (.csv, .parquet, .json). Unset: the default store, the current
    numerics version, any commit, every sweep."""
    values: dict = {}
    for term in (t.strip() for t in text.split(",")):
        key, sep, value = term.partition("=")
        if not sep:
            key, value = ("file" if Path(term).suffix in RESULT_SUFFIXES else "store"), term
            if not term or "/" not in term and "." not in term:
                raise CompareError(f"selector {text!r}: {term!r} is neither KEY=VALUE nor a path; keys: "
                                   f"{', '.join(SELECTOR_KEYS)} (e.g. numerics=2,sweep=quickstart)")
        if key not in SELECTOR_KEYS:
            raise CompareError(f"selector {text!r}: unknown key {key!r}; known: {', '.join(SELECTOR_KEYS)}")
        if key in values:
            raise CompareError(f"selector {text!r}: {key} given twice")
        if not value:
            raise CompareError(f"selector {text!r}: {key} needs a value")
        values[key] = value
    if "store" in values and "file" in values:
        raise CompareError(f"selector {text!r}: give a store or a file, not both")
    if "numerics" in values:
        try:
            values["numerics"] = int(values["numerics"])
        except ValueError:
            raise CompareError(f"selector {text!r}: numerics must be an integer version (1 to "
                               f"{NUMERICS_VERSION})") from None
        if not 1 <= values["numerics"] <= NUMERICS_VERSION:
            raise CompareError(f"selector {text!r}: numerics {values['numerics']} is not a version of this code "
                               f"(1 to {NUMERICS_VERSION})")
    for key in ("store", "file"):
        if key in values:
            values[key] = Path(values[key])
            if not values[key].is_file():
                raise CompareError(f"selector {text!r}: no {key} at {values[key]}")
    if "file" in values and values["file"].suffix not in RESULT_SUFFIXES:
        raise CompareError(f"selector {text!r}: a results file ends in {', '.join(RESULT_SUFFIXES)}")
    if "file" not in values and "store" not in values:
        if not Path(default_store).is_file():
            raise CompareError(f"selector {text!r}: no store at {default_store}; pass --store or store=PATH")
        values["store"] = Path(default_store)
    return Selector(text, **values)


def results(store: Path, sweep: str | None = None, numerics: int | None = NUMERICS_VERSION,
            commit: str | None = None) -> pl.DataFrame:
    """One row per finished job: who it is (ID_COLUMNS) and every scalar test value as a column; what
    `harness report export` writes and a `file=` side reads."""
    jobs = queries.finished_jobs(store, sweep, numerics, commit)
    if jobs.is_empty():
        return jobs
    long = queries.job_values(store, jobs["job_id"].to_list())
    if long.is_empty():
        return jobs
    wide = long.pivot(on="name", index="job_id", values="value", aggregate_function="first")
    return jobs.join(wide.select("job_id", *sorted(c for c in wide.columns if c != "job_id")), on="job_id",
                     how="left")


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """CSV, Parquet or JSON (a list of rows) by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(frame.to_dicts(), indent=1, default=str) + "\n")
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        raise CompareError(f"--out {path}: the suffix says the format: {', '.join(RESULT_SUFFIXES)}")


def read_results(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".json":
            frame = pl.DataFrame(json.loads(path.read_text()), infer_schema_length=None)
        else:
            frame = pl.read_csv(path, infer_schema_length=None, schema_overrides={"git_commit": pl.String,
                                                                                   "spec": pl.String})
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise CompareError(f"{path}: not a results file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ID_COLUMNS if c not in frame.columns]
    if missing:
        raise CompareError(f"{path}: not a results file of `harness report export` (no column {missing[0]})")
    return frame


def load_side(sel: Selector) -> pl.DataFrame:
    """The selected jobs, one row per job with their values (empty: CompareError naming the side)."""
    if sel.file is not None:
        whole = read_results(sel.file)
        frame = whole.filter(pl.col("numerics") == sel.numerics)
        if sel.commit:
            frame = frame.filter(pl.col("git_commit").fill_null("").str.starts_with(sel.commit))
        if sel.sweep:
            frame = frame.filter(pl.col("sweep") == sel.sweep)
        versions = whole["numerics"].unique().sort().to_list()
    else:
        from harness.db.store import StoreUnavailable

        try:
            frame = results(sel.store, sel.sweep, sel.numerics, sel.commit)
            versions = queries.finished_jobs(sel.store, sel.sweep, None, sel.commit)["numerics"].unique().sort()
        except StoreUnavailable as exc:
            raise CompareError(f"selector {sel.text!r}: {exc}") from None
        versions = versions.to_list()
    if frame.is_empty():
        hint = (f" (it has numerics {', '.join(str(v) for v in versions)}: add numerics=N to the selector)"
                if versions and sel.numerics not in versions else "")
        raise CompareError(f"selector {sel.text!r}: no finished job in {sel.source} at numerics {sel.numerics}"
                           + (f", commit {sel.commit}" if sel.commit else "")
                           + (f", sweep {sel.sweep}" if sel.sweep else "") + hint)
    return frame


# -- the comparison ---------------------------------------------------------------------------------


def setting_of(spec: str) -> str:
    """The setting a job belongs to: its spec without the seed, as canonical JSON."""
    data = json.loads(spec)
    data.pop("seed", None)
    return json.dumps(data, sort_keys=True)


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def setting_labels(settings: list[str]) -> dict[str, str]:
    """A short label per setting: the fields in which the settings differ ('alpha=100, prior.gamma=0.8'),
    or the dataset and architecture where there is one setting."""
    flat = {s: _flat(json.loads(s)) for s in settings}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k)) for f in flat.values()}) > 1]

    def short(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    return {s: (", ".join(f"{k}={short(f.get(k))}" for k in varying) if varying
                else f"{f.get('dataset.name', '?')}, {f.get('arch', '?')}") for s, f in flat.items()}


MOVED, WITHIN, NO_CHANGE, NO_INTERVAL = "moved", "within tolerance", "no change", "no interval (n < 2)"


@dataclass(frozen=True)
class Comparison:
    base: Selector
    new: Selector
    rows: pl.DataFrame  # one row per matched setting and value
    only_base: list[str] = field(default_factory=list)  # labels of settings found on one side only
    only_new: list[str] = field(default_factory=list)

    @property
    def moved(self) -> pl.DataFrame:
        return self.rows.filter(pl.col("status") == MOVED)


def _by_setting(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    frame = frame.with_columns(pl.col("spec").map_elements(setting_of, return_dtype=pl.String).alias("setting"))
    frame = frame.unique(["setting", "seed"], keep="first", maintain_order=True)
    return {key: group for (key,), group in frame.group_by(["setting"], maintain_order=True)}


def compare(base_sel: Selector, new_sel: Selector, base: pl.DataFrame, new: pl.DataFrame,
            tolerances: dict[str, Tolerance] | None = None, only: list[str] | None = None,
            skip: list[str] | None = None, level: float = stats.LEVEL) -> Comparison:
    """Every value of every setting on both sides: NEW - BASE with its interval, tolerance and status."""
    a, b = _by_setting(base), _by_setting(new)
    common = [s for s in a if s in b]
    if not common:
        raise CompareError(f"no setting is on both sides: {base_sel.text!r} has {len(a)}, {new_sel.text!r} has "
                           f"{len(b)}, and their specs (up to the seed) differ")
    labels = setting_labels(list(dict.fromkeys([*a, *b])))
    values = sorted((set(base.columns) & set(new.columns)) - set(ID_COLUMNS))
    unknown = [name for name in [*(only or []), *(skip or [])] if name not in values]
    if unknown:
        raise CompareError(f"--metric/--skip: no value {unknown[0]!r} on both sides; known: {', '.join(values)}")
    values = [v for v in values if (not only or v in only) and v not in (skip or [])]
    rows = []
    for setting in common:
        for name in values:
            side_a, side_b = _seeds(a[setting], name), _seeds(b[setting], name)
            if not side_a or not side_b:
                continue
            effect = stats.difference(side_a, side_b, level)
            base_mean = sum(side_a.values()) / len(side_a)
            tol = tolerance_for(name, tolerances)
            limit = tol.of(base_mean)
            if not effect.has_interval:
                status = NO_INTERVAL
            elif effect.side() == "straddles":
                status = NO_CHANGE
            else:
                status = MOVED if abs(effect.estimate) > limit else WITHIN
            rows.append({"setting": labels[setting], "metric": name, "base_mean": base_mean,
                         "new_mean": base_mean + effect.estimate, "difference": effect.estimate,
                         "low": effect.low, "high": effect.high, "n_base": effect.n[0], "n_new": effect.n[1],
                         "method": effect.method, "tolerance": str(tol), "tolerance_value": limit,
                         "status": status, "spec": setting})
    frame = pl.DataFrame(rows, schema={"setting": pl.String, "metric": pl.String, "base_mean": pl.Float64,
                                       "new_mean": pl.Float64, "difference": pl.Float64, "low": pl.Float64,
                                       "high": pl.Float64, "n_base": pl.Int64, "n_new": pl.Int64,
                                       "method": pl.String, "tolerance": pl.String, "tolerance_value": pl.Float64,
                                       "status": pl.String, "spec": pl.String})
    return Comparison(base_sel, new_sel, frame, [labels[s] for s in a if s not in b],
                      [labels[s] for s in b if s not in a])


def _seeds(group: pl.DataFrame, name: str) -> dict[int, float]:
    return {seed: value for seed, value in zip(group["seed"].to_list(), group[name].to_list(), strict=True)
            if value is not None and not (isinstance(value, float) and math.isnan(value))}


def draw(comparison: Comparison, path: Path) -> Path:
    """A forest plot: one row per setting and value, the difference and its interval in units of the
    value's tolerance (so every row shares one axis, linear inside the band [-1, 1] that is within
    tolerance and logarithmic outside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison.rows.filter(pl.col("tolerance_value") > 0)
    fig, ax = plt.subplots(figsize=(8, 0.22 * max(rows.height, 4) + 1.4))
    colours = {MOVED: "tab:red", WITHIN: "tab:orange", NO_CHANGE: "tab:blue", NO_INTERVAL: "grey"}
    labels = []
    for y, row in enumerate(rows.iter_rows(named=True)):
        scale = row["tolerance_value"]
        colour = colours[row["status"]]
        if row["low"] is not None:
            ax.plot([row["low"] / scale, row["high"] / scale], [y, y], color=colour, lw=1.5)
        ax.plot(row["difference"] / scale, y, "o", color=colour, ms=3.5)
        labels.append(f"{row['setting']} | {row['metric']} (n {row['n_base']}/{row['n_new']})")
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xscale("symlog", linthresh=1)  # linear within the tolerance, logarithmic beyond it
    ax.set_xlabel("NEW - BASE in units of the value's tolerance (grey band: within tolerance; log beyond)")
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.5, label=s) for s, c in colours.items()]
    ax.legend(handles=handles, fontsize=6, loc="lower right")
    ax.set_title(f"compare {comparison.base.text} -> {comparison.new.text}: differences with 95% intervals",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
