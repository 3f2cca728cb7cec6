"""Likelihoods p(x | z): log-densities summed over an example's pixels, and the mean image.

Each takes the decoder's raw output `out` shaped (G, B, P, *example_shape), P = `params_per_pixel`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.schema import Options, Param, non_negative, positive


class Laplace:
    """Laplace with a fixed scale (the sparsity experiment uses 0.1); out = the location."""

    params_per_pixel = 1

    def __init__(self, scale: float = 0.1):
        self.scale = scale

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x (G, B, *shape), out (G, B, 1, *shape) -> (G, B)."""
        loc = out[:, :, 0]
        lp = -(x - loc).abs() / self.scale - math.log(2 * self.scale)
        return lp.flatten(2).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, :, 0]


class Bernoulli:
    """Bernoulli with logits = the decoder's output (the independence and Rotated-MNIST experiments).

    log p(x|z) = -BCE-with-logits(logits, x), which also takes targets in [0, 1]. The logits are never
    clamped (some forks of the reference clamp them at 0, which forbids probabilities below 1/2).
    """

    params_per_pixel = 1

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x (G, B, *shape), out (G, B, 1, *shape) -> (G, B)."""
        bce = F.binary_cross_entropy_with_logits(out[:, :, 0], x, reduction="none")
        return -bce.flatten(2).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out[:, :, 0])


class Normal:
    """Normal with a learnt std per pixel (the clustering experiment): P = 2 parameters per pixel,
    out[:, :, 0] the mean and out[:, :, 1] the raw std; std = softplus(raw) + min_scale.

    The reference used softplus(raw) alone; min_scale (default 1e-6, the epsilon the posteriors use)
    keeps the log-density finite when softplus underflows.
    """

    params_per_pixel = 2

    def __init__(self, min_scale: float = 1e-6):
        self.min_scale = min_scale

    def scale(self, out: torch.Tensor) -> torch.Tensor:
        """(G, B, 2, *shape) -> the std, (G, B, *shape)."""
        return F.softplus(out[:, :, 1]) + self.min_scale

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x (G, B, *shape), out (G, B, 2, *shape) -> (G, B)."""
        lp = torch.distributions.Normal(out[:, :, 0], self.scale(out)).log_prob(x)
        return lp.flatten(2).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, :, 0]


# name -> (schema of options, constructor taking those options)
LIKELIHOODS: dict[str, tuple[dict[str, Param], type]] = {
    "laplace": ({"scale": positive(0.1, "fixed scale of the Laplace")}, Laplace),
    "bernoulli": ({}, Bernoulli),
    "normal": ({"min_scale": non_negative(1e-6, "added to softplus(raw) to give the std")}, Normal),
}


def likelihood_schemas() -> dict[str, dict[str, Param]]:
    return {name: schema for name, (schema, _) in LIKELIHOODS.items()}


def build_likelihood(options: Options):
    _, cls = LIKELIHOODS[options.name]
    return cls(**dict(options.params))
