"""The packed VAE and the decomposition objective (SPEC section 1).

L_ab(x) = E_q[log p(x|z)] - beta KL(q(z|x) || p(z)) - alpha D(q(z), p(z)); the batch loss of a
member is sum_i [-log p(x_i|z_i) + beta KL_i] + alpha * B * D_hat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from harness.models import nets
from harness.models.grouped import init_members
from harness.models.priors import PriorModule


@dataclass(frozen=True)
class Encoded:
    loc: torch.Tensor  # (G, B, L)
    scale: torch.Tensor  # (G, B, L)
    z: torch.Tensor  # (G, B, L) reparameterised sample
    out: torch.Tensor  # (G, B, P, *example_shape) the decoder's raw output


@dataclass(frozen=True)
class Terms:
    """Per member (G,): batch loss and its parts as per-datapoint means."""

    loss: torch.Tensor  # batch loss: sum over datapoints, what backward() sees
    recon: torch.Tensor  # mean log p(x|z)
    kl: torch.Tensor  # mean KL(q(z|x) || p(z))
    reg: torch.Tensor  # D_hat
    elbo: torch.Tensor  # mean (recon - kl)


class PackedVAE(nn.Module):
    """G independent VAEs (encoder, decoder, prior) computed as one grouped network."""

    def __init__(self, arch: str, groups: int, latent: int, example_shape: tuple[int, ...], likelihood,
                 prior: PriorModule, autocast: torch.dtype | None = None):
        super().__init__()
        self.groups, self.latent, self.likelihood = groups, latent, likelihood
        # autocast (e.g. torch.bfloat16) lowers the networks' precision only: their outputs, z, and so the
        # objective's log-densities, KL, D_hat and sums stay in the model's dtype (nets.PackedNet)
        self.encoder, self.decoder = nets.build(arch, groups, latent, example_shape, likelihood.params_per_pixel,
                                                autocast)
        self.prior = prior

    def init_weights(self, generators: list[torch.Generator]) -> None:
        """Member g's weights from generators[g] only (encoder first, then decoder)."""
        for g, gen in enumerate(generators):
            init_members(self.encoder, g, gen)
            init_members(self.decoder, g, gen)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> Encoded:
        """x (G, B, *shape), eps (G, B, L) standard normal noise."""
        loc, scale = self.encoder(x)  # (G, B, L) each, in x's dtype whatever the networks' precision
        z = loc + scale * eps
        return Encoded(loc, scale, z, self.decoder(z))

    def kl(self, enc: Encoded) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per datapoint, (G, B)."""
        return kl_terms(enc.loc, enc.scale, enc.z, self.prior)


def kl_terms(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor, prior: PriorModule) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per datapoint, (G, B): analytic where torch registers it, else the one-sample
    estimate log q(z|x) - log p(z) on the same z."""
    q = Normal(loc, scale)
    p = prior.dist()
    if isinstance(p, Normal):
        return kl_divergence(q, p).sum(-1)
    return q.log_prob(z).sum(-1) - prior.log_prob(z)


def objective(model: PackedVAE, x: torch.Tensor, enc: Encoded, prior_z: torch.Tensor, alpha: torch.Tensor,
              beta: torch.Tensor, divergence) -> Terms:
    """The decomposition objective's terms per member; alpha and beta are (G,) tensors.

    D_hat is estimated once per minibatch and counted once per datapoint, so the batch loss holds
    alpha * B * D_hat (the reference broadcasts the scalar over the batch before `obj.sum()`).
    """
    batch = x.shape[1]
    recon = model.likelihood.log_prob(x, enc.out)  # (G, B)
    kl = model.kl(enc)  # (G, B)
    reg = divergence(enc.z, prior_z, enc.loc, enc.scale, model.prior)  # (G,)
    loss = (-recon + beta.unsqueeze(1) * kl).sum(1) + alpha * batch * reg
    return Terms(loss=loss, recon=recon.mean(1), kl=kl.mean(1), reg=reg, elbo=(recon - kl).mean(1))
