"""The paper's reference implementation's values (tests/golden, a copy of shared/golden), reproduced
to 1e-9 relative, with no factor between the harness's value and the reference's."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from harness.metrics.hoyer import hoyer
from harness.models.divergences import kld_inc, mmd_dim
from harness.models.priors import SpikeAndSlab, build_prior
from harness.models.vae import Encoded, objective
from harness.schema import Options

REL = 1e-9


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_mmd_dim_matches_reference(golden):
    case = golden["mmd_dim"]
    x, y = _t(case["x"]), _t(case["y"])  # (B, L): prior samples, posterior samples
    d_hat = mmd_dim(y.unsqueeze(0), x.unsqueeze(0))[0].item()
    assert d_hat == pytest.approx(case["value"], rel=REL)


class _GivenLikelihood:
    """Returns the given per-datapoint log-likelihoods, whatever x and the decoder's output are."""

    def __init__(self, lpx_z: torch.Tensor):
        self.lpx_z = lpx_z

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.lpx_z


def _model_with_terms(lpx_z: torch.Tensor, kld: torch.Tensor, prior=None) -> SimpleNamespace:
    """A stand-in for PackedVAE whose likelihood and KL give the reference's per-datapoint terms, so
    that everything else (the weighting, the divergence) runs through `objective` as in training."""
    return SimpleNamespace(likelihood=_GivenLikelihood(lpx_z), kl=lambda enc: kld, prior=prior)


def test_batch_loss_matches_reference_through_objective(golden):
    """The reference's loss for one minibatch, -(lpx_z - beta kld - alpha reg).sum(), with reg the
    mmd_dim value broadcast over the batch: out of the same objective(...) call that training makes."""
    case, mmd = golden["batch_loss"], golden["mmd_dim"]
    x, y = _t(mmd["x"]).unsqueeze(0), _t(mmd["y"]).unsqueeze(0)  # (1, B, L): prior, posterior samples
    lpx_z, kld = _t(case["lpx_z"]).unsqueeze(0), _t(case["kld"]).unsqueeze(0)  # (1, B)
    batch = x.shape[1]
    assert lpx_z.shape == (1, batch)
    enc = Encoded(loc=y, scale=torch.ones_like(y), z=y, out=torch.zeros(1, batch, 1))
    terms = objective(_model_with_terms(lpx_z, kld), torch.zeros(1, batch, 1), enc, x,
                      _t([case["alpha"]]), _t([case["beta"]]), mmd_dim)
    assert terms.reg.item() == pytest.approx(case["reg"], rel=REL)
    assert terms.loss.item() == pytest.approx(case["value"], rel=REL)


def test_kld_inc_is_weighted_alpha_times_batch_through_objective():
    """kld_inc is estimated once per minibatch and counted once per datapoint, like mmd_dim: with every
    posterior equal to N(m, s), log q(z') is log N(z'; m, s) exactly, so D_hat has a closed form."""
    gen = torch.Generator().manual_seed(3)
    batch, m, s, alpha, beta = 8, 0.3, 0.7, 40.0, 2.0
    prior = build_prior([Options("normal", (("scale", 1.0),))], 2).double()
    prior_z = torch.randn(1, batch, 2, generator=gen, dtype=torch.float64)
    lpx_z = torch.randn(1, batch, generator=gen, dtype=torch.float64) * 10 - 100
    kld = torch.rand(1, batch, generator=gen, dtype=torch.float64) * 5
    loc, scale = torch.full((1, batch, 2), m, dtype=torch.float64), torch.full((1, batch, 2), s, dtype=torch.float64)
    enc = Encoded(loc=loc, scale=scale, z=loc, out=torch.zeros(1, batch, 1))
    terms = objective(_model_with_terms(lpx_z, kld, prior), torch.zeros(1, batch, 1), enc, prior_z,
                      _t([alpha]), _t([beta]), kld_inc)

    def log_normal(v: float, mu: float, sd: float) -> float:
        return -0.5 * ((v - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)

    d_hat = sum(log_normal(v, 0, 1) - log_normal(v, m, s) for v in prior_z.flatten().tolist()) / batch
    expected = sum(-a + beta * k for a, k in zip(lpx_z[0].tolist(), kld[0].tolist(), strict=True))
    expected += alpha * batch * d_hat
    assert terms.reg.item() == pytest.approx(d_hat, rel=REL)
    assert terms.loss.item() == pytest.approx(expected, rel=REL)


def test_mmd_dim_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 12, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    prior_z = torch.randn(2, 12, 3, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: mmd_dim(z, prior_z), (z,))


def test_sparse_log_density_matches_reference(golden):
    case = golden["sparse_log_prob"]
    prior = SpikeAndSlab(_t(case["gamma"]), _t(case["spike_std"]))
    got = prior.log_prob(_t(case["z"]))
    assert torch.allclose(got, _t(case["value"]), rtol=REL, atol=0)


def test_hoyer_matches_reference(golden):
    z = _t(golden["hoyer"]["z"])
    assert hoyer(z).item() == pytest.approx(golden["hoyer"]["normalised"], rel=REL)
    assert hoyer(z, normalise=False).item() == pytest.approx(golden["hoyer"]["unnormalised"], rel=REL)


def test_hoyer_known_answers():
    one_hot = torch.eye(8, dtype=torch.float64)
    assert hoyer(one_hot, normalise=False).item() == pytest.approx(1.0)
    dense = torch.ones(5, 8, dtype=torch.float64)
    assert hoyer(dense, normalise=False).item() == pytest.approx(0.0)
    # a dimension with no spread is left unscaled instead of dividing by zero
    guarded = torch.cat([torch.randn(6, 3, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64)], 1)
    assert torch.isfinite(hoyer(guarded))
