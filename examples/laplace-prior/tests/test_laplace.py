"""The example plugin's own tests: its density and its draws are Laplace(0, b), member by member."""

from __future__ import annotations

import math

import torch
from harness_laplace import LAPLACE, LaplacePrior

from harness.models.priors import PRIORS, build_prior
from harness.schema import Options


def members(*scales: float) -> list[Options]:
    return [Options("laplace", (("scale", s),)) for s in scales]


def test_the_registry_finds_the_installed_plugin():
    assert "laplace" in PRIORS and PRIORS["laplace"] is LAPLACE
    identity = PRIORS.identity("laplace")
    assert identity.distribution == "harness-laplace" and len(identity.source) == 64


def test_log_prob_is_the_laplace_density_summed_over_dimensions():
    prior = build_prior(members(0.5, 2.0), latent=3)
    assert isinstance(prior, LaplacePrior)
    z = torch.tensor([[[0.1, -1.0, 3.0]], [[0.1, -1.0, 3.0]]])  # (G=2, B=1, L=3)
    expected = [sum(-abs(v) / b - math.log(2 * b) for v in (0.1, -1.0, 3.0)) for b in (0.5, 2.0)]
    assert torch.allclose(prior.log_prob(z), torch.tensor(expected).reshape(2, 1))


def test_each_member_draws_from_its_own_generator_with_its_scale():
    prior = build_prior(members(0.5, 2.0), latent=4)
    draws = prior.sample_members([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 50_000)
    assert draws.shape == (2, 50_000, 4)
    for g, b in enumerate((0.5, 2.0)):  # E|z| = b, Var z = 2 b^2
        assert abs(draws[g].abs().mean().item() - b) < 0.02 * b
        assert abs(draws[g].var().item() - 2 * b * b) < 0.05 * 2 * b * b
    again = prior.sample_members([torch.Generator().manual_seed(1), torch.Generator().manual_seed(9)], 50_000)
    assert torch.equal(again[0], draws[0]) and not torch.equal(again[1], draws[1])
