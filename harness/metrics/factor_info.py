"""How much each latent dimension says about one known factor (e.g. Rotated-MNIST's angle).

The disentanglement scores summarise a whole code in one number; this answers the narrower question
the Rotated-MNIST experiment asks: do particular latent dimensions carry the angle? For every dimension
it gives the mutual information with the factor (the same histogram discretisation and plug-in estimator
as MIG, so the numbers are comparable), that MI as a fraction of the factor's entropy, and |Pearson
correlation|, which sees only linear, monotone encodings but needs no binning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.metrics.disentanglement import discrete_entropy, discrete_mutual_info, histogram_discretize


@dataclass(frozen=True)
class FactorInformation:
    """Per-dimension information about one factor; every tensor is (L,) float64."""

    mutual_info: torch.Tensor  # nats, I(discretised z_d; factor)
    normalised_mi: torch.Tensor  # mutual_info / H(factor), in [0, 1]; 0 where the factor is constant
    abs_corr: torch.Tensor  # |Pearson correlation| of z_d with the factor's values; 0 where either is constant
    factor_entropy: float  # nats, H of the (discretised) factor


def factor_information(z: torch.Tensor, values: torch.Tensor, *, bins: int = 20) -> FactorInformation:
    """Information that each dimension of z (N, L) carries about one factor with values (N,).

    values may be discrete (an angle in {0, 45, ..., 180}, a class) or continuous. A factor with at most
    `bins` distinct values is used as it is; one with more is discretised into `bins` equal-width bins,
    like the latent dimensions, since a plug-in MI over nearly unique values would be meaningless.
    """
    if z.ndim != 2 or values.ndim != 1 or z.shape[0] != values.shape[0] or z.shape[0] == 0:
        raise ValueError(f"expected z (N, L) and values (N,), got {tuple(z.shape)} and {tuple(values.shape)}")
    if not (torch.isfinite(z).all() and torch.isfinite(values.to(torch.float64)).all()):
        raise ValueError("z and values must be finite")
    values = values.detach().cpu()
    distinct, labels = torch.unique(values, return_inverse=True)  # labels (N,) in [0, distinct)
    if distinct.numel() > bins:
        labels = histogram_discretize(values.to(torch.float64)[:, None], bins)[:, 0]  # (N,) in [1, bins]
    labels = labels[:, None]  # (N, 1)

    codes = histogram_discretize(z, bins)  # (N, L)
    info = discrete_mutual_info(codes, labels)[:, 0]  # (L,)
    entropy = discrete_entropy(labels)[0].item()
    normalised = info / entropy if entropy > 0 else torch.zeros_like(info)
    return FactorInformation(info, normalised, _abs_corr(z.detach().cpu().to(torch.float64), values), entropy)


def _abs_corr(z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """|Pearson correlation| of each column of z (N, L) with values (N,) -> (L,); 0 for zero spread."""
    values = values.to(torch.float64)
    zc = z - z.mean(0)  # (N, L)
    vc = values - values.mean()  # (N,)
    # Zero spread is tested on the range: a constant column's rounded mean leaves residues of 1e-17.
    spread = (z.amax(0) > z.amin(0)) & (values.amax() > values.amin())  # (L,)
    denom = torch.where(spread, zc.norm(dim=0) * vc.norm(), 1.0)  # (L,)
    corr = torch.where(spread, (zc * vc[:, None]).sum(0) / denom, 0.0)
    return corr.abs().clamp_max(1.0)
