"""One style for every figure, so that a new figure gets it by using this module.

A figure function, decorated with `house_style`, asks for a `Plot` (`plot(...)`), draws on its axes, and
ends with `Plot.save(...)`:
- fonts, sizes and grids come from RC, in force while the function draws;
- axis labels come from QUANTITIES, each with its unit or its range (`Plot.axis`), and values in [0, 1]
  get the whole [0, 1] range, so that panels and figures compare at a glance;
- `Plot.colorbar` gives every colour that encodes a value its scale, shared by the panels it names;
- legends sit outside the axes (`Plot.legend`), where they cover no data;
- `Plot.label` asks for a label beside a point; `save` places them all once the layout is fixed, each
  where it overlaps no other label, no line and no marker (`collisions` checks a finished figure);
- `save` writes a provenance line under the figure: sweep, jobs, numerics, commits, the seeds behind
  each point and the training budget against the full run's (`budget`).
"""

from __future__ import annotations

import functools
import json
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "axes.formatter.useoffset": False,  # 0.01752, never "+1.75e-2" and ticks of 0.00001
    "axes.formatter.limits": (-4, 5), "lines.markersize": 5, "errorbar.capsize": 3,
}
DPI = 120
FOOTER_SIZE = 6.5
LABEL_SIZE = 6.5
LABEL_MARGIN = 0.12  # share of an automatic axis range added at each end where points carry labels
LEADER_FROM = 10  # a label farther than this (points) from its point gets a leader line
LABEL_GID = "point-label"  # the gid of every label placed by Plot.label (collisions finds them by it)
SEQUENTIAL = "viridis"  # colour for a value
CATEGORICAL = "tab10"  # colour for a category (a digit, a prior)


@dataclass(frozen=True)
class Quantity:
    """What an axis shows, with its unit or its range in the label. `bounds` are the values it can take
    (None: unbounded); an axis fitted to data (Plot.axis with values) spans at least `min_span`, or
    `min_share` of the largest |value|, so that noise between equal settings is never blown up to fill it."""

    label: str
    bounds: tuple[float | None, float | None] = (None, None)
    min_span: float = 0.0
    min_share: float = 0.0
    ticks: str = "auto"  # "auto": at most 6 round values; "integer": whole numbers only; "own": the figure's


QUANTITIES = {
    "alpha": Quantity("alpha, weight of the divergence term\n(symlog axis)", ticks="own"),
    "beta": Quantity("beta, weight of the KL term"),
    "hoyer": Quantity("normalised Hoyer sparsity of the test codes\n(0 dense, 1 one active dimension)", (0.0, 1.0),
                      min_span=0.25),
    "kim_mnih": Quantity("Kim & Mnih disentanglement\n(vote accuracy, 0-1)", (0.0, 1.0), min_span=0.25),
    "recon_mse": Quantity("reconstruction error\n(MSE per pixel, pixels in [0, 1])", (0.0, None), min_share=0.25),
    "nats": Quantity("nats per test example (higher is better)"),
    "magnitude": Quantity("mean |posterior mean|\n(latent units)", (0.0, None)),
    "dimension": Quantity("latent dimension (index)", ticks="integer"),
    "angle_dependence": Quantity("dependence on the angle\n(0 none, 1 determined)", (0.0, 1.0), min_span=0.1),
    "z1": Quantity("z_1 (latent units)"),
    "z2": Quantity("z_2 (latent units)"),
    "density": Quantity("density of q(z) per unit area of latent space (log scale)"),
    "tsne1": Quantity("t-SNE 1 (no units)"),
    "tsne2": Quantity("t-SNE 2 (no units)"),
}


def fitted(values, q: Quantity, pad: float = 0.1) -> tuple[float, float]:
    """Axis limits for `values` (finite floats) of quantity `q`: the data, widened to span at least
    q.min_span and q.min_share of the largest |value| and kept inside q.bounds, plus `pad` of that span at
    each end (above an upper bound too, so that a point on it is not cut; never below a lower bound, where
    bars start)."""
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    low, high = min(values), max(values)
    span = max(high - low, q.min_span, q.min_share * max(abs(low), abs(high)), 1e-12)
    low, high = (low + high - span) / 2, (low + high + span) / 2
    floor, ceiling = q.bounds
    if floor is not None and low < floor:
        low, high = floor, high + floor - low
    if ceiling is not None and high > ceiling:
        low, high = low - (high - ceiling), ceiling
    low, high = low - pad * span, high + pad * span
    return (low if floor is None else max(low, floor)), high


# What each dataset's full run trains on, for the budget a figure states: (epochs, training examples, whose).
FULL_BUDGET = {
    "fashion_mnist": (80, 60_000, "the paper"),
    "pinwheel": (500, 400, "the paper"),
    "shapes2d": (20, 737_280, "the paper (dSprites)"),
    "dsprites": (20, 737_280, "the paper"),
    "rotated_mnist": (80, 60_000, "sweeps/rotated_mnist.toml"),
    "mnist": (80, 60_000, "a full run"),
}


def _rc():
    return plt.rc_context(RC)


def house_style(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a figure function with RC in force, so that every artist it makes (legends, ticks, texts) has
    the house fonts and sizes."""
    @functools.wraps(draw)
    def styled(*args: P.args, **kwargs: P.kwargs) -> R:
        with _rc():
            return draw(*args, **kwargs)

    return styled


class FigureWarning(UserWarning):
    """A figure broke the house style: a label overlaps something, or a colour has no scale."""


@dataclass(frozen=True)
class PointLabel:
    ax: Axes
    x: float
    y: float
    text: str
    color: str


@dataclass
class Plot:
    """A figure being drawn: its axes (rows x cols, always 2-D) and the labels still to place."""

    fig: Figure
    axes: np.ndarray
    labels: list[PointLabel] = field(default_factory=list)
    scaled: list = field(default_factory=list)  # mappables whose colours have a colour bar or a legend

    def axis(self, ax: Axes, which: str, quantity: str, values=None) -> None:
        """Label the x or y axis with a quantity of QUANTITIES (its unit or range); with `values` (what the
        axis must show, interval ends included) fit its limits to them (`fitted`), else keep it within the
        quantity's bounds."""
        q = QUANTITIES[quantity]
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(q.label)
        if q.ticks != "own":
            (ax.xaxis if which == "x" else ax.yaxis).set_major_locator(MaxNLocator(6, integer=q.ticks == "integer"))
        setter = ax.set_xlim if which == "x" else ax.set_ylim
        if values is not None:
            setter(*fitted(values, q, pad=LABEL_MARGIN))
        elif q.bounds != (None, None):
            setter(*q.bounds)

    def label(self, ax: Axes, x: float, y: float, text: str, color: str = "0.2") -> None:
        """A label for the point (x, y) in data coordinates, placed by `save` where it overlaps nothing."""
        self.labels.append(PointLabel(ax, float(x), float(y), text, color))

    def legend(self, ax: Axes, title: str | None = None, above: bool = False, **kwargs):
        """The legend beside the axes (right), or above them, where it covers no data."""
        if above:
            return ax.legend(title=title, loc="lower left", bbox_to_anchor=(0.0, 1.02), borderaxespad=0.0,
                             frameon=False, ncols=kwargs.pop("ncols", 2), **kwargs)
        return ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                         frameon=False, **kwargs)

    def colorbar(self, mappable, axes, label: str, ticks=None, ticklabels=None):
        """One colour bar for `axes` (one or several panels that share `mappable`'s norm)."""
        bar = self.fig.colorbar(mappable, ax=axes, shrink=0.9, pad=0.02)
        bar.set_label(label)
        if ticks is not None:
            bar.set_ticks(ticks, labels=ticklabels)
        self.scaled.append(mappable)
        return bar

    def categories(self, mappable, legend) -> None:
        """Say that `mappable`'s colours are categories, which `legend` (already drawn) names."""
        if legend is None:
            raise ValueError("categories need a legend that names them")
        self.scaled.append(mappable)

    def problems(self) -> list[str]:
        """What breaks the house style: labels that overlap (collisions) and colours without a scale."""
        return collisions(self.fig) + unscaled(self.fig, self.scaled)

    def save(self, out: Path, name: str, frame: pl.DataFrame, provenance: str) -> list[Path]:
        """Fix the layout, place the labels, write the provenance line under the figure, and save PNG, PDF
        and the CSV of what it plotted."""
        with _rc():
            for ax in {item.ax for item in self.labels}:  # room for the labels where the data set the limits
                ax.margins(x=LABEL_MARGIN if ax.get_autoscalex_on() else None,
                           y=LABEL_MARGIN if ax.get_autoscaley_on() else None)
            self.fig.canvas.draw()  # runs the layout: axes keep these positions from here on
            self.fig.set_layout_engine("none")
            place_labels(self.fig, self.labels)
            problems = self.problems()
            if problems:
                warnings.warn(FigureWarning(f"{name}: " + "; ".join(problems)), stacklevel=2)
            width = self.fig.get_figwidth()
            wrapped = "\n".join(textwrap.wrap(provenance, max(40, int(width * 72 / (FOOTER_SIZE * 0.55)))))
            self.fig.text(0.0, 0.0, wrapped, fontsize=FOOTER_SIZE, color="0.35", ha="left", va="top")
            out.mkdir(parents=True, exist_ok=True)
            paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
            self.fig.savefig(paths[0], dpi=DPI, bbox_inches="tight")
            self.fig.savefig(paths[1], bbox_inches="tight")
        plt.close(self.fig)
        frame.write_csv(paths[2])
        return paths


def plot(rows: int = 1, cols: int = 1, panel: tuple[float, float] = (5.0, 3.4), title: str = "",
         **subplots) -> Plot:
    """A figure of rows x cols panels of `panel` inches each, in the house style, laid out by matplotlib's
    constrained layout (colour bars and outside legends included)."""
    with _rc():
        fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False,
                                 layout="constrained", **subplots)
        if title:
            fig.suptitle(title)
    return Plot(fig, axes)


# -- placing labels ---------------------------------------------------------------------------------

# candidate offsets from the point in points (dx, dy) with the text's alignment; tried near, then farther
_DIRECTIONS = [(1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
               (-1, -1, "right", "top"), (0, 1.4, "center", "bottom"), (0, -1.4, "center", "top"),
               (1.4, 0, "left", "center"), (-1.4, 0, "right", "center"), (0.5, 1.3, "left", "bottom"),
               (-0.5, 1.3, "right", "bottom"), (0.5, -1.3, "left", "top"), (-0.5, -1.3, "right", "top")]
_DISTANCES = (5, 10, 16, 24, 34, 46, 60, 80)


def place_labels(fig: Figure, labels: list[PointLabel]) -> None:
    """Place each label at the nearest candidate position (see _DIRECTIONS, _DISTANCES) whose text box
    overlaps no placed label, no line or marker of its axes and stays inside them; where none is free, the
    one that overlaps least. Far ones get a thin leader line. The layout must be fixed first."""
    renderer = fig.canvas.get_renderer()
    placed: dict[Axes, list[Bbox]] = {}
    for item in labels:
        ax = item.ax
        segments, markers = _obstacles(ax)
        boxes = placed.setdefault(ax, [])
        inside = ax.get_window_extent(renderer)
        best = None
        for distance in _DISTANCES:
            for dx, dy, ha, va in _DIRECTIONS:
                offset = (dx * distance, dy * distance)
                text = ax.annotate(item.text, (item.x, item.y), xytext=offset, textcoords="offset points",
                                   ha=ha, va=va, fontsize=LABEL_SIZE, color=item.color, gid=LABEL_GID,
                                   annotation_clip=False)
                box = _text_box(text, renderer).padded(1.5)
                cost = (100 * sum(box.overlaps(b) for b in boxes) + 10 * _crossings(box, segments)
                        + 10 * sum(box.overlaps(m) for m in markers)
                        + (0 if _within(box, inside) else 50) + distance / 100)
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, text, box, distance)
                else:
                    text.remove()
            if best[0] < 1:  # nothing overlapped at this distance
                break
        _, text, box, distance = best
        if distance > LEADER_FROM:
            text.remove()
            text = ax.annotate(item.text, (item.x, item.y), xytext=text.get_position(), textcoords="offset points",
                               ha=text.get_ha(), va=text.get_va(), fontsize=LABEL_SIZE, color=item.color,
                               gid=LABEL_GID, annotation_clip=False,
                               arrowprops={"arrowstyle": "-", "color": item.color, "lw": 0.5, "alpha": 0.6,
                                           "shrinkA": 0, "shrinkB": 3})
        boxes.append(box)


def _text_box(text, renderer) -> Bbox:
    """The box of a label's text alone (an annotation's own extent includes its leader line)."""
    text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def _obstacles(ax: Axes) -> tuple[list[np.ndarray], list[Bbox]]:
    """The axes' drawn line segments (display coordinates, (2, 2) each) and marker boxes."""
    segments, markers = [], []
    for line in ax.get_lines():
        if not line.get_visible():
            continue
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
        xy = xy[np.isfinite(xy).all(1)]
        if line.get_linestyle() not in ("None", "", " ", "none"):
            segments += [xy[i:i + 2] for i in range(len(xy) - 1)]
        if line.get_marker() not in (None, "None", "", " ", "none"):
            r = line.get_markersize() * ax.figure.dpi / 72 / 2
            markers += [Bbox([[x - r, y - r], [x + r, y + r]]) for x, y in xy]
    for collection in ax.collections:
        if isinstance(collection, LineCollection) and collection.get_visible():
            transform = collection.get_transform()
            segments += [transform.transform(np.asarray(s, dtype=float)) for s in collection.get_segments()
                         if len(s) >= 2]
    return segments, markers


def _within(box: Bbox, outer: Bbox) -> bool:
    return box.x0 >= outer.x0 and box.y0 >= outer.y0 and box.x1 <= outer.x1 and box.y1 <= outer.y1


def _crossings(box: Bbox, segments: list[np.ndarray]) -> int:
    return sum(_segment_hits(box, s[0], s[-1]) for s in segments)


def _segment_hits(box: Bbox, a, b) -> bool:
    """Does the segment a-b touch the box? (Liang-Barsky clipping.)"""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - box.x0), (dx, box.x1 - x0), (-dy, y0 - box.y0), (dy, box.y1 - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def collisions(fig: Figure) -> list[str]:
    """What a finished figure's point labels overlap: another label, a line or a marker of their axes.
    An empty list is a readable figure."""
    if not hasattr(fig.canvas, "get_renderer"):  # a closed figure: draw it on a fresh Agg canvas
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        texts = [t for t in ax.texts if t.get_gid() == LABEL_GID]
        boxes = [_text_box(t, renderer) for t in texts]
        segments, markers = _obstacles(ax)
        for i, (text, box) in enumerate(zip(texts, boxes, strict=True)):
            found += [f"{text.get_text()!r} overlaps {texts[j].get_text()!r}" for j in range(i + 1, len(texts))
                      if box.overlaps(boxes[j])]
            if _crossings(box, segments):
                found.append(f"{text.get_text()!r} crosses a line")
            if any(box.overlaps(m) for m in markers):
                found.append(f"{text.get_text()!r} covers a marker")
    return found


def unscaled(fig: Figure, scaled: list) -> list[str]:
    """Artists whose colours encode values (images, colour-mapped scatters) with neither a colour bar nor a
    legend: those not in `scaled` and sharing no norm with one that is."""
    norms = {id(m.norm) for m in scaled}
    found = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        for artist in [*ax.images, *ax.collections]:
            if artist.get_array() is None or isinstance(artist, LineCollection):
                continue
            if artist not in scaled and id(artist.norm) not in norms:
                found.append(f"a {type(artist).__name__} in {ax.get_title() or 'a panel'!r} has colours without a "
                             "colour bar or legend")
    return found


# -- what a figure says under it ----------------------------------------------------------------------


def budget(runs: pl.DataFrame) -> str:
    """The training budget of `runs` (epochs and training examples, from their specs) against the full
    run's (FULL_BUDGET), e.g. '8 epochs of 10,000 training examples (the paper: 80 epochs of 60,000)'."""
    from harness.datasets import planned_sizes
    from harness.schema import Options

    seen: dict[tuple[str, int, int | None], None] = {}
    for spec in runs["spec"].to_list():
        data = json.loads(spec)
        dataset = dict(data["dataset"])
        name = dataset.pop("name")
        params = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dataset.items()))
        try:
            train = planned_sizes(Options(name, params))[0]
        except (KeyError, TypeError):
            train = None
        seen[(name, int(data["epochs"]), train)] = None
    parts = []
    for name, epochs, train in seen:
        size = f"{train:,}" if train is not None else "an unknown number of"
        text = f"{epochs} epochs of {size} training examples"
        if name in FULL_BUDGET:
            full_epochs, full_train, whose = FULL_BUDGET[name]
            text += f" ({whose}: {full_epochs} epochs of {full_train:,})"
        parts.append(text)
    return "; ".join(parts)


def seeds_note(n: list[int]) -> str:
    """How many seeds each point pools, and what that means for its interval."""
    counts = sorted(set(n))
    if not counts:
        return ""
    if counts == [1]:
        return "one seed each: no intervals"
    shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{shown} seeds per point: mean and 95% t interval" + (" (n=1 points: none)" if counts[0] == 1 else "")


def provenance(sweep: str, runs: pl.DataFrame, n: list[int] | None = None) -> str:
    """The line under every figure: sweep, jobs, numerics versions, commits, seeds per point, budget."""
    versions = ", ".join(str(v) for v in sorted(runs["numerics"].unique().to_list()))
    commits = ", ".join(sorted({(c or "unknown")[:7] for c in runs["git_commit"].to_list()}))
    parts = [f"sweep {sweep}", f"{runs.height} job{'' if runs.height == 1 else 's'}", f"numerics {versions}",
             f"commit {commits}"]
    if n is not None:
        parts.append(seeds_note(n))
    parts.append("budget: " + budget(runs))
    return " · ".join(p for p in parts if p)
