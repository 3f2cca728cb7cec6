"""Priors p(z) for a pack of G members; each builds a torch.distributions.Distribution.

A prior module holds its (possibly learnt) parameters, one row per member, and offers:
- `dist()`: the Distribution; factorised priors have event_shape () and broadcast against
  z (G, B, L); joint priors (the mixture) have event_shape (L,);
- `log_prob(z)`: (G, B) summed over latent dimensions;
- `sample_members(generators, n)`: (G, n, L), member g drawn from its own generator only, so a
  member's prior samples do not depend on the pack it is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution, Normal, StudentT, constraints
from torch.distributions.utils import broadcast_all

from harness.plugins import Registry
from harness.schema import Options, Param, positive, unit_interval_open

PCA_ROWS = 10_000  # examples used to estimate the covariance for the anisotropic prior
PCA_CHUNK = 1_000  # rows per matrix product while accumulating it
MIXTURE_CENTRES = ((0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0))


class SpikeAndSlab(Distribution):
    """p(z) = (1 - gamma) N(z; 0, 1) + gamma N(z; 0, spike_scale^2), per dimension.

    spike_scale is a standard deviation, as in the reference code (the paper's text calls 0.05 a
    variance). gamma = 0 is N(0, 1).
    """

    arg_constraints = {"gamma": constraints.unit_interval, "spike_scale": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, gamma, spike_scale, validate_args=None):
        self.gamma, self.spike_scale = broadcast_all(gamma, spike_scale)
        super().__init__(self.gamma.shape, validate_args=validate_args)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(z)
        slab = Normal(torch.zeros_like(self.spike_scale), 1.0).log_prob(z) + torch.log1p(-self.gamma)
        spike = Normal(torch.zeros_like(self.spike_scale), self.spike_scale).log_prob(z) + torch.log(self.gamma)
        return torch.logaddexp(slab, spike)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.gamma)

    @property
    def variance(self) -> torch.Tensor:
        return (1 - self.gamma) + self.gamma * self.spike_scale**2

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            spike = torch.rand(shape, dtype=self.gamma.dtype, device=self.gamma.device) < self.gamma
            return torch.randn(shape, dtype=self.gamma.dtype, device=self.gamma.device) * torch.where(
                spike, self.spike_scale, torch.ones_like(self.spike_scale))


class NormalMixture(Distribution):
    """A mixture of K diagonal Normals in D dimensions: a JOINT density over z in R^D.

    locs and scales are (..., K, D), weights (..., K) on the simplex (equal by default); the batch
    shape is their broadcast shape without (K, D) and the event shape is (D,), so log_prob(z) returns
    one value per D-vector: log sum_k w_k prod_d N(z_d; loc_kd, scale_kd^2). The component choice is
    discrete, so there is no rsample.
    """

    arg_constraints = {"locs": constraints.real, "scales": constraints.positive, "weights": constraints.simplex}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, locs, scales, weights=None, validate_args=None):
        self.locs, self.scales = broadcast_all(locs, scales)
        if weights is None:
            k = self.locs.shape[-2]
            weights = torch.full(self.locs.shape[:-1], 1.0 / k, dtype=self.locs.dtype, device=self.locs.device)
        self.weights = weights
        batch_shape = torch.broadcast_shapes(self.locs.shape[:-2], self.weights.shape[:-1])
        super().__init__(batch_shape, self.locs.shape[-1:], validate_args=validate_args)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...)."""
        if self._validate_args:
            self._validate_sample(z)
        per_component = Normal(self.locs, self.scales).log_prob(z.unsqueeze(-2)).sum(-1)  # (..., K)
        return torch.logsumexp(per_component + self.weights.log(), dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights.unsqueeze(-1) * self.locs).sum(-2).expand(self._extended_shape())

    @property
    def variance(self) -> torch.Tensor:
        """Per dimension: sum_k w_k (scale_kd^2 + loc_kd^2) - mean_d^2."""
        second = (self.weights.unsqueeze(-1) * (self.scales**2 + self.locs**2)).sum(-2)
        return (second - self.mean**2).expand(self._extended_shape())

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.sample_from(None, sample_shape)

    def sample_from(self, generator: torch.Generator | None, sample_shape=torch.Size()) -> torch.Tensor:
        """Draws (*sample_shape, *batch_shape, D) using only `generator` (the global one if None)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        device = self.locs.device if generator is None else generator.device
        with torch.no_grad():
            u = torch.rand(*shape, 1, generator=generator, dtype=self.locs.dtype, device=device).to(self.locs.device)
            noise = torch.randn(*shape, self.event_shape[0], generator=generator, dtype=self.locs.dtype,
                                device=device).to(self.locs.device)
            # inverse CDF of the component weights: k = number of cumulative weights below u
            k = (u > self.weights.cumsum(-1)[..., :-1]).sum(-1)  # (*shape,)
            index = k[..., None, None].expand(*shape, 1, self.event_shape[0])
            loc = self.locs.expand(*shape, *self.locs.shape[-2:]).gather(-2, index).squeeze(-2)
            scale = self.scales.expand(*shape, *self.scales.shape[-2:]).gather(-2, index).squeeze(-2)
            return loc + scale * noise


def student_t_polar(df: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n draws of StudentT(df, 0, 1) for each entry of df (L,) -> (n, L) float64, from `gen` only.

    Bailey's polar method (Math. Comp. 62, 1994): take (U, V) uniform on the unit disc and
    W = U^2 + V^2; then U sqrt(df (W^(-2/df) - 1) / W) is exactly Student-t with df degrees of freedom.
    torch's StudentT.sample cannot take a generator, hence this. Pairs outside the disc are rejected;
    every round draws a full (2, n, L) block and fills the entries still empty, so the stream of draws
    is a function of the generator alone.
    """
    df = df.to(torch.float64).to(gen.device)
    out = torch.zeros(n, *df.shape, dtype=torch.float64, device=gen.device)
    filled = torch.zeros_like(out, dtype=torch.bool)
    while not bool(filled.all()):
        u, v = 2 * torch.rand(2, *out.shape, generator=gen, dtype=torch.float64, device=gen.device) - 1
        w = u**2 + v**2
        accept = (w > 0) & (w < 1) & ~filled
        # W^(-2/df) - 1 as expm1 keeps precision for large df; NaN where rejected, never selected
        t = u * torch.sqrt(df * torch.expm1(-2 / df * torch.log(w)) / w)
        out = torch.where(accept, t, out)
        filled |= accept
    return out


def principal_variances(x: torch.Tensor, k: int, max_rows: int = PCA_ROWS) -> torch.Tensor:
    """The k largest principal variances of the examples x (N, *shape), descending, float64 (k,).

    The eigenvalues of the covariance of the flattened examples. The reference code took the k
    smallest (the wrong end of an ascending list); this takes the largest. With N > max_rows the
    covariance is estimated from max_rows examples picked by a fixed-seed permutation: deterministic,
    unbiased, and for dSprites (737,280 images of 4,096 pixels) 74 times cheaper than the full
    product; a top eigenvalue from 10,000 examples has a relative standard error of about
    sqrt(2 / 10,000) = 1.4% for Gaussian-like data, far below what the prior's log-variances need. The
    covariance (or, when there are fewer rows than pixels, the Gram matrix, which has the same non-zero
    eigenvalues) is accumulated in float64 chunk by chunk on x's device. Eigenvalues that round to
    zero or below are raised to 1e-12 of the largest so that their logarithm stays finite.
    """
    flat = x.reshape(len(x), -1)  # (N, D)
    n, dim = flat.shape
    if k > min(n, dim):
        raise ValueError(f"need at least {k} examples and {k} pixels for {k} principal variances, got {n} x {dim}")
    if n > max_rows:
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_rows]
        flat = flat[rows.to(flat.device)]
    m = len(flat)
    centre = flat.to(torch.float64).mean(0)
    if dim <= m:
        second = torch.zeros(dim, dim, dtype=torch.float64, device=flat.device)
        for chunk in flat.split(PCA_CHUNK):
            c = chunk.to(torch.float64) - centre  # (chunk, D)
            second += c.T @ c
    else:
        c = flat.to(torch.float64) - centre
        second = c @ c.T  # (m, m)
    eig = torch.linalg.eigvalsh(second / (m - 1)).flip(0)[:k]  # descending
    return eig.clamp_min(eig[0] * 1e-12).cpu()


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-member values as a (G, 1, 1) tensor, to broadcast against (G, B, L)."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


class PriorModule(nn.Module):
    """Base class: `latent` dims, one member per row; subclasses define dist() and member sampling.

    Every parameter and buffer holds one row per member, except those named in `shared`: they belong
    to the prior as a whole (e.g. the mixture's centres), and every member's checkpoint holds them whole.
    """

    shared: tuple[str, ...] = ()

    def __init__(self, members: Sequence[Options], latent: int):
        super().__init__()
        self.latent = latent
        self.register_buffer("anchor", torch.zeros(()))  # carries device and dtype
        self.groups = len(members)

    def dist(self) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(G, B, L) -> (G, B)."""
        d = self.dist()
        lp = d.log_prob(z)
        return lp.sum(-1) if d.event_shape == () else lp

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample_members(self, generators: Sequence[torch.Generator], n: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([self.sample_member(g, gen, n) for g, gen in enumerate(generators)])

    def _randn(self, gen: torch.Generator, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent, generator=gen, dtype=self.anchor.dtype, device=gen.device).to(
            self.anchor.device)

    def _rand(self, gen: torch.Generator, n: int) -> torch.Tensor:
        return torch.rand(n, self.latent, generator=gen, dtype=self.anchor.dtype, device=gen.device).to(
            self.anchor.device)


class SparsePrior(PriorModule):
    def __init__(self, members: Sequence[Options], latent: int):
        super().__init__(members, latent)
        self.gamma_values = [m["gamma"] for m in members]
        self.spike_values = [m["spike_scale"] for m in members]

    def dist(self) -> SpikeAndSlab:
        return SpikeAndSlab(_column(self.gamma_values, self.anchor), _column(self.spike_values, self.anchor))

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:
        spike = self._rand(gen, n) < self.gamma_values[g]
        noise = self._randn(gen, n)
        return noise * torch.where(spike, self.spike_values[g], 1.0)


class NormalPrior(PriorModule):
    """N(0, sigma_d^2), sigma_d = sqrt(scale * L * softmax(w)_d); w = 0 is isotropic N(0, scale I).

    `learn` says, per member, whether w is trained. Learning w changes only the relative allocation
    of the variance scale * L among the dimensions. Members that keep w fixed see it through detach(),
    so their gradient is exactly zero and Adam leaves them where they are.
    """

    def __init__(self, members: Sequence[Options], latent: int, log_variances: torch.Tensor | None = None,
                 learn: bool | Sequence[bool] = False):
        super().__init__(members, latent)
        self.scale_values = [m["scale"] for m in members]
        learn = [learn] * len(members) if isinstance(learn, bool) else list(learn)
        w = torch.zeros(len(members), latent) if log_variances is None else log_variances.clone()
        self.register_buffer("learn_mask", torch.tensor(learn, dtype=torch.bool).reshape(-1, 1))
        if any(learn):
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w)

    def stddev(self) -> torch.Tensor:
        """(G, 1, L)."""
        scale = _column(self.scale_values, self.anchor)
        w = torch.where(self.learn_mask, self.w, self.w.detach()).to(self.anchor.dtype)
        return torch.sqrt(scale * self.latent * torch.softmax(w, -1).unsqueeze(1))

    def dist(self) -> Normal:
        std = self.stddev()
        return Normal(torch.zeros_like(std), std)

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:
        return self._randn(gen, n) * self.stddev()[g]


class StudentTPrior(PriorModule):
    """StudentT(df, 0, 1) per latent dimension; df may differ per member (torch's StudentT)."""

    def __init__(self, members: Sequence[Options], latent: int):
        super().__init__(members, latent)
        self.df_values = [m["df"] for m in members]

    def dist(self) -> StudentT:
        df = _column(self.df_values, self.anchor)  # (G, 1, 1)
        return StudentT(df, torch.zeros_like(df), torch.ones_like(df))

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:
        df = torch.full((self.latent,), float(self.df_values[g]), dtype=torch.float64)
        return student_t_polar(df, n, gen).to(self.anchor)


class MixturePrior(PriorModule):
    """The clustering prior: four equally weighted 2-D Normals centred at (0, -1), (0, 1), (1, 0),
    (-1, 0), each with per-dimension variance `variance` (0.03 in the reference).

    log_prob is the log of the joint 2-D mixture density, counted once per datapoint. The reference
    code subtracted this joint log-density from a per-dimension log q(z|x) of shape (..., 2) before
    summing over dimensions, so it counted log p(z) twice; that is not copied here.
    """

    shared = ("centres",)  # the same four centres for every member

    def __init__(self, members: Sequence[Options], latent: int):
        if latent != 2:
            raise ValueError(f"the mixture prior is 2-D: it needs latent_dim = 2, got {latent}")
        super().__init__(members, latent)
        self.variance_values = [m["variance"] for m in members]
        self.register_buffer("centres", torch.tensor(MIXTURE_CENTRES))  # (K, 2)

    def _member_scales(self) -> torch.Tensor:
        """(G, 1, 1, 1): one std per member, to broadcast against locs (K, 2)."""
        return _column(self.variance_values, self.anchor).sqrt().unsqueeze(-1)

    def dist(self) -> NormalMixture:
        locs = self.centres.to(self.anchor.dtype).expand(self.groups, 1, *self.centres.shape)  # (G, 1, K, 2)
        return NormalMixture(locs, self._member_scales().expand_as(locs))

    def sample_member(self, g: int, gen: torch.Generator, n: int) -> torch.Tensor:
        locs = self.centres.to(self.anchor.dtype)
        member = NormalMixture(locs, torch.full_like(locs, math.sqrt(self.variance_values[g])))
        return member.sample_from(gen, (n,))


def _build_sparse(members, latent, data=None):
    return SparsePrior(members, latent)


def _build_normal(members, latent, data=None):
    return NormalPrior(members, latent)


def _build_anisotropic(members, latent, data=None):
    """w = log of the data's top-L principal variances (descending), the same for every member."""
    if data is None:
        raise ValueError("the anisotropic prior needs the training data: its variances are the data's principal "
                         "variances")
    log_variances = principal_variances(data.train_x, latent).log().to(torch.get_default_dtype())
    return NormalPrior(members, latent, log_variances.expand(len(members), latent),
                       learn=[m["learn"] for m in members])


def _build_student_t(members, latent, data=None):
    return StudentTPrior(members, latent)


def _build_mixture(members, latent, data=None):
    return MixturePrior(members, latent)


class PriorEntry(NamedTuple):
    """What a prior provides, built-in or plugin (harness.plugins): its options and a builder for a pack."""

    options: dict[str, Param]  # option -> type, default, range and help
    build: Callable[..., PriorModule]  # build(members: list[Options], latent, data) -> PriorModule


PRIORS = Registry("priors", {
    "sparse": PriorEntry({"gamma": unit_interval_open(0.0, "weight of the spike"),
                          "spike_scale": positive(0.05, "standard deviation of the spike")}, _build_sparse),
    "normal": PriorEntry({"scale": positive(1.0, "variance of each dimension")}, _build_normal),
    "anisotropic": PriorEntry({"scale": positive(1.0, "mean variance per dimension; the total is scale * L"),
                               "learn": Param(bool, False, "learn the allocation of the variance among dimensions")},
                              _build_anisotropic),
    "student_t": PriorEntry({"df": positive(9.0, "degrees of freedom")}, _build_student_t),
    "mixture": PriorEntry({"variance": positive(0.03, "variance of each component in each dimension")},
                          _build_mixture),
}, "prior", lambda entry: isinstance(entry, PriorEntry))


def prior_schemas() -> Mapping[str, dict[str, Param]]:
    """name -> options of every prior, a plugin's loaded only when its name is looked up."""
    return PRIORS.view(lambda entry: entry.options)


def build_prior(members: Sequence[Options], latent: int, data=None) -> PriorModule:
    """The prior of a pack: all members name the same prior; its parameters may differ per member."""
    names = {m.name for m in members}
    if len(names) != 1:
        raise ValueError(f"a pack needs one prior family, got {sorted(names)}")
    _, builder = PRIORS[members[0].name]
    return builder(list(members), latent, data)
