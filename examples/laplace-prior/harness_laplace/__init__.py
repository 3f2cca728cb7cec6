"""An i.i.d. Laplace prior for the harness, installed as a plugin (entry point group `harness.priors`).

p(z) = prod_d Laplace(z_d; 0, b) = prod_d exp(-|z_d| / b) / (2 b): heavier tails than a Normal of the same
variance (2 b^2) and a sharp peak at 0, so it asks for codes that are often near zero, a milder sparsity than
the spike-and-slab. The default b = 1/sqrt(2) has unit variance, like the standard Normal.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Laplace

from harness.models.priors import PriorEntry, PriorModule
from harness.schema import positive

__all__ = ["LAPLACE", "LaplacePrior"]


class LaplacePrior(PriorModule):
    """Laplace(0, b) in every latent dimension; b may differ per member of a pack."""

    def __init__(self, members, latent: int):
        super().__init__(members, latent)
        self.scale_values = [m["scale"] for m in members]

    def _scales(self) -> torch.Tensor:
        """(G, 1, 1): one b per member, to broadcast against z (G, B, L)."""
        return torch.tensor(self.scale_values, dtype=self.anchor.dtype, device=self.anchor.device).reshape(-1, 1, 1)

    def dist(self) -> Laplace:
        b = self._scales()
        return Laplace(torch.zeros_like(b), b)

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:
        """n draws (n, L) from member g's own generator, by the inverse CDF: z = -b sign(u) log(1 - 2|u|)."""
        u = self._rand(gen, n) - 0.5  # in [-0.5, 0.5)
        tiny = math.log(torch.finfo(u.dtype).tiny)
        return -self.scale_values[g] * torch.sign(u) * torch.log1p(-2 * u.abs()).clamp_min(tiny)


def _build(members, latent: int, data=None) -> LaplacePrior:
    return LaplacePrior(members, latent)


LAPLACE = PriorEntry({"scale": positive(1 / math.sqrt(2), "b, the scale of each dimension (variance 2 b^2)")}, _build)
