"""Throughput of the pieces that dominate a sparsity run: `make bench` (pytest-benchmark).

Cases: one training step of conv32 at the paper's batch (500, latent 50) for packs of 1 and 4, and the
mmd_dim divergence with its hand-written gradient against plain autograd (the reference's way).
Run on a GPU too: the device is taken from HARNESS_BENCH_DEVICE (default: cuda if available, else cpu).
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.datasets.base import Dataset
from harness.models.divergences import DIVERGENCES, MMD_SCALES, mmd_dim
from harness.models.vae import objective
from harness.schema import Options
from harness.spec import JobSpec
from harness.train import build_model, generator

DEVICE = os.environ.get("HARNESS_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
BATCH, LATENT = 500, 50


def _sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def mmd_autograd(z: torch.Tensor, prior_z: torch.Tensor) -> torch.Tensor:
    """mmd_dim as the reference computes it: every kernel matrix kept for autograd."""
    g, b, latent = z.shape
    x, y = prior_z.transpose(1, 2), z.transpose(1, 2)

    def sums(a, c):
        d2 = (a.unsqueeze(-1) - c.unsqueeze(-2)) ** 2
        return sum((2 * s / (2 * s + d2)).sum(dim=(1, 2, 3)) for s in MMD_SCALES)

    diagonal = b * latent * len(MMD_SCALES)
    return (sums(x, x) + sums(y, y) - 2 * diagonal) / (b * (b - 1)) - 2 * sums(x, y) / b**2


@pytest.mark.parametrize("impl", ["harness", "autograd"])
def test_mmd_dim_forward_backward(benchmark, impl):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    z = torch.randn(1, BATCH, LATENT, generator=gen, device=DEVICE, requires_grad=True)
    prior_z = torch.randn(1, BATCH, LATENT, generator=gen, device=DEVICE)
    fn = mmd_dim if impl == "harness" else mmd_autograd

    def step():
        z.grad = None
        fn(z, prior_z).sum().backward()
        _sync()

    benchmark(step)


@pytest.mark.parametrize("groups", [1, 4])
def test_conv32_training_step(benchmark, groups):
    device = torch.device(DEVICE)
    n = BATCH
    x_all = torch.rand(n, 1, 32, 32, device=device)
    data = Dataset("bench", x_all, torch.zeros(n, dtype=torch.long, device=device), x_all[:10],
                   torch.zeros(10, dtype=torch.long, device=device), ("x",))
    jobs = tuple(JobSpec(dataset=Options("bench"), arch="conv32", latent_dim=LATENT,
                         likelihood=Options("laplace", (("scale", 0.1),)),
                         prior=Options("sparse", (("gamma", 0.8), ("spike_scale", 0.05))), divergence="mmd_dim",
                         alpha=100.0, beta=1.0, epochs=1, batch_size=BATCH, lr=5e-4, seed=s)
                 for s in range(groups))
    model = build_model(jobs, data, device)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4, amsgrad=True)
    gens = [generator(j.seed, "prior", device) for j in jobs]
    alpha = torch.full((groups,), 100.0, device=device)
    beta = torch.ones(groups, device=device)
    x = x_all.unsqueeze(0).expand(groups, *x_all.shape)

    def step():
        eps = torch.randn(groups, BATCH, LATENT, device=device)
        prior_z = model.prior.sample_members(gens, BATCH)
        terms = objective(model, x, model(x, eps), prior_z, alpha, beta, DIVERGENCES["mmd_dim"])
        optimiser.zero_grad()
        terms.loss.sum().backward()
        optimiser.step()
        _sync()

    benchmark.extra_info.update({"device": DEVICE, "groups": groups, "images_per_step": groups * BATCH})
    benchmark(step)
