"""Priors: normalised densities, moments of the member samplers, KL estimates and pack independence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from harness.datasets.base import Dataset
from harness.models.priors import (
    PRIORS,
    NormalMixture,
    NormalPrior,
    build_prior,
    principal_variances,
    prior_schemas,
    student_t_polar,
)
from harness.models.vae import kl_terms
from harness.schema import resolve_options

TRUE_VARIANCES = (4.0, 2.0, 1.0, 0.5, 0.25, 0.1)  # of the fake image data below, by construction


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def options(name: str, **params):
    return resolve_options("prior", {"name": name, **params}, "prior", prior_schemas())


def fake_images(n: int = 4000, seed: int = 0) -> Dataset:
    """Images (N, 1, 2, 3) whose pixel covariance has eigenvalues TRUE_VARIANCES along a random basis."""
    gen = seeded(seed)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    scores = torch.randn(n, 6, generator=gen, dtype=torch.float64) * torch.tensor(TRUE_VARIANCES).sqrt()
    x = (scores @ basis.T + 0.5).float().reshape(n, 1, 2, 3)
    y = torch.zeros(n, dtype=torch.int64)
    return Dataset("fake", x, y, x[:10], y[:10], ("all",))


def make(members: list, latent: int, data=None):
    return build_prior(members, latent, data).double()


# name -> member options for a pack of two, and the latent size to test at
PACKS = {
    "normal": ([options("normal", scale=2.0), options("normal", scale=0.5)], 3),
    "anisotropic": ([options("anisotropic"), options("anisotropic", scale=2.0, learn=True)], 3),
    "student_t": ([options("student_t", df=3.0), options("student_t", df=20.0)], 3),
    "sparse": ([options("sparse", gamma=0.8), options("sparse", gamma=0.0)], 3),
    "mixture": ([options("mixture"), options("mixture", variance=0.1)], 2),
}


def test_every_prior_is_exercised():
    assert set(PACKS) == set(PRIORS)


# ---- densities integrate to one ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["normal", "anisotropic", "student_t", "sparse"])
def test_factorised_density_integrates_to_one(name):
    """Each latent dimension of each member: the integral over the real line is 1 (z = tan u)."""
    members, latent = PACKS[name]
    prior = make(members, latent, fake_images())
    u = torch.linspace(-math.pi / 2, math.pi / 2, 400_001, dtype=torch.float64)[1:-1]
    z = torch.tan(u).reshape(1, -1, 1).expand(len(members), -1, latent)  # (G, N, L)
    density = prior.dist().log_prob(z).exp() / torch.cos(u).reshape(1, -1, 1) ** 2
    totals = torch.trapezoid(density, u, dim=1)  # (G, L)
    torch.testing.assert_close(totals, torch.ones_like(totals), rtol=0, atol=1e-4)


def test_student_t_with_few_degrees_of_freedom_integrates_to_one():
    prior = make([options("student_t", df=1.5)], 1)
    u = torch.linspace(-math.pi / 2, math.pi / 2, 400_001, dtype=torch.float64)[1:-1]
    density = prior.dist().log_prob(torch.tan(u).reshape(1, -1, 1)).exp()[0, :, 0] / torch.cos(u) ** 2
    assert torch.trapezoid(density, u).item() == pytest.approx(1.0, abs=1e-4)


def test_mixture_density_integrates_to_one_in_2d():
    prior = make(*PACKS["mixture"])
    axis = torch.linspace(-3.5, 3.5, 1401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(1, -1, 2).expand(2, -1, 2)
    density = prior.log_prob(grid).exp().reshape(2, len(axis), len(axis))  # (G, N, N)
    totals = torch.trapezoid(torch.trapezoid(density, axis, dim=2), axis, dim=1)
    torch.testing.assert_close(totals, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-4)


# ---- the mixture's joint density ---------------------------------------------------------------

def test_mixture_log_prob_is_the_joint_2d_density():
    """At (0, -1), by hand: counted once per datapoint, not once per dimension."""
    prior = make([options("mixture")], 2)
    var = 0.03
    centres = [(0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)]
    point = (0.0, -1.0)
    density = sum(0.25 * math.exp(-((point[0] - a) ** 2 + (point[1] - b) ** 2) / (2 * var)) / (2 * math.pi * var)
                  for a, b in centres)
    z = torch.tensor([[point]], dtype=torch.float64)  # (G, B, 2)
    assert prior.dist().event_shape == (2,)
    assert prior.log_prob(z).shape == (1, 1)
    assert prior.log_prob(z).item() == pytest.approx(math.log(density), rel=1e-12)


def test_mixture_needs_a_2d_latent():
    with pytest.raises(ValueError, match="latent_dim = 2"):
        build_prior([options("mixture")], 3)


def test_normal_mixture_is_a_distribution():
    locs = torch.tensor([[0.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    mixture = NormalMixture(locs, torch.full_like(locs, 0.2), validate_args=True)
    assert mixture.batch_shape == () and mixture.event_shape == (2,) and not mixture.has_rsample
    assert mixture.sample((5,)).shape == (5, 2)
    torch.testing.assert_close(mixture.mean, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(mixture.variance, torch.tensor([0.04, 1.04], dtype=torch.float64))
    torch.testing.assert_close(mixture.stddev, mixture.variance.sqrt())


# ---- samples: moments and quantiles ------------------------------------------------------------

def _assert_within_three_se(samples: torch.Tensor, mean: float, variance: float | None) -> None:
    """Pooled sample mean (and variance about the true mean) within 3 standard errors of the truth."""
    n = samples.numel()
    assert abs(samples.mean().item() - mean) < 3 * samples.std().item() / math.sqrt(n)
    if variance is not None:
        squares = (samples - mean) ** 2
        assert abs(squares.mean().item() - variance) < 3 * squares.std().item() / math.sqrt(n)


def _member_samples(name: str, n: int = 100_000, seeds=(21, 22)) -> tuple[torch.Tensor, object]:
    members, latent = PACKS[name]
    prior = make(members, latent, fake_images())
    return prior.sample_members([seeded(s) for s in seeds], n), prior  # (G, n, L)


@pytest.mark.parametrize("name", ["normal", "anisotropic"])
def test_normal_samples_have_the_prior_variances(name):
    samples, prior = _member_samples(name)
    standardised = samples / prior.stddev()  # (G, n, L) / (G, 1, L)
    for g in range(len(samples)):
        _assert_within_three_se(standardised[g], 0.0, 1.0)


@pytest.mark.parametrize("df", [5.0, 9.0, 20.0])
def test_student_t_samples_have_the_closed_form_moments(df):
    prior = make([options("student_t", df=df)], 4)
    samples = prior.sample_members([seeded(int(df))], 100_000)
    assert prior.dist().variance.flatten()[0].item() == pytest.approx(df / (df - 2))
    _assert_within_three_se(samples, 0.0, df / (df - 2))


# two-sided t-table quantiles: P(|T| < q) = 0.95, P(T < q90) = 0.9
@pytest.mark.parametrize("df, q95, q90", [(3.0, 3.182446, 1.637744), (5.0, 2.570582, 1.475884),
                                          (9.0, 2.262157, 1.383029)])
def test_student_t_samples_match_t_table_quantiles(df, q95, q90):
    t = student_t_polar(torch.tensor([df]), 200_000, seeded(3))[:, 0]
    for fraction, p in [((t.abs() < q95).double().mean(), 0.95), ((t < q90).double().mean(), 0.9),
                        ((t < 0).double().mean(), 0.5)]:
        assert abs(fraction.item() - p) < 3 * math.sqrt(p * (1 - p) / len(t))


def test_student_t_heavy_tails_have_the_right_mean():
    samples, _ = _member_samples("student_t")  # member 0 has df = 3: finite variance, infinite kurtosis
    _assert_within_three_se(samples[0], 0.0, None)


def test_mixture_samples_have_the_closed_form_moments():
    samples, prior = _member_samples("mixture")
    variances = [0.03 + 0.5, 0.1 + 0.5]  # component variance + spread of the centres (+-1 on half of them)
    torch.testing.assert_close(prior.dist().variance[:, 0], torch.tensor(variances, dtype=torch.float64)
                               .reshape(2, 1).expand(2, 2))
    for g, variance in enumerate(variances):
        _assert_within_three_se(samples[g], 0.0, variance)
        # the two coordinates are uncorrelated: every centre has a zero coordinate
        product = samples[g, :, 0] * samples[g, :, 1]
        _assert_within_three_se(product, 0.0, None)


# ---- KL: Monte Carlo against closed forms -------------------------------------------------------

def _posterior(groups: int, n: int, latent: int):
    """n copies of one posterior per member: loc (G, n, L), scale (G, n, L), and z drawn from it."""
    gen = seeded(7)
    loc = torch.randn(groups, 1, latent, generator=gen, dtype=torch.float64).expand(groups, n, latent)
    scale = (0.3 + torch.rand(groups, 1, latent, generator=gen, dtype=torch.float64)).expand(groups, n, latent)
    z = loc + scale * torch.randn(groups, n, latent, generator=gen, dtype=torch.float64)
    return loc, scale, z


@pytest.mark.parametrize("name", ["normal", "anisotropic"])
def test_monte_carlo_kl_matches_the_analytic_kl(name):
    members, latent = PACKS[name]
    prior = make(members, latent, fake_images())
    loc, scale, z = _posterior(len(members), 50_000, latent)
    analytic = kl_divergence(Normal(loc[:, :1], scale[:, :1]), prior.dist()).sum(-1)[:, 0]  # (G,)
    estimates = Normal(loc, scale).log_prob(z).sum(-1) - prior.log_prob(z)  # (G, n)
    torch.testing.assert_close(kl_terms(loc, scale, z, prior)[:, 0], analytic)  # analytic branch
    se = estimates.std(1) / math.sqrt(estimates.shape[1])
    assert bool(((estimates.mean(1) - analytic).abs() < 3 * se).all())


def test_sampled_kl_branch_converges_to_the_normal_kl_as_df_grows():
    """kl_terms' one-sample branch (Student-t prior) with df = 1e8 averages to KL(q || N(0, I))."""
    prior = make([options("student_t", df=1e8)], 3)
    loc, scale, z = _posterior(1, 50_000, 3)
    estimates = kl_terms(loc, scale, z, prior)[0]  # (n,)
    analytic = kl_divergence(Normal(loc[0, 0], scale[0, 0]), Normal(0.0, 1.0)).sum()
    assert abs(estimates.mean() - analytic).item() < 3 * estimates.std().item() / math.sqrt(len(estimates))


# ---- pack independence -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PACKS))
def test_member_samples_do_not_depend_on_the_pack(name):
    members, latent = PACKS[name]
    data = fake_images()
    packed = make(members, latent, data).sample_members([seeded(31), seeded(32)], 500)
    for g, seed in enumerate([31, 32]):
        alone = make([members[g]], latent, data).sample_members([seeded(seed)], 500)
        assert torch.equal(packed[g], alone[0])


# ---- the anisotropic prior ---------------------------------------------------------------------

def test_principal_variances_are_the_largest_eigenvalues_in_descending_order():
    x = fake_images(500).train_x
    flat = x.reshape(len(x), -1).double().numpy()
    expected = np.sort(np.linalg.eigvalsh(np.cov(flat, rowvar=False)))[::-1][:4]
    found = principal_variances(x, 4)
    np.testing.assert_allclose(found.numpy(), expected, rtol=1e-9)
    assert bool((found[:-1] > found[1:]).all())


def test_principal_variances_from_a_subset_and_from_the_gram_matrix():
    x = fake_images(20_000).train_x
    subset = principal_variances(x, 3, max_rows=5_000)  # covariance of 5,000 rows
    np.testing.assert_allclose(subset.numpy(), TRUE_VARIANCES[:3], rtol=0.06)
    few = x[:5]  # fewer rows than pixels: the Gram matrix's non-zero eigenvalues
    flat = few.reshape(5, -1).double().numpy()
    expected = np.sort(np.linalg.eigvalsh(np.cov(flat, rowvar=False)))[::-1][:3]
    np.testing.assert_allclose(principal_variances(few, 3).numpy(), expected, rtol=1e-9)


def test_anisotropic_prior_allocates_variance_like_the_data():
    prior = make([options("anisotropic", scale=2.0)], 3, fake_images())
    variances = prior.stddev()[0, 0] ** 2  # (L,)
    top = principal_variances(fake_images().train_x, 3).double()
    torch.testing.assert_close(variances, 2.0 * 3 * top / top.sum(), rtol=1e-6, atol=0)
    assert not any(p.requires_grad for p in prior.parameters())


def test_learnt_allocation_trains_only_the_members_that_ask():
    prior = make(PACKS["anisotropic"][0], 3, fake_images())  # member 0 fixed, member 1 learnt
    assert [name for name, _ in prior.named_parameters()] == ["w"]
    z = torch.randn(2, 8, 3, generator=seeded(0), dtype=torch.float64)
    prior.log_prob(z).sum().backward()
    assert bool((prior.w.grad[0] == 0).all()) and bool((prior.w.grad[1] != 0).any())


def test_anisotropic_prior_needs_the_data():
    with pytest.raises(ValueError, match="training data"):
        build_prior([options("anisotropic")], 3)


def test_isotropic_normal_is_n0_scale():
    prior = NormalPrior([options("normal", scale=0.5)], 4).double()
    torch.testing.assert_close(prior.stddev(), torch.full((1, 1, 4), math.sqrt(0.5), dtype=torch.float64))
