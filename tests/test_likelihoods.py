"""Likelihoods: closed-form log-densities, normalisation, means, and the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.models.likelihoods import LIKELIHOODS, Bernoulli, Laplace, Normal, build_likelihood, likelihood_schemas
from harness.schema import SpecError, resolve_options


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bernoulli_matches_the_closed_form():
    gen = seeded(0)
    logits = torch.randn(2, 3, 1, 1, 4, 4, generator=gen, dtype=torch.float64) * 3  # (G, B, P, C, H, W)
    x = torch.rand(2, 3, 1, 4, 4, generator=gen, dtype=torch.float64)
    p = torch.sigmoid(logits[:, :, 0])
    expected = (x * p.log() + (1 - x) * (1 - p).log()).flatten(2).sum(-1)
    torch.testing.assert_close(Bernoulli().log_prob(x, logits), expected, rtol=1e-12, atol=1e-12)


def test_bernoulli_agrees_with_torch_on_binary_data():
    gen = seeded(1)
    logits = torch.randn(1, 5, 1, 10, generator=gen, dtype=torch.float64)
    x = (torch.rand(1, 5, 10, generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)
    expected = torch.distributions.Bernoulli(logits=logits[:, :, 0]).log_prob(x).sum(-1)
    torch.testing.assert_close(Bernoulli().log_prob(x, logits), expected)


def test_bernoulli_logits_are_never_clamped():
    """A negative logit means a probability below 1/2, and extreme logits stay exact."""
    logits = torch.tensor([-3.0, -60.0, 60.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    x = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 3)
    assert Bernoulli().mean(logits)[0, 0, 0].item() == pytest.approx(1 / (1 + math.exp(3.0)), rel=1e-12)
    expected = -math.log1p(math.exp(-3.0)) - 2 * math.log1p(math.exp(-60.0))
    assert Bernoulli().log_prob(x, logits).item() == pytest.approx(expected, rel=1e-12)
    # a pixel that is on where the logit is -60 costs 60 nats, not log 2
    assert Bernoulli().log_prob(torch.ones(1, 1, 1, dtype=torch.float64), logits[..., 1:2]).item() == pytest.approx(
        -60.0, rel=1e-12)


def test_normal_matches_torch_with_softplus_std():
    gen = seeded(2)
    out = torch.randn(2, 3, 2, 5, generator=gen, dtype=torch.float64)  # (G, B, P = 2, D)
    x = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    std = F.softplus(out[:, :, 1]) + 1e-6
    expected = torch.distributions.Normal(out[:, :, 0], std).log_prob(x).sum(-1)
    likelihood = Normal()
    assert likelihood.params_per_pixel == 2
    torch.testing.assert_close(likelihood.log_prob(x, out), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(likelihood.mean(out), out[:, :, 0])


@pytest.mark.parametrize("likelihood, out", [
    (Normal(), torch.tensor([0.7, -1.2], dtype=torch.float64)),  # mean, raw std
    (Laplace(0.1), torch.tensor([0.3], dtype=torch.float64)),
])
def test_continuous_likelihoods_integrate_to_one(likelihood, out):
    """One pixel: the integral of exp(log_prob) over x is 1 (tan substitution covers the real line)."""
    u = torch.linspace(-math.pi / 2, math.pi / 2, 400_001, dtype=torch.float64)[1:-1]
    x = torch.tan(u)
    density = likelihood.log_prob(x.reshape(1, -1, 1), out.reshape(1, 1, -1, 1).expand(1, len(x), -1, 1)).exp()
    total = torch.trapezoid(density[0] / torch.cos(u) ** 2, u)
    assert total.item() == pytest.approx(1.0, abs=1e-4)


def test_registry_builds_every_likelihood_with_defaults():
    schemas = likelihood_schemas()
    assert set(schemas) == {"laplace", "bernoulli", "normal"}
    for name in LIKELIHOODS:
        likelihood = build_likelihood(resolve_options("likelihood", name, "likelihood", schemas))
        assert likelihood.params_per_pixel in (1, 2)
    assert build_likelihood(resolve_options("likelihood", "normal", "likelihood", schemas)).min_scale == 1e-6


def test_registry_rejects_unknown_options():
    with pytest.raises(SpecError, match="not an option of likelihood 'bernoulli'"):
        resolve_options("likelihood", {"name": "bernoulli", "scale": 0.1}, "likelihood", likelihood_schemas())
