"""IWAE on a linear-Gaussian model, where log p(x) and the ELBO are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from harness.metrics.iwae import iwae_log_px
from harness.models.likelihoods import Normal as NormalLikelihood
from harness.models.priors import build_prior, prior_schemas
from harness.models.vae import PackedVAE
from harness.schema import resolve_options

SIGMA = 0.5  # the decoder's fixed noise std
N_DATA = 100
INFLATE = 1.25  # the encoder's std is this times the true posterior's marginal std


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def standard_normal_prior(groups: int, latent: int):
    return build_prior([resolve_options("prior", "normal", "prior", prior_schemas())] * groups, latent).double()


class LinearGaussian(nn.Module):
    """p(z) = N(0, I_L), p(x|z) = N(W z + c, SIGMA^2 I_D), with a mean-field encoder: the exact posterior
    mean and the posterior's marginal std times INFLATE. One member (G = 1), float64."""

    def __init__(self, weight: torch.Tensor, offset: torch.Tensor):
        super().__init__()
        self.weight, self.offset = weight, offset  # (D, L), (D,)
        latent = weight.shape[1]
        precision = torch.eye(latent, dtype=torch.float64) + weight.T @ weight / SIGMA**2
        self.post_cov = torch.linalg.inv(precision)  # (L, L)
        self.gain = self.post_cov @ weight.T / SIGMA**2  # (L, D)
        self.q_std = INFLATE * self.post_cov.diagonal().sqrt()  # (L,)
        self.prior = standard_normal_prior(1, latent)
        self.likelihood = NormalLikelihood(min_scale=0.0)
        self.raw_std = math.log(math.expm1(SIGMA))  # softplus(raw_std) = SIGMA

    def encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = (x - self.offset) @ self.gain.T  # (G, B, L)
        return loc, self.q_std.expand_as(loc)

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        mean = z @ self.weight.T + self.offset  # (G, B, D)
        return torch.stack([mean, torch.full_like(mean, self.raw_std)], dim=2)  # (G, B, 2, D)

    def marginal(self) -> MultivariateNormal:
        cov = self.weight @ self.weight.T + SIGMA**2 * torch.eye(len(self.offset), dtype=torch.float64)
        return MultivariateNormal(self.offset, cov)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) - KL(q(z|x) || p(z|x)); the means agree, so the KL involves covariances only."""
        s = torch.diag(self.q_std**2)
        kl = 0.5 * (torch.trace(torch.linalg.solve(self.post_cov, s)) - len(self.q_std)
                    + torch.logdet(self.post_cov) - torch.logdet(s))
        return self.marginal().log_prob(x) - kl


@pytest.fixture(scope="module")
def setup():
    gen = seeded(0)
    weight = torch.tensor([[1.0, 0.3], [0.4, -0.8], [0.5, 0.6]], dtype=torch.float64)
    offset = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    model = LinearGaussian(weight, offset)
    z = torch.randn(N_DATA, 2, generator=gen, dtype=torch.float64)
    x = z @ weight.T + offset + SIGMA * torch.randn(N_DATA, 3, generator=gen, dtype=torch.float64)  # x ~ p(x)
    estimates = {k: iwae_log_px(model, x.unsqueeze(0), k, [seeded(k)], batch_size=16, k_chunk=64)[0]
                 for k in (1, 5, 1000)}
    return model, x, estimates


def test_iwae_with_1000_samples_is_within_005_nats_of_log_px(setup):
    model, x, estimates = setup
    truth = model.marginal().log_prob(x)
    assert estimates[1000].shape == truth.shape == (N_DATA,)
    assert (estimates[1000] - truth).abs().max().item() < 0.05


def test_elbo_below_iwae_below_log_px(setup):
    """On average over the datapoints: ELBO < IWAE_5 <= log p(x) + noise, and IWAE_1000 closes the gap."""
    model, x, estimates = setup
    elbo, truth = model.elbo(x), model.marginal().log_prob(x)
    assert (truth - elbo).mean().item() > 0.1  # the mean-field encoder leaves a real gap to close
    gap_5 = truth - estimates[5]
    se_5 = gap_5.std().item() / math.sqrt(len(gap_5))
    assert estimates[5].mean().item() > elbo.mean().item() + 3 * se_5
    assert gap_5.mean().item() > -3 * se_5
    assert (truth - estimates[1000]).mean().abs().item() < 0.01


def test_one_sample_is_an_unbiased_elbo(setup):
    model, x, estimates = setup
    gap = estimates[1] - model.elbo(x)
    assert abs(gap.mean().item()) < 3 * gap.std().item() / math.sqrt(len(gap))


def _packed_mlp(seeds: list[int]) -> PackedVAE:
    likelihood = NormalLikelihood()
    model = PackedVAE("mlp", len(seeds), 2, (2,), likelihood, standard_normal_prior(len(seeds), 2)).double()
    model.init_weights([seeded(s) for s in seeds])
    return model


def test_members_do_not_depend_on_the_pack_and_mode_is_restored():
    x = torch.randn(2, 30, 2, generator=seeded(1), dtype=torch.float64)
    packed = _packed_mlp([4, 5])
    packed.train()
    both = iwae_log_px(packed, x, 50, [seeded(40), seeded(50)], batch_size=7, k_chunk=20)
    assert packed.training
    alone = iwae_log_px(_packed_mlp([5]), x[1:], 50, [seeded(50)], batch_size=7, k_chunk=20)
    torch.testing.assert_close(both[1:], alone, rtol=1e-10, atol=1e-10)
    assert bool(torch.isfinite(both).all())
