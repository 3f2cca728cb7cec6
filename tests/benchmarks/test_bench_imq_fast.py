"""mmd_dim forward + backward with its Chebyshev pair sums ("imq_fast", numerics 3's default on the CPU) and with
the direct sums over all pairs ("imq_direct", what numerics 2 computed).

Both run harness.models.divergences.mmd_dim itself at the paper's batch (G = 1, B = 500, latent 50); "imq_direct"
raises imq_fast's MIN_PAIRS so that every pair sum takes the direct path, so the formula around them is the same.
Run with `make bench` or `pytest tests/benchmarks/test_bench_imq_fast.py --benchmark-only --benchmark-enable`.
The device is taken from HARNESS_BENCH_DEVICE (default: cuda if available, else cpu); off the CPU imq_fast's
default is the direct sums, so there the two cases should time alike.
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.models import divergences, imq_fast

DEVICE = os.environ.get("HARNESS_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
GROUPS, BATCH, LATENT = 1, 500, 50


def _sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["imq_fast", "imq_direct"])
def test_mmd_dim_pair_sums_forward_backward(benchmark, monkeypatch, impl):
    if impl == "imq_direct":
        monkeypatch.setattr(imq_fast, "MIN_PAIRS", 10**18)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    z = torch.randn(GROUPS, BATCH, LATENT, generator=gen, device=DEVICE, requires_grad=True)
    prior_z = torch.randn(GROUPS, BATCH, LATENT, generator=gen, device=DEVICE)

    def step():
        z.grad = None
        divergences.mmd_dim(z, prior_z).sum().backward()
        _sync()

    benchmark.extra_info.update({"device": DEVICE, "groups": GROUPS, "batch": BATCH, "latent": LATENT})
    benchmark(step)
