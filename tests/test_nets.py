"""Architectures: reference parameter counts, pack equivalence, and agreement with plain torch layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.models import nets
from harness.models.divergences import DIVERGENCES
from harness.models.grouped import GConv2d, GConvTranspose2d, GLinear, init_members
from harness.models.likelihoods import build_likelihood, likelihood_schemas
from harness.models.priors import build_prior, prior_schemas
from harness.models.vae import PackedVAE, objective
from harness.schema import resolve_options

# arch -> (latent, example shape, params per pixel, encoder params, decoder params) at G = 1
REFERENCE_COUNTS = {
    "conv32": (50, (1, 32, 32), 1, 369_636, 267_200),
    "conv64": (10, (1, 64, 64), 1, 249_172, 298_017),
    "mlp": (2, (2,), 2, 704, 704),
    "mlp400": (50, (1, 28, 28), 1, 354_100, 334_784),
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_architecture_has_reference_counts():
    assert set(REFERENCE_COUNTS) == set(nets.ARCHS)


@pytest.mark.parametrize("arch", sorted(REFERENCE_COUNTS))
def test_parameter_counts_match_the_reference(arch):
    latent, shape, ppp, n_enc, n_dec = REFERENCE_COUNTS[arch]
    encoder, decoder = nets.build(arch, 1, latent, shape, ppp)
    assert (count(encoder), count(decoder)) == (n_enc, n_dec)


@pytest.mark.parametrize("groups", [1, 3])
def test_counts_scale_with_the_pack(groups):
    latent, shape, ppp, n_enc, n_dec = REFERENCE_COUNTS["conv64"]
    encoder, decoder = nets.build("conv64", groups, latent, shape, ppp)
    assert (count(encoder), count(decoder)) == (groups * n_enc, groups * n_dec)


def _pack(arch: str, groups: int, latent: int, shape, ppp: int, seeds: list[int]):
    encoder, decoder = nets.build(arch, groups, latent, shape, ppp)
    encoder, decoder = encoder.double(), decoder.double()
    for g, seed in enumerate(seeds):
        gen = seeded(seed)
        init_members(encoder, g, gen)
        init_members(decoder, g, gen)
    return encoder, decoder


@pytest.mark.parametrize("arch", sorted(REFERENCE_COUNTS))
def test_pack_equals_separate_networks(arch):
    _, shape, ppp, _, _ = REFERENCE_COUNTS[arch]
    latent = 2 if arch == "mlp" else 4
    seeds = [11, 12, 13]
    gen = seeded(0)
    x = torch.rand(3, 5, *shape, generator=gen, dtype=torch.float64)  # (G, B, *shape)
    z = torch.randn(3, 5, latent, generator=gen, dtype=torch.float64)
    encoder, decoder = _pack(arch, 3, latent, shape, ppp, seeds)
    loc, scale = encoder(x)
    out = decoder(z)
    assert loc.shape == scale.shape == (3, 5, latent)
    assert out.shape == (3, 5, ppp, *shape)
    for g, seed in enumerate(seeds):
        single_encoder, single_decoder = _pack(arch, 1, latent, shape, ppp, [seed])
        single_loc, single_scale = single_encoder(x[g:g + 1])
        torch.testing.assert_close(loc[g:g + 1], single_loc, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(scale[g:g + 1], single_scale, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out[g:g + 1], single_decoder(z[g:g + 1]), rtol=1e-10, atol=1e-10)


def _plain_conv64(latent: int):
    """The reference's dSprites encoder and decoder written with plain torch layers."""
    encoder = nn.ModuleDict({
        "body": nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(1024, 128)),
        "c1": nn.Linear(128, latent), "c2": nn.Linear(128, latent)})
    decoder = nn.ModuleDict({
        "lin": nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 1024), nn.ReLU()),
        "dec": nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))})
    return encoder.double(), decoder.double()


@torch.no_grad()
def _copy_into_plain(grouped: nn.Module, plain: nn.Module) -> None:
    """Copy a G = 1 grouped network's parameters into plain layers, matching them in module order."""
    source = [m for m in grouped.modules() if isinstance(m, GConv2d | GConvTranspose2d | GLinear)]
    target = [m for m in plain.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
    assert len(source) == len(target)
    for s, t in zip(source, target, strict=True):
        if isinstance(s, GLinear):
            t.weight.copy_(s.weight[0].T)
            t.bias.copy_(s.bias[0, 0])
        else:
            t.weight.copy_(s.weight)
            t.bias.copy_(s.bias)


def test_conv64_computes_the_reference_network():
    latent = 10
    encoder, decoder = _pack("conv64", 1, latent, (1, 64, 64), 1, [5])
    plain_encoder, plain_decoder = _plain_conv64(latent)
    _copy_into_plain(encoder, plain_encoder)
    _copy_into_plain(decoder, plain_decoder)
    gen = seeded(1)
    x = torch.rand(6, 1, 64, 64, generator=gen, dtype=torch.float64)
    z = torch.randn(6, latent, generator=gen, dtype=torch.float64)
    h = plain_encoder["body"](x)
    loc, scale = encoder(x.unsqueeze(0))
    torch.testing.assert_close(loc[0], plain_encoder["c1"](h), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scale[0], torch.exp(0.5 * plain_encoder["c2"](h)) + 1e-6, rtol=1e-10, atol=1e-10)
    logits = plain_decoder["dec"](plain_decoder["lin"](z).view(-1, 64, 4, 4))  # (B, 1, 64, 64)
    torch.testing.assert_close(decoder(z.unsqueeze(0))[0, :, 0], logits, rtol=1e-10, atol=1e-10)


def test_mlp_computes_the_reference_network():
    encoder, decoder = _pack("mlp", 1, 2, (2,), 2, [3])
    body, fc21, fc22 = nn.Linear(2, 100).double(), nn.Linear(100, 2).double(), nn.Linear(100, 2).double()
    _copy_into_plain(encoder, nn.ModuleList([body, fc21, fc22]))
    x = torch.randn(7, 2, generator=seeded(2), dtype=torch.float64)
    h = torch.relu(body(x))
    loc, scale = encoder(x.unsqueeze(0))
    torch.testing.assert_close(loc[0], fc21(h), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scale[0], nn.functional.softplus(fc22(h)) + 1e-6, rtol=1e-10, atol=1e-10)
    # the decoder's one head holds the mean (first D outputs) then the raw std
    out = decoder(x.unsqueeze(0))[0]  # (B, 2, 2)
    head = decoder.head
    hidden = torch.relu(decoder.body(x.unsqueeze(0)))[0]
    torch.testing.assert_close(out[:, 0], hidden @ head.weight[0][:, :2] + head.bias[0, 0, :2])
    torch.testing.assert_close(out[:, 1], hidden @ head.weight[0][:, 2:] + head.bias[0, 0, 2:])


def test_default_init_is_torch_uniform_bound():
    """conv64's layers use PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with torch's fan_in."""
    encoder, decoder = _pack("conv64", 1, 10, (1, 64, 64), 1, [0])
    conv = encoder.body[2]  # Conv2d(32 -> 32): fan_in = 32 * 16
    deconv = decoder.body[4]  # ConvTranspose2d(64 -> 32): torch's fan_in = 32 * 16 (output channels)
    for layer in (conv, deconv):
        bound = 1 / math.sqrt(32 * 16)
        w = layer.weight
        assert w.abs().max() <= bound
        # uniform on [-b, b] has std b / sqrt(3); thousands of weights pin it within a few percent
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.03
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0


def test_conv32_keeps_its_normal_init():
    encoder, _ = _pack("conv32", 1, 50, (1, 32, 32), 1, [0])
    w = encoder.body[2].weight  # Conv(32 -> 64), 32,768 weights ~ N(0, 0.02)
    assert abs(w.std().item() / 0.02 - 1) < 0.03


def test_build_refuses_the_wrong_example_shape():
    with pytest.raises(ValueError, match="conv64"):
        nets.build("conv64", 1, 10, (1, 32, 32), 1)


def test_mlp400_takes_any_image_size():
    encoder, decoder = _pack("mlp400", 2, 5, (1, 32, 32), 2, [0, 1])
    loc, scale = encoder(torch.rand(2, 3, 1, 32, 32, dtype=torch.float64))
    assert loc.shape == (2, 3, 5) and bool((scale > 0).all())
    assert decoder(loc).shape == (2, 3, 2, 1, 32, 32)


# each experiment's architecture with its likelihood, prior and divergence
EXPERIMENTS = {
    "clustering": ("mlp", (2,), 2, "normal", {"name": "mixture"}, "kld_inc"),
    "independence": ("conv64", (1, 64, 64), 4, "bernoulli", {"name": "student_t", "df": 5.0}, "none"),
    "rotated": ("mlp400", (1, 28, 28), 6, "bernoulli", {"name": "sparse", "gamma": 0.8}, "mmd_dim"),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_a_few_adam_steps_lower_the_loss_of_every_member(experiment):
    """End to end through PackedVAE and the objective: 20 steps on one fixed batch of 8, two members."""
    arch, shape, latent, likelihood_name, prior_raw, divergence = EXPERIMENTS[experiment]
    likelihood = build_likelihood(resolve_options("likelihood", likelihood_name, "likelihood", likelihood_schemas()))
    prior = build_prior([resolve_options("prior", prior_raw, "prior", prior_schemas())] * 2, latent)
    model = PackedVAE(arch, 2, latent, shape, likelihood, prior)
    model.init_weights([seeded(1), seeded(2)])
    gen = seeded(0)
    x = torch.rand(2, 8, *shape, generator=gen)
    if likelihood_name == "bernoulli":
        x = (x > 0.7).float()
    alpha, beta = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    losses = []
    for _ in range(20):
        eps = torch.randn(2, 8, latent, generator=gen)
        prior_z = model.prior.sample_members([seeded(3), seeded(4)], 8)
        terms = objective(model, x, model(x, eps), prior_z, alpha, beta, DIVERGENCES[divergence])
        optimiser.zero_grad()
        terms.loss.sum().backward()
        optimiser.step()
        losses.append(terms.loss.detach())
    assert bool(torch.isfinite(torch.stack(losses)).all())
    assert bool((losses[-1] < losses[0]).all())
