"""Per-class mean |posterior mean| per latent dimension (the paper's bar charts)."""

from __future__ import annotations

import torch


def class_magnitudes(loc: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """loc (G, N, L), labels (N,) -> (G, num_classes, L); classes absent from labels give NaN."""
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(loc.dtype)  # (N, K)
    counts = one_hot.sum(0)  # (K,)
    sums = torch.einsum("nk,gnl->gkl", one_hot, loc.abs())
    return sums / counts.reshape(1, -1, 1)
