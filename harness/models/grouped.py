"""Layers of a packed network: G independent members computed as one grouped network.

Activations of images travel as (B, G*C, H, W) so that grouped convolutions keep members apart;
vectors travel as (G, B, D). Every layer initialises one member at a time from that member's own
generator, in a fixed order, so a member's initial weights do not depend on the pack it is in.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pack_images(x: torch.Tensor) -> torch.Tensor:
    """(G, B, C, H, W) -> (B, G*C, H, W)."""
    g, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, g * c, h, w)


def unpack_images(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, G*C, H, W) -> (G, B, C, H, W)."""
    b, gc, h, w = x.shape
    return x.reshape(b, groups, gc // groups, h, w).transpose(0, 1)


class MemberInit:
    """Mixin: layers that know how to initialise one member's slice of their parameters."""

    def init_member(self, g: int, gen: torch.Generator) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _normal_(t: torch.Tensor, std: float, gen: torch.Generator) -> None:
    t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype, device="cpu").to(t.device) * std)


def _uniform_(t: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    u = torch.rand(t.shape, generator=gen, dtype=t.dtype, device="cpu").to(t.device)
    t.copy_((2 * u - 1) * bound)


def _init_conv_member(weight: torch.Tensor, bias: torch.Tensor | None, std: float | None,
                      gen: torch.Generator) -> None:
    """One member's slice of a (transposed) convolution, laid out as a plain layer's parameters.

    std = None is PyTorch's default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where
    fan_in = weight.shape[1] * k * k exactly as torch computes it (for a transposed convolution that
    is the number of OUTPUT channels, a quirk of torch kept so that members match plain layers).
    Otherwise weight ~ N(0, std) and bias = 0.
    """
    if std is None:
        bound = 1.0 / math.sqrt(weight[0].numel())
        _uniform_(weight, bound, gen)
        if bias is not None:
            _uniform_(bias, bound, gen)
        return
    _normal_(weight, std, gen)
    if bias is not None:
        bias.zero_()


class GConv2d(nn.Conv2d, MemberInit):
    """Conv2d over G members (groups=G); weights ~ N(0, std), bias (if any) zero; std=None: torch's default."""

    def __init__(self, groups: int, cin: int, cout: int, k: int, s: int = 1, p: int = 0, bias: bool = False,
                 std: float | None = 0.02):
        super().__init__(groups * cin, groups * cout, k, s, p, bias=bias, groups=groups)
        self.members, self.cout, self.std = groups, cout, std

    @torch.no_grad()
    def init_member(self, g: int, gen: torch.Generator) -> None:
        rows = slice(g * self.cout, (g + 1) * self.cout)  # weight: (G*cout, cin, k, k)
        _init_conv_member(self.weight[rows], None if self.bias is None else self.bias[rows], self.std, gen)


class GConvTranspose2d(nn.ConvTranspose2d, MemberInit):
    """ConvTranspose2d over G members; weights ~ N(0, std), bias (if any) zero; std=None: torch's default."""

    def __init__(self, groups: int, cin: int, cout: int, k: int, s: int = 1, p: int = 0, bias: bool = False,
                 std: float | None = 0.02):
        super().__init__(groups * cin, groups * cout, k, s, p, bias=bias, groups=groups)
        self.members, self.cin, self.cout, self.std = groups, cin, cout, std

    @torch.no_grad()
    def init_member(self, g: int, gen: torch.Generator) -> None:
        # weight: (G*cin, cout, k, k); member g owns input rows g*cin .. (g+1)*cin
        bias = None if self.bias is None else self.bias[g * self.cout:(g + 1) * self.cout]
        _init_conv_member(self.weight[g * self.cin:(g + 1) * self.cin], bias, self.std, gen)


class GBatchNorm2d(nn.BatchNorm2d, MemberInit):
    """BatchNorm over (B, G*C, H, W): per channel, hence per member. Affine starts at (1, 0)."""

    def __init__(self, groups: int, channels: int):
        super().__init__(groups * channels)
        self.channels = channels

    @torch.no_grad()
    def init_member(self, g: int, gen: torch.Generator) -> None:
        rows = slice(g * self.channels, (g + 1) * self.channels)
        self.weight[rows].fill_(1.0)
        self.bias[rows].zero_()
        self.running_mean[rows].zero_()
        self.running_var[rows].fill_(1.0)


class GLinear(nn.Module, MemberInit):
    """G independent Linear layers: (G, B, din) -> (G, B, dout); PyTorch's default uniform init."""

    def __init__(self, groups: int, din: int, dout: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, din, dout))
        self.bias = nn.Parameter(torch.empty(groups, 1, dout)) if bias else None
        self.din = din

    @torch.no_grad()
    def init_member(self, g: int, gen: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.din)
        # draw in nn.Linear's (dout, din) layout so a member matches a plain Linear seeded alike
        w = torch.empty(self.weight.shape[2], self.din, dtype=self.weight.dtype)
        _uniform_(w, bound, gen)
        self.weight[g].copy_(w.T)
        if self.bias is not None:
            _uniform_(self.bias[g], bound, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


def init_members(module: nn.Module, g: int, gen: torch.Generator) -> None:
    """Initialise member `g` of every grouped layer in `module`, in module order."""
    for layer in module.modules():
        if isinstance(layer, MemberInit):
            layer.init_member(g, gen)
