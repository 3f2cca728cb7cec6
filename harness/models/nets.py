"""Encoders and decoders as packed (grouped) networks, with the reference parameter counts.

Contract: an encoder maps x (G, B, *example_shape) to (loc, scale) of a diagonal Normal, each
(G, B, L); a decoder maps z (G, B, L) to the likelihood's raw parameters, (G, B, P, *example_shape)
where P is the likelihood's number of parameters per pixel (1 or 2). Constructors take
(groups, latent, example_shape) and, for decoders, params_per_pixel.

Initialisation: conv32 follows the reference's N(0, 0.02) convolutions without bias; conv64, mlp and
mlp400 use PyTorch's default initialisation for every layer (as the reference did for conv64 and mlp),
drawn member by member from each member's generator (harness.models.grouped).

Precision: every encoder and decoder is a PackedNet, whose `autocast` (None, or a lower precision such
as torch.bfloat16) runs its layers under torch.autocast and hands its outputs back in its input's dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.grouped import GBatchNorm2d, GConv2d, GConvTranspose2d, GLinear, pack_images, unpack_images
from harness.plugins import Registry

EPS_STD = 1e-6  # added to every posterior standard deviation, as in the reference


class PackedNet(nn.Module):
    """An encoder or decoder: `compute` is the architecture; `forward` runs it in the precision asked.

    With `autocast` set, convolutions and matrix products run in that precision (torch.autocast on the
    input's device) and the outputs come back in the input's dtype (float32), so that what follows them,
    the likelihood, the KL, D_hat and their sums over the batch, is computed in float32 whoever calls the
    network (the training step, evaluation, the IWAE estimate).
    """

    autocast: torch.dtype | None = None

    def compute(self, inputs: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor):
        if self.autocast is None:
            return self.compute(inputs)
        with torch.autocast(inputs.device.type, dtype=self.autocast):
            out = self.compute(inputs)
        if isinstance(out, tuple):
            return tuple(t.to(inputs.dtype) for t in out)
        return out.to(inputs.dtype)


class Conv32Encoder(PackedNet):
    """conv32 (sparsity experiment), 1x32x32 images; 369,636 parameters at L = 50 (and G = 1)."""

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (1, 32, 32)):
        super().__init__()
        g = self.groups = groups
        self.body = nn.Sequential(
            GConv2d(g, example_shape[0], 32, 4, 2, 1), nn.LeakyReLU(0.2),
            GConv2d(g, 32, 64, 4, 2, 1), GBatchNorm2d(g, 64), nn.LeakyReLU(0.2),
            GConv2d(g, 64, 128, 4, 2, 1), GBatchNorm2d(g, 128), nn.LeakyReLU(0.2),
        )
        self.loc = GConv2d(g, 128, latent, 4, bias=True)
        self.raw_scale = GConv2d(g, 128, latent, 4, bias=True)

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(pack_images(x))  # (B, G*128, 4, 4)
        loc = unpack_images(self.loc(h), self.groups).flatten(2)  # (G, B, L)
        scale = F.softplus(unpack_images(self.raw_scale(h), self.groups).flatten(2)) + EPS_STD
        return loc, scale


class Conv32Decoder(PackedNet):
    """conv32 decoder; 267,200 parameters at L = 50. Output: the likelihood's location(s)."""

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (1, 32, 32),
                 params_per_pixel: int = 1):
        super().__init__()
        g = self.groups = groups
        self.out_channels = example_shape[0] * params_per_pixel
        self.params_per_pixel = params_per_pixel
        self.body = nn.Sequential(
            GConvTranspose2d(g, latent, 128, 4, 1, 0), GBatchNorm2d(g, 128), nn.ReLU(),
            GConvTranspose2d(g, 128, 64, 4, 2, 1), GBatchNorm2d(g, 64), nn.ReLU(),
            GConvTranspose2d(g, 64, 32, 4, 2, 1), GBatchNorm2d(g, 32), nn.ReLU(),
            GConvTranspose2d(g, 32, self.out_channels, 4, 2, 1),
        )

    def compute(self, z: torch.Tensor) -> torch.Tensor:
        g, b, latent = z.shape
        h = z.transpose(0, 1).reshape(b, g * latent, 1, 1)
        out = unpack_images(self.body(h), self.groups)  # (G, B, P*C, 32, 32)
        return out.reshape(g, b, self.params_per_pixel, -1, *out.shape[-2:])


def _conv(g: int, cin: int, cout: int) -> GConv2d:
    """Conv(k4 s2 p1) with bias and PyTorch's default initialisation: halves the image side."""
    return GConv2d(g, cin, cout, 4, 2, 1, bias=True, std=None)


def _deconv(g: int, cin: int, cout: int) -> GConvTranspose2d:
    """ConvTranspose(k4 s2 p1) with bias and PyTorch's default initialisation: doubles the image side."""
    return GConvTranspose2d(g, cin, cout, 4, 2, 1, bias=True, std=None)


class Conv64Encoder(PackedNet):
    """conv64 (independence experiment), 1x64x64 images; 249,172 parameters at L = 10 (G = 1).

    Four Conv(k4 s2 p1) with 32, 32, 64, 64 channels, each followed by ReLU; Linear(1024 -> 128) with
    no activation (as in the reference); heads for the mean and the log-variance, with
    std = exp(logvar / 2) + 1e-6.
    """

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (1, 64, 64)):
        super().__init__()
        g = self.groups = groups
        self.body = nn.Sequential(
            _conv(g, example_shape[0], 32), nn.ReLU(),
            _conv(g, 32, 32), nn.ReLU(),
            _conv(g, 32, 64), nn.ReLU(),
            _conv(g, 64, 64), nn.ReLU(),
        )
        self.hidden = GLinear(g, 64 * 4 * 4, 128)
        self.loc = GLinear(g, 128, latent)
        self.log_var = GLinear(g, 128, latent)

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = unpack_images(self.body(pack_images(x)), self.groups)  # (G, B, 64, 4, 4)
        h = self.hidden(h.flatten(2))  # (G, B, 128), flattened in (C, H, W) order like the reference
        return self.loc(h), torch.exp(0.5 * self.log_var(h)) + EPS_STD


class Conv64Decoder(PackedNet):
    """conv64 decoder; 298,017 parameters at L = 10 with Bernoulli logits (P = 1).

    Linear(L -> 128) ReLU Linear(128 -> 1024) ReLU, reshaped to 64x4x4, then ConvTranspose(k4 s2 p1)
    with 64, 64, 32 and P*C channels, ReLU between. The last layer's output is returned as it is
    (e.g. Bernoulli logits, never clamped).
    """

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (1, 64, 64),
                 params_per_pixel: int = 1):
        super().__init__()
        g = self.groups = groups
        self.params_per_pixel = params_per_pixel
        self.hidden = nn.Sequential(GLinear(g, latent, 128), nn.ReLU(), GLinear(g, 128, 64 * 4 * 4), nn.ReLU())
        self.body = nn.Sequential(
            _deconv(g, 64, 64), nn.ReLU(),
            _deconv(g, 64, 64), nn.ReLU(),
            _deconv(g, 64, 32), nn.ReLU(),
            _deconv(g, 32, example_shape[0] * params_per_pixel),
        )

    def compute(self, z: torch.Tensor) -> torch.Tensor:
        g, b, _ = z.shape
        h = self.hidden(z).reshape(g, b, 64, 4, 4)
        out = unpack_images(self.body(pack_images(h)), self.groups)  # (G, B, P*C, 64, 64)
        return out.reshape(g, b, self.params_per_pixel, -1, *out.shape[-2:])


class MlpEncoder(PackedNet):
    """mlp (clustering experiment): Linear(D -> 100) ReLU, then heads Linear(100 -> L) for the mean
    and softplus(Linear(100 -> L)) + 1e-6 for the std. 704 parameters at D = L = 2 (G = 1).

    Examples of any shape are flattened to D = their number of entries.
    """

    hidden_units = 100

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (2,)):
        super().__init__()
        width = self.hidden_units
        self.body = nn.Sequential(GLinear(groups, math.prod(example_shape), width), nn.ReLU())
        self.loc = GLinear(groups, width, latent)
        self.raw_scale = GLinear(groups, width, latent)

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.flatten(2))  # (G, B, hidden)
        return self.loc(h), F.softplus(self.raw_scale(h)) + EPS_STD


class MlpDecoder(PackedNet):
    """mlp decoder: Linear(L -> 100) ReLU, then one Linear(100 -> P*D) head holding the P raw
    parameters per entry (for the Normal likelihood: the mean and the raw std, which the likelihood
    passes through softplus). One head of P*D outputs has exactly the parameters and the initial
    distribution of the reference's P separate heads: 704 parameters at L = D = 2, P = 2.
    """

    hidden_units = 100

    def __init__(self, groups: int, latent: int, example_shape: tuple[int, ...] = (2,), params_per_pixel: int = 1):
        super().__init__()
        width = self.hidden_units
        self.example_shape, self.params_per_pixel = tuple(example_shape), params_per_pixel
        self.body = nn.Sequential(GLinear(groups, latent, width), nn.ReLU())
        self.head = GLinear(groups, width, params_per_pixel * math.prod(example_shape))

    def compute(self, z: torch.Tensor) -> torch.Tensor:
        g, b, _ = z.shape
        out = self.head(self.body(z))  # (G, B, P*D)
        return out.reshape(g, b, self.params_per_pixel, *self.example_shape)


class Mlp400Encoder(MlpEncoder):
    """mlp400 (Rotated-MNIST, from the report): 784 -> 400 ReLU -> heads for the mean and the std.

    The std head is softplus(.) + 1e-6 like conv32 and mlp (the report's 2L outputs, split in two
    heads of L: the same parameters). 354,100 parameters for 1x28x28 images at L = 50.
    """

    hidden_units = 400


class Mlp400Decoder(MlpDecoder):
    """mlp400 decoder: L -> 400 ReLU -> P*784; 334,784 parameters for 1x28x28 images at L = 50, P = 1."""

    hidden_units = 400


class ArchEntry(NamedTuple):
    """What an architecture provides, built-in or plugin (harness.plugins)."""

    encoder: type[PackedNet]  # encoder(groups, latent, example_shape) -> (loc, scale), each (G, B, L)
    decoder: type[PackedNet]  # decoder(groups, latent, example_shape, params_per_pixel)
    shape: tuple[int, ...] | None  # the example shape it is built for, or None for any


ARCHS = Registry("archs", {
    "conv32": ArchEntry(Conv32Encoder, Conv32Decoder, (1, 32, 32)),
    "conv64": ArchEntry(Conv64Encoder, Conv64Decoder, (1, 64, 64)),
    "mlp": ArchEntry(MlpEncoder, MlpDecoder, None),
    "mlp400": ArchEntry(Mlp400Encoder, Mlp400Decoder, None),
}, "architecture", lambda entry: isinstance(entry, ArchEntry))


def build(arch: str, groups: int, latent: int, example_shape: tuple[int, ...], params_per_pixel: int,
          autocast: torch.dtype | None = None) -> tuple[PackedNet, PackedNet]:
    """(encoder, decoder) of architecture `arch` for G = `groups` members, computing in `autocast`
    precision where given (see PackedNet)."""
    encoder_cls, decoder_cls, shape = ARCHS[arch]
    if shape is not None and tuple(example_shape) != shape:
        raise ValueError(f"architecture '{arch}' needs examples shaped {shape}, the dataset has {tuple(example_shape)}")
    shape = tuple(example_shape)
    encoder, decoder = encoder_cls(groups, latent, shape), decoder_cls(groups, latent, shape, params_per_pixel)
    encoder.autocast = decoder.autocast = autocast
    return encoder, decoder
