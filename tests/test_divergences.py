"""The inclusive KL divergence kld_inc: exact zero, a closed-form KL, and its Jensen bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from harness.models.divergences import DIVERGENCES, kld_inc
from harness.models.priors import build_prior, prior_schemas
from harness.schema import resolve_options


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def standard_normal_prior(groups: int, latent: int):
    members = [resolve_options("prior", "normal", "prior", prior_schemas())] * groups
    return build_prior(members, latent).double()


def test_registered_by_name():
    assert DIVERGENCES["kld_inc"] is kld_inc


def test_zero_when_every_posterior_is_the_prior():
    """q(z|x_j) = p(z) for all j makes q(z) = p(z) exactly, whatever the prior samples."""
    g, b, latent = 3, 64, 4
    prior = standard_normal_prior(g, latent)
    prior_z = prior.sample_members([seeded(s) for s in range(g)], b)
    loc, scale = torch.zeros(g, b, latent, dtype=torch.float64), torch.ones(g, b, latent, dtype=torch.float64)
    d = kld_inc(prior_z, prior_z, loc, scale, prior)
    assert d.shape == (g,)
    torch.testing.assert_close(d, torch.zeros(g, dtype=torch.float64), rtol=0, atol=1e-12)


def test_identical_posteriors_give_the_closed_form_kl():
    """All q(z|x_j) = N(mu, s^2) makes q(z) = N(mu, s^2): D_hat averages log p - log q over prior draws,
    an unbiased estimate of KL(N(0, I) || N(mu, s^2))."""
    b, latent = 2_000, 2
    prior = standard_normal_prior(1, latent)
    prior_z = prior.sample_members([seeded(5)], b)  # (1, B, L)
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    s = torch.tensor([0.8, 1.5], dtype=torch.float64)
    d = kld_inc(prior_z, prior_z, mu.expand(1, b, latent), s.expand(1, b, latent), prior)
    analytic = kl_divergence(Normal(0.0, torch.ones(latent, dtype=torch.float64)), Normal(mu, s)).sum()
    terms = prior.log_prob(prior_z)[0] - Normal(mu, s).log_prob(prior_z[0]).sum(-1)
    assert d.item() == pytest.approx(terms.mean().item(), rel=1e-10)
    assert abs(d.item() - analytic.item()) < 3 * terms.std().item() / math.sqrt(b)


def _spread_posteriors(g: int, b: int, latent: int, spread: float, width: float, gen: torch.Generator):
    """q(z|x_j) = N(m_j, width^2 I) with m_j ~ N(0, spread^2 I): the aggregate is N(0, (spread^2 + width^2) I)."""
    loc = spread * torch.randn(g, b, latent, generator=gen, dtype=torch.float64)
    return loc, torch.full_like(loc, width)


def test_near_zero_when_the_aggregate_posterior_is_the_prior():
    """With spread^2 + width^2 = 1 the aggregate posterior is the prior in expectation over the means.
    D_hat is then a small positive number: log of a minibatch average is biased low (Jensen), by
    roughly Var[q_hat(z')] / (2 q(z')^2) = O(1 / B). Averaged over 200 independent members it is
    positive and below 0.02 nats at B = 200, and it falls as B grows."""
    g, latent = 200, 2
    prior = standard_normal_prior(g, latent)
    means = []
    for b in (50, 200):
        gen = seeded(b)
        loc, scale = _spread_posteriors(g, b, latent, math.sqrt(0.5), math.sqrt(0.5), gen)
        prior_z = prior.sample_members([seeded(1000 + i) for i in range(g)], b)
        means.append(kld_inc(prior_z, prior_z, loc, scale, prior).mean().item())
    assert 0 < means[1] < 0.02
    assert means[1] < means[0]


def test_clearly_positive_when_the_aggregate_is_too_narrow():
    g, b, latent = 20, 200, 2
    prior = standard_normal_prior(g, latent)
    loc, scale = _spread_posteriors(g, b, latent, math.sqrt(0.1), 0.1, seeded(3))  # aggregate ~ N(0, 0.11 I)
    prior_z = prior.sample_members([seeded(i) for i in range(g)], b)
    d = kld_inc(prior_z, prior_z, loc, scale, prior)
    # KL(N(0, I) || N(0, 0.11 I)) = 2 x 0.5 (1/0.11 - 1 + log 0.11) = 5.9 nats, more for the lumpy aggregate
    assert bool((d > 5.0).all())


def test_members_are_computed_independently():
    g, b, latent = 3, 32, 2
    prior = standard_normal_prior(g, latent)
    loc, scale = _spread_posteriors(g, b, latent, 0.7, 0.5, seeded(9))
    prior_z = prior.sample_members([seeded(i) for i in range(g)], b)
    packed = kld_inc(prior_z, prior_z, loc, scale, prior)
    single = standard_normal_prior(1, latent)
    for m in range(g):
        alone = kld_inc(prior_z[m:m + 1], prior_z[m:m + 1], loc[m:m + 1], scale[m:m + 1], single)
        torch.testing.assert_close(packed[m:m + 1], alone, rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_posterior_parameters():
    prior = standard_normal_prior(1, 2)
    loc, scale = _spread_posteriors(1, 16, 2, 0.3, 0.2, seeded(4))
    loc.requires_grad_(True)
    scale.requires_grad_(True)
    prior_z = prior.sample_members([seeded(0)], 16)
    kld_inc(prior_z, prior_z, loc, scale, prior).sum().backward()
    assert loc.grad.abs().sum() > 0 and scale.grad.abs().sum() > 0
