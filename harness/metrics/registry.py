"""The metric registry: every metric that reads a model's codes, under the name users type.

A metric is one function with one signature: it takes one job's encoder outputs over a dataset split
with what the dataset knows about each example (`Encodings`) and a generator for any randomness, and
returns named values plus optional per-dimension rows (`MetricOutput`). Training ends by running every
metric that applies to the job's data; `harness eval` runs any of them later on stored checkpoints.
Each metric has a version, stored with its values: bump it when the metric's definition changes.

Metrics that need the decoder (the test ELBO and its terms, IWAE) are computed in train.evaluate, where
the model is at hand; they are tied to the numerics version like the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store builds the `runs` view from this registry without importing torch
    import torch


@dataclass(frozen=True)
class Encodings:
    """One job's encoder outputs over one split, with what the dataset knows about each example."""

    split: str
    loc: torch.Tensor  # (N, L) posterior means (model in eval mode)
    labels: torch.Tensor  # (N,) class indices
    class_names: tuple[str, ...]
    factors: torch.Tensor | None = None  # (N, F) factor value indices, where the dataset has factors
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DimRow:
    """One per-dimension number: `stat` of latent dimension `dim` about `key` (a factor or class name)."""

    stat: str
    dim: int
    key: str
    key_index: int  # the factor's or class's index
    value: float


@dataclass(frozen=True)
class MetricOutput:
    values: dict[str, float]
    rows: list[DimRow] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    name: str
    version: int
    help: str
    compute: Callable[[Encodings, torch.Generator], MetricOutput]
    applies: Callable[[Encodings], bool] = lambda enc: True
    columns: tuple[str, ...] = ()  # values shown as columns of the `runs` view


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


def _kim_mnih(variant: str, name: str) -> Callable[[Encodings, torch.Generator], MetricOutput]:
    def compute(enc: Encodings, gen: torch.Generator) -> MetricOutput:
        from harness.metrics.disentanglement import kim_mnih

        result = kim_mnih(enc.loc, enc.factors, enc.factor_sizes, gen, variant=variant)
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


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("hoyer", 1, "normalised and raw Hoyer sparsity of the posterior means", _hoyer,
           columns=("hoyer", "hoyer_raw")),
    Metric("class_magnitudes", 1, "mean |posterior mean| per class and dimension", _class_magnitudes),
    Metric("kim_mnih", 1, "Kim & Mnih disentanglement, the reference protocol (M 20,000, L 1,000)",
           _kim_mnih("reference", "kim_mnih"), _has_factors, columns=("kim_mnih",)),
    Metric("kim_mnih_dlib", 1, "Kim & Mnih disentanglement, disentanglement_lib's protocol (pruned dims, "
           "held-out votes)", _kim_mnih("dlib", "kim_mnih_dlib"), _has_factors, columns=("kim_mnih_dlib",)),
    Metric("mig", 1, "mutual information gap (Chen et al. 2018), 20-bin histograms", _mig, _has_factors,
           columns=("mig",)),
    Metric("factor_info", 1, "per-dimension mutual information and |correlation| with each factor",
           _factor_info, _has_factors),
)}


# Values of the test ELBO family that train.evaluate computes with the decoder, under metric name "elbo"
# (version: the numerics version); with the registry's columns they make the `runs` view.
ELBO_VALUES = ("elbo", "recon", "kl", "reg", "loss", "recon_mse", "iwae")


def runs_columns() -> tuple[str, ...]:
    """The test-split values that the `runs` view shows as columns, one row per job."""
    return ELBO_VALUES + tuple(c for m in METRICS.values() for c in m.columns)


def compute_metrics(enc: Encodings, names: list[str] | tuple[str, ...],
                    generator_for: Callable[[str], torch.Generator]) -> list[tuple[Metric, MetricOutput]]:
    """Run the named metrics that apply to `enc`, each with its own generator (generator_for(name))."""
    return [(METRICS[name], METRICS[name].compute(enc, generator_for(name)))
            for name in names if METRICS[name].applies(enc)]
