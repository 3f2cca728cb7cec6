"""Hoyer sparsity of latent codes (SPEC section 5)."""

from __future__ import annotations

import torch


def hoyer(z: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """Mean Hoyer sparsity of the rows of z (..., N, D) -> (...,).

    normalise: divide each dimension by its standard deviation over the N rows first (dimensions
    with zero spread are left as they are). 0 is dense, 1 is one-hot.
    """
    d = z.shape[-1]
    if normalise:
        std = z.std(dim=-2, keepdim=True)
        z = z / torch.where(std > 0, std, torch.ones_like(std))
    l1 = z.abs().sum(-1)
    l2 = z.norm(dim=-1)
    ratio = torch.where(l2 > 0, l1 / torch.where(l2 > 0, l2, torch.ones_like(l2)), torch.full_like(l1, d**0.5))
    return (d**0.5 - ratio.mean(-1)) / (d**0.5 - 1)
