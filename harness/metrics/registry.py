"""The metric registry: every metric that reads a model's codes, under the name users type.

A metric is one function with one signature: it takes one job's encoder outputs over a dataset split
with what the dataset knows about each example (`Encodings`) and a generator for any randomness, and
returns named values plus optional per-dimension rows (`MetricOutput`). Most metrics read the test split;
the Kim & Mnih scores read the dataset's whole factor grid where it has one (split "grid": all of dSprites
or its stand-in, as the reference scores them), and the test split elsewhere. Training ends by running every
metric that applies to the job's data; `harness eval` runs any of them later on stored checkpoints.
Each metric has a version, stored with its values: bump it when the metric's definition changes.

Metrics that need the decoder (the test ELBO and its terms, IWAE) are computed in train.evaluate, where
the model is at hand; they are tied to the numerics version like the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from harness.plugins import Registry

if TYPE_CHECKING:  # the store builds the `runs` view from this registry without importing torch
    import torch

    from harness.datasets.base import Dataset


@dataclass(frozen=True)
class Encodings:
    """One job's encoder outputs over one split, with what the dataset knows about each example."""

    split: str
    loc: torch.Tensor  # (N, L) posterior means (model in eval mode)
    scale: torch.Tensor  # (N, L) posterior standard deviations
    labels: torch.Tensor  # (N,) class indices
    class_names: tuple[str, ...]
    factors: torch.Tensor | None = None  # (N, F) factor value indices, where the dataset has factors
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    prior: dict = field(default_factory=dict)  # the job's prior and its options, e.g. {"name": "student_t", "df": 9}


def encodings(data: Dataset, split: str, loc: torch.Tensor, scale: torch.Tensor, prior: dict | None = None,
              factors: torch.Tensor | None = None) -> Encodings:
    """One member's posterior means over `split` (N, L) with the split's labels and factors, on the CPU
    (metrics are cheap next to training and draw from CPU generators), in the training dtype. For the
    "grid" split pass the grid's factors (labels are then the first factor: dSprites' shape)."""
    if split == "grid":
        labels = factors[:, 0]
    else:
        factors = data.test_factors if split == "test" else data.train_factors
        labels = data.test_y if split == "test" else data.train_y
    return Encodings(split, loc.detach().cpu(), scale.detach().cpu(), labels.cpu(), data.class_names,
                     None if factors is None else factors.cpu(), data.factor_names, tuple(data.factor_sizes),
                     dict(prior or {}))


def encode_grid(data: Dataset, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior means and scales (..., N, L) of the dataset's whole factor grid, with its factors (N, F):
    `encode(x)` maps images (n, C, H, W) to (loc, scale), each (..., n, L); the grid is made and encoded a
    chunk at a time and only the codes are kept (on the CPU)."""
    import torch

    locs, scales, factors = [], [], []
    for images, chunk_factors in data.grid():
        for start in range(0, len(images), batch):
            loc, scale = encode(images[start:start + batch])
            locs.append(loc.cpu())
            scales.append(scale.cpu())
        factors.append(chunk_factors)
    return torch.cat(locs, dim=-2), torch.cat(scales, dim=-2), torch.cat(factors)


@dataclass(frozen=True)
class DimRow:
    """One per-dimension number: `stat` of latent dimension `dim` about `key` (a factor or class name)."""

    stat: str
    dim: int
    key: str
    key_index: int  # the factor's or class's index
    value: float


@dataclass(frozen=True)
class Point:
    """A value at a 2-D point: a density at a grid point, or an example's place in an embedding with its
    class label and the value index of a second factor (e.g. the rotation angle)."""

    idx: int
    x: float
    y: float
    value: float | None = None
    label: int | None = None
    factor: int | None = None


@dataclass(frozen=True)
class MetricOutput:
    values: dict[str, float]
    rows: list[DimRow] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    split: str = "test"  # the encodings it was computed on (set by compute_metrics)


@dataclass(frozen=True)
class Metric:
    name: str
    version: int
    help: str
    compute: Callable[[Encodings, torch.Generator], MetricOutput]
    applies: Callable[[Encodings], bool] = lambda enc: True
    columns: tuple[str, ...] = ()  # values shown as columns of the `runs` view
    at_training: bool = True  # run when training ends; expensive ones run only through `harness eval`
    split: str = "test"  # "grid": the dataset's whole factor grid where it has one, else the test split


def _hoyer(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    from harness.metrics.hoyer import hoyer

    return MetricOutput({"hoyer": hoyer(enc.loc).item(), "hoyer_raw": hoyer(enc.loc, normalise=False).item()})


def _class_magnitudes(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    from harness.metrics.magnitudes import class_magnitudes

    table = class_magnitudes(enc.loc.unsqueeze(0), enc.labels, len(enc.class_names))[0]  # (K, L)
    rows = [DimRow("mean_abs_loc", d, enc.class_names[c], c, float(v))
            for c, row in enumerate(table.tolist()) for d, v in enumerate(row) if v == v]
    return MetricOutput({}, rows)


def _has_factors(enc: Encodings) -> bool:
    return enc.factors is not None and len(enc.factor_sizes) > 0


def _kim_mnih(variant: str, name: str, change_of_measure: bool = False
              ) -> Callable[[Encodings, torch.Generator], MetricOutput]:
    def compute(enc: Encodings, gen: torch.Generator) -> MetricOutput:
        from harness.metrics.disentanglement import kim_mnih, student_t_to_normal

        z = enc.loc
        if change_of_measure and enc.prior.get("name") == "student_t":
            z = student_t_to_normal(z, float(enc.prior["df"]))
        result = kim_mnih(z, enc.factors, enc.factor_sizes, gen, variant=variant)
        rows = [DimRow("votes", d, enc.factor_names[k], k, float(v))
                for d, row in enumerate(result.votes.tolist()) for k, v in enumerate(row) if v]
        return MetricOutput({name: result.score, f"{name}_active_dims": float(result.num_active_dims)}, rows)

    return compute


def _mig(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    from harness.metrics.disentanglement import mig

    result = mig(enc.loc, enc.factors, enc.factor_sizes)
    rows = [DimRow("mutual_info", d, enc.factor_names[k], k, float(v))
            for d, row in enumerate(result.mutual_info.tolist()) for k, v in enumerate(row)]
    return MetricOutput({"mig": result.score}, rows)


def _factor_info(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    """Per dimension and factor: normalised mutual information and |correlation|; per factor, the largest
    normalised MI of any one dimension (does a single dimension carry the factor?)."""
    from harness.metrics.factor_info import factor_information

    values, rows = {}, []
    for k, factor in enumerate(enc.factor_names):
        info = factor_information(enc.loc, enc.factors[:, k])
        values[f"info_{factor}_max_nmi"] = info.normalised_mi.max().item()
        for d in range(enc.loc.shape[1]):
            rows += [DimRow("normalised_mi", d, factor, k, info.normalised_mi[d].item()),
                     DimRow("abs_corr", d, factor, k, info.abs_corr[d].item())]
    return MetricOutput(values, rows)


def _class_separation(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    """How much of the codes' spread the classes explain: eta^2 = 1 - (within-class sum of squares) /
    (total sum of squares), over all dimensions; 1 when each class sits on its own point, 0 when the
    classes overlap completely (the clustering experiment's 'four-arm structure').

    class_separation reads the posterior means alone. posterior_separation (version 2) reads the aggregate
    posterior q(z) = mean_n q(z | x_n), whose spread adds every posterior's variance to both sums
    (E||z_n - m||^2 = ||mu_n - m||^2 + sum_d sigma_nd^2): what beta acts on, and what the paper's pictures of
    q(z) show. Means can keep the arms apart while the posteriors around them grow into one blob."""

    z = enc.loc.double()
    spread = (enc.scale.double() ** 2).sum()  # sum over n and d of sigma_nd^2
    total = ((z - z.mean(0)) ** 2).sum()
    within = sum(((z[enc.labels == c] - z[enc.labels == c].mean(0)) ** 2).sum()
                 for c in enc.labels.unique().tolist())
    return MetricOutput({"class_separation": float(1 - within / total) if total > 0 else 0.0,
                         "posterior_separation": float(1 - (within + spread) / (total + spread))
                         if total + spread > 0 else 0.0})


GRID_SIZE, GRID_RANGE = 61, 2.5  # the aggregate posterior's density on a 61 x 61 grid over [-2.5, 2.5]^2


def _aggregate_posterior(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    """Density of q(z) = mean_n N(z; loc_n, scale_n^2) on a fixed grid (2-D latents: the clustering
    figure), and its mass inside the grid (how much of q the figure shows)."""
    import torch

    axis = torch.linspace(-GRID_RANGE, GRID_RANGE, GRID_SIZE, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)  # (P, 2)
    loc, scale = enc.loc.double(), enc.scale.double()  # (N, 2)
    log_q = torch.distributions.Normal(loc[None], scale[None]).log_prob(grid[:, None]).sum(-1)  # (P, N)
    density = (torch.logsumexp(log_q, 1) - torch.log(torch.tensor(float(len(loc))))).exp()  # (P,)
    cell = (2 * GRID_RANGE / (GRID_SIZE - 1)) ** 2
    points = [Point(i, float(x), float(y), float(v)) for i, ((x, y), v) in enumerate(zip(grid.tolist(),
                                                                                        density.tolist(), strict=True))]
    return MetricOutput({"aggregate_posterior_mass": float(density.sum() * cell)}, [], points)


TSNE_SAMPLE = 2000


def _tsne(enc: Encodings, gen: torch.Generator) -> MetricOutput:
    """t-SNE (scikit-learn's, Barnes-Hut, PCA initialisation, perplexity 30) of the posterior means of at
    most TSNE_SAMPLE test examples drawn with the job's generator; each point keeps its class and, where
    the data have a second factor (Rotated-MNIST's angle), that factor's value index."""
    import torch
    from sklearn.manifold import TSNE

    n = len(enc.loc)
    chosen = torch.randperm(n, generator=gen)[:TSNE_SAMPLE].sort().values  # (n',)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    embedded = TSNE(2, perplexity=min(30.0, (len(chosen) - 1) / 3), init="pca", random_state=seed).fit_transform(
        enc.loc[chosen].double().numpy())
    second = enc.factors[chosen, -1].tolist() if enc.factors is not None and enc.factors.shape[1] > 1 else None
    points = [Point(int(i), float(x), float(y), None, int(enc.labels[i]), None if second is None else int(second[k]))
              for k, (i, (x, y)) in enumerate(zip(chosen.tolist(), embedded.tolist(), strict=True))]
    return MetricOutput({}, [], points)


METRICS = Registry("metrics", {m.name: m for m in (
    Metric("hoyer", 1, "normalised and raw Hoyer sparsity of the posterior means", _hoyer,
           columns=("hoyer", "hoyer_raw")),
    Metric("class_magnitudes", 1, "mean |posterior mean| per class and dimension", _class_magnitudes),
    # version 2: on the whole factor grid with distinct images per vote (version 1: the test split, drawn
    # with replacement, which scored about 0.02 lower on dSprites-like codes)
    Metric("kim_mnih", 2, "Kim & Mnih disentanglement, the reference protocol (M 20,000 votes of min(1,000, n) "
           "distinct images, over the whole factor grid)", _kim_mnih("reference", "kim_mnih"), _has_factors,
           columns=("kim_mnih",), split="grid"),
    Metric("kim_mnih_cm", 1, "Kim & Mnih (reference protocol) after the Student-t change of measure z' = "
           "Phi^-1(T_df(z)), the reference's headline score for Student-t priors; z' = z for other priors",
           _kim_mnih("reference", "kim_mnih_cm", change_of_measure=True), _has_factors,
           columns=("kim_mnih_cm",), split="grid"),
    # version 2: on the whole factor grid (version 1: the test split)
    Metric("kim_mnih_dlib", 2, "Kim & Mnih disentanglement, disentanglement_lib's protocol (pruned dims, "
           "held-out votes, over the whole factor grid)", _kim_mnih("dlib", "kim_mnih_dlib"), _has_factors,
           columns=("kim_mnih_dlib",), split="grid"),
    Metric("mig", 1, "mutual information gap (Chen et al. 2018), 20-bin histograms", _mig, _has_factors,
           columns=("mig",)),
    Metric("factor_info", 1, "per-dimension mutual information and |correlation| with each factor",
           _factor_info, _has_factors),
    # version 2 adds posterior_separation (class_separation is unchanged)
    Metric("class_separation", 2, "share of the codes' variance that the classes explain (eta squared), of the "
           "posterior means and of the aggregate posterior", _class_separation,
           lambda enc: len(enc.labels.unique()) > 1, columns=("class_separation", "posterior_separation")),
    Metric("aggregate_posterior", 1, f"density of the aggregate posterior on a {GRID_SIZE}x{GRID_SIZE} grid "
           "(2-D latents)", _aggregate_posterior, lambda enc: enc.loc.shape[1] == 2),
    Metric("tsne", 1, f"t-SNE of the test posterior means (scikit-learn, at most {TSNE_SAMPLE} points); only "
           "through harness eval", _tsne, lambda enc: len(enc.loc) >= 10, at_training=False),
)}, "metric", lambda entry: isinstance(entry, Metric))


# Values of the test ELBO family that train.evaluate computes with the decoder, under metric name "elbo"
# (version: the numerics version); with the registry's columns they make the `runs` view.
ELBO_VALUES = ("elbo", "recon", "kl", "reg", "loss", "recon_mse", "iwae")


def runs_columns() -> tuple[str, ...]:
    """The test-split values that the `runs` view shows as columns, one row per job (the built-in metrics';
    a plugin metric's values are rows of `metrics`, so that installing one never changes the view)."""
    return ELBO_VALUES + tuple(c for m in METRICS.builtins.values() for c in m.columns)


def training_metrics() -> list[str]:
    """The metrics that training runs when it ends: built-ins only (a plugin metric runs through `harness eval`,
    so that installing one never changes what training computes)."""
    return [name for name, metric in METRICS.builtins.items() if metric.at_training]


def needs_grid(names: list[str] | tuple[str, ...]) -> bool:
    """Whether any of the named metrics reads the whole factor grid."""
    return any(METRICS[name].split == "grid" for name in names)


def compute_metrics(encs: dict[str, Encodings], names: list[str] | tuple[str, ...],
                    generator_for: Callable[[str], torch.Generator]) -> list[tuple[Metric, MetricOutput]]:
    """Run the named metrics that apply, each on its split's encodings (encs: split -> Encodings; a "grid"
    metric reads the test split where there is no grid) and with its own generator (generator_for(name)).
    Each output says which split it read."""
    out = []
    for name in names:
        metric = METRICS[name]
        enc = encs.get(metric.split) or encs["test"]
        if metric.applies(enc):
            out.append((metric, replace(metric.compute(enc, generator_for(name)), split=enc.split)))
    return out
