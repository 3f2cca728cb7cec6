"""Disentanglement scores of a representation against known generative factors (SPEC section 5).

Two scores, both pure functions of posterior means z (N, L) and integer factor indices (N, K):

- Kim & Mnih (FactorVAE) majority-vote score. "reference" is the protocol of Mathieu et al.'s code
  (iffsid/disentangling-disentanglement, src/metrics.py: compute_disentanglement), which the paper's
  numbers come from; "dlib" is disentanglement_lib's protocol
  (google-research/disentanglement_lib, evaluation/metrics/factor_vae.py, with the unsupervised study's
  settings), which prunes collapsed dimensions and scores held-out votes, so scores are comparable with
  the wider literature. Both are offered because they differ in ways that move the number.
- Mutual Information Gap (Chen et al. 2018) with disentanglement_lib's histogram discretisation
  (evaluation/metrics/mig.py and utils.py).

Votes are drawn in chunks of a fixed size from one explicit torch.Generator, so a score is reproducible
from its seed and memory stays bounded however many votes are asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Variant = Literal["reference", "dlib"]

# Elements of the (chunk, samples, L) gather held at once; fixed (not machine dependent) so that the
# random draws, and hence the score, depend only on the seed.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KimMnihProtocol:
    """How votes are drawn for one named variant of the Kim & Mnih score."""

    votes: int  # votes that build the table V (dlib: training votes)
    samples: int  # images per vote, all sharing the fixed factor's value
    eval_votes: int  # held-out votes scored with the majority classifier; 0 = score V itself
    variance_samples: int | None  # images (with replacement) for the global variances; None = the whole set
    prune_threshold: float  # dims with global std below this never get a vote (besides std 0, always)
    value: Literal["uniform", "marginal"]  # the fixed value: uniform over values present, or a random image's
    distinct: bool  # a vote's images are min(samples, n) distinct images (the reference); else with replacement


PROTOCOLS: dict[str, KimMnihProtocol] = {
    # Mathieu et al.: M = 20,000 votes of min(L = 1,000, n) distinct images, std over the whole set, value
    # uniform over the values present; the score is the majority-vote accuracy on the same votes.
    "reference": KimMnihProtocol(20_000, 1_000, 0, None, 0.0, "uniform", True),
    # disentanglement_lib, unsupervised_study_v1 factor_vae_metric.gin: batch_size = 64, num_train = 10,000,
    # num_eval = 5,000, num_variance_estimate = 10,000, prune_dims.threshold = 0.05. The value of the fixed
    # factor is that of a random draw of the factors (here: of a random image).
    # disentanglement_lib draws each vote's images from the generative factors, that is with replacement.
    "dlib": KimMnihProtocol(10_000, 64, 5_000, 10_000, 0.05, "marginal", False),
}


@dataclass(frozen=True)
class KimMnihResult:
    """Kim & Mnih score with the vote table it came from, so callers can store the table per dimension."""

    score: float  # reference: sum_d max_k V[d, k] / M; dlib: accuracy on the held-out votes
    train_accuracy: float  # majority-vote accuracy on the votes in `votes` (equals score for "reference")
    num_active_dims: int  # dims allowed to receive votes
    votes: torch.Tensor  # (L, K) int64 counts V[d, k] (dlib: training votes)
    eval_votes: torch.Tensor | None  # (L, K) int64 held-out counts (dlib only)


@dataclass(frozen=True)
class MigResult:
    """Mutual Information Gap with the MI table, so callers can see which dim carries which factor."""

    score: float  # mean over factors with H_k > 0 of (I_(1)[k] - I_(2)[k]) / H_k
    mutual_info: torch.Tensor  # (L, K) float64 nats, I[d, k] between discretised dim d and factor k
    factor_entropy: torch.Tensor  # (K,) float64 nats, H_k of the empirical factor distribution


def _check(z: torch.Tensor, factors: torch.Tensor, factor_sizes: Sequence[int]) -> None:
    """Reject inputs that would give a silently wrong score rather than an error."""
    if z.ndim != 2 or factors.ndim != 2 or z.shape[0] != factors.shape[0]:
        raise ValueError(f"expected z (N, L) and factors (N, K), got {tuple(z.shape)} and {tuple(factors.shape)}")
    if factors.shape[1] != len(factor_sizes):
        raise ValueError(f"factors has {factors.shape[1]} columns but factor_sizes has {len(factor_sizes)}")
    if factors.dtype.is_floating_point or factors.dtype == torch.bool:
        raise ValueError(f"factors must hold integer value indices, got {factors.dtype}")
    sizes = torch.as_tensor(list(factor_sizes), device=factors.device)
    if z.shape[0] == 0 or (factors < 0).any() or (factors >= sizes).any():
        raise ValueError("factors must be indices in [0, factor_sizes[k]) and N must be positive")
    if not torch.isfinite(z).all():
        raise ValueError("z has non-finite values (a diverged model?)")


# ----------------------------------------------------------------------------- Kim & Mnih (FactorVAE)


def kim_mnih(
    z: torch.Tensor,
    factors: torch.Tensor,
    factor_sizes: Sequence[int],
    generator: torch.Generator,
    *,
    votes: int | None = None,
    samples: int | None = None,
    variant: Variant = "reference",
) -> KimMnihResult:
    """Kim & Mnih (FactorVAE) disentanglement of z (N, L) given factor indices (N, K).

    Each vote fixes one factor k (uniform over factors) at one value, takes `samples` images having that
    value and votes for the dimension d with the lowest Var(z_d) / s_d^2, s_d^2 being the variance over the
    set (both unbiased). A disentangled code has one dimension per factor that goes still when its factor
    is fixed, so the majority vote per dimension is right almost always and the score is near 1; a code
    unrelated to the factors scores about 1/K. "reference" takes min(samples, n) distinct images of the n
    that have the value, as the reference code does (values held by one image only are never fixed: the
    variance of one image is undefined); "dlib" draws them with replacement. The reference scores the whole
    dataset: on a subset with few images per value (a 10,000-image split of dSprites has 250 to 312 per
    orientation or position) distinct and repeated draws give different numbers, and both differ from the
    whole set's (tests/test_disentanglement.py).

    votes, samples: override the variant's protocol (PROTOCOLS[variant]); for "dlib" `votes` is the
    number of training votes and the held-out votes are half as many, as in disentanglement_lib's
    10,000 / 5,000. Dimensions with zero spread never get a vote (the reference code would divide by
    zero and torch.argmin would pick the NaN, handing the constant dimension every vote); if no
    dimension may vote, the score is 0.
    """
    _check(z, factors, factor_sizes)
    protocol = PROTOCOLS[variant]
    if votes is not None:
        eval_votes = votes // 2 if protocol.eval_votes else 0
        protocol = dataclasses.replace(protocol, votes=votes, eval_votes=eval_votes)
    if samples is not None:
        protocol = dataclasses.replace(protocol, samples=samples)
    if protocol.samples < 2 or protocol.votes < 1:
        raise ValueError("need at least one vote and two samples per vote (a variance of one image is undefined)")

    n, latent = z.shape
    num_factors = len(factor_sizes)
    z64 = z.detach().to(torch.float64)
    if protocol.variance_samples is None:
        global_var = z64.var(dim=0)  # (L,)
    else:
        rows = torch.randint(n, (protocol.variance_samples,), generator=generator, device=generator.device)
        global_var = z64[rows.to(z.device)].var(dim=0)  # (L,)
    # Zero spread is tested on the range, not the variance: the variance of a constant column can come out
    # at 1e-34 rather than 0 because its mean is rounded.
    spread = z64.amax(dim=0) > z64.amin(dim=0)  # (L,)
    active = spread & (global_var > 0) & (global_var.sqrt() >= protocol.prune_threshold)  # (L,)

    empty = torch.zeros(latent, num_factors, dtype=torch.int64)
    if not active.any():
        return KimMnihResult(0.0, 0.0, 0, empty, empty.clone() if protocol.eval_votes else None)

    # 1 / s_d^2 on active dims, 0 elsewhere, so that inactive dims score +inf below.
    inv_var = torch.where(active, 1.0 / torch.where(active, global_var, 1.0), 0.0)  # (L,)
    groups = _Groups(factors, factor_sizes)
    zt = z.detach().T.contiguous()  # (L, N)
    table = _votes(zt, inv_var, active, groups, protocol, protocol.votes, generator)  # (L, K)
    # Majority-vote classifier: each dim predicts the factor it most often voted for (first on ties).
    classifier = table.argmax(dim=1)  # (L,)
    dims = torch.arange(latent)
    train_accuracy = table[dims, classifier].sum().item() / protocol.votes
    if not protocol.eval_votes:
        return KimMnihResult(train_accuracy, train_accuracy, int(active.sum()), table, None)
    held_out = _votes(zt, inv_var, active, groups, protocol, protocol.eval_votes, generator)  # (L, K)
    score = held_out[dims, classifier].sum().item() / protocol.eval_votes
    return KimMnihResult(score, train_accuracy, int(active.sum()), table, held_out)


class _Groups:
    """Images grouped by (factor, value), so a vote's images are a slice of one index array.

    Group g = offset[k] + v holds the images whose factor k has value v: they are
    order[start[g] : start[g] + count[g]].
    """

    def __init__(self, factors: torch.Tensor, factor_sizes: Sequence[int]):
        factors = factors.cpu().to(torch.int64)
        columns = factors.T.contiguous()  # (K, N): sorting a strided column is several times slower
        sizes = torch.as_tensor(list(factor_sizes), dtype=torch.int64)
        self.offset = torch.cumsum(sizes, 0) - sizes  # (K,)
        # Stable sort of each factor column, concatenated: K * N image indices.
        self.order = torch.sort(columns, dim=1, stable=True).indices.reshape(-1)  # (K * N,)
        self.count = torch.cat([torch.bincount(col, minlength=int(s)) for col, s in zip(columns, sizes, strict=True)])
        within = torch.cat([torch.cumsum(c, 0) - c for c in self.count.split(sizes.tolist())])  # (sum sizes,)
        self.start = within + torch.repeat_interleave(torch.arange(len(sizes)) * factors.shape[0], sizes)
        # Values that occur, per factor, as group ids: present[present_offset[k] + i] for i < present_count[k].
        self.present = torch.nonzero(self.count > 0).squeeze(1)  # (P,)
        self.present_count = torch.stack([(c > 0).sum() for c in self.count.split(sizes.tolist())])  # (K,)
        self.present_offset = torch.cumsum(self.present_count, 0) - self.present_count  # (K,)
        self.factors = factors
        self.sizes = sizes

    def voting(self, distinct: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(present, present_count, present_offset) of the values a vote may fix: those held by an image, or
        with distinct draws by two images at least (one image has no variance)."""
        if not distinct:
            return self.present, self.present_count, self.present_offset
        present = torch.nonzero(self.count > 1).squeeze(1)
        present_count = torch.stack([(c > 1).sum() for c in self.count.split(self.sizes.tolist())])
        return present, present_count, torch.cumsum(present_count, 0) - present_count


def _uniform_index(u: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """floor(u * size) for u in [0, 1), clamped so rounding can never reach size."""
    return torch.minimum((u * size).long(), size - 1)


def _votes(
    zt: torch.Tensor,
    inv_var: torch.Tensor,
    active: torch.Tensor,
    groups: _Groups,
    protocol: KimMnihProtocol,
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw `count` votes and return the table V (L, K) of how often each dim won for each factor.

    zt is z transposed (L, N), in z's own dtype as the reference computes the local variances.
    """
    latent, n = zt.shape
    num_factors = groups.offset.shape[0]
    dev = generator.device
    ks = torch.randint(num_factors, (count,), generator=generator, device=dev).cpu()  # (M,)
    if protocol.value == "uniform":
        u = torch.rand(count, generator=generator, dtype=torch.float64, device=dev).cpu()
        present, present_count, present_offset = groups.voting(protocol.distinct)
        if (present_count[ks] == 0).any():
            raise ValueError("a factor has no value held by two images or more: nothing to vote on")
        which = _uniform_index(u, present_count[ks])  # (M,)
        g = present[present_offset[ks] + which]  # (M,)
    else:
        rows = torch.randint(n, (count,), generator=generator, device=dev).cpu()
        g = groups.offset[ks] + groups.factors[rows, ks]  # (M,)

    chunk = max(1, _CHUNK_ELEMENTS // (protocol.samples * latent))
    winners = torch.empty(count, dtype=torch.int64)
    # Distinct draws sort each vote's candidates by random keys, so votes go in chunks of one factor (whose
    # values hold similar numbers of images) and the keys are as many as that factor's largest group.
    order = torch.sort(ks, stable=True).indices if protocol.distinct else torch.arange(count)
    for k in range(num_factors) if protocol.distinct else [None]:
        votes_k = order if k is None else order[ks[order] == k]
        for lo in range(0, len(votes_k), chunk):
            at = votes_k[lo : lo + chunk]  # (C,) vote numbers
            gc = g[at]
            if protocol.distinct:
                pick, weight = _distinct_picks(gc, groups, protocol.samples, generator)  # (C, S'), (C, S')
            else:
                u = torch.rand(len(gc), protocol.samples, generator=generator, dtype=torch.float64, device=dev).cpu()
                pick, weight = groups.start[gc, None] + _uniform_index(u, groups.count[gc, None]), None
            # Gathering columns of z^T keeps each dim's samples contiguous for the variance.
            images = zt.index_select(1, groups.order[pick.reshape(-1)].to(zt.device))  # (L, C * S')
            images = images.reshape(latent, *pick.shape)  # (L, C, S')
            if weight is None:
                local_var = images.var(dim=2).T  # (C, L)
            else:  # the unbiased variance over each vote's min(S, n) images
                w = weight.to(images.device, images.dtype)
                n_used = w.sum(1)  # (C,)
                mean = (images * w).sum(2) / n_used
                local_var = (((images - mean[..., None]) ** 2 * w).sum(2) / (n_used - 1)).T  # (C, L)
            ratio = local_var.to(torch.float64) * inv_var  # (C, L): Var(z_d / s_d) over the vote's images
            ratio = torch.where(active, ratio, torch.inf)
            winners[at] = ratio.argmin(dim=1).cpu()
    table = torch.zeros(latent, num_factors, dtype=torch.int64)
    table.index_put_((winners, ks), torch.ones(count, dtype=torch.int64), accumulate=True)
    return table


def _distinct_picks(gc: torch.Tensor, groups: _Groups, samples: int, generator: torch.Generator):
    """For each vote's group (C,), min(samples, n) distinct positions of its n images: the `samples` smallest
    of n uniform keys, as a random permutation's first `samples` (the reference's randperm(n)[:L]). Returns
    (positions into groups.order (C, S'), 1.0 where a position is used (C, S')), S' = min(samples, max n)."""
    counts = groups.count[gc]  # (C,)
    width = int(counts.max())
    keys = torch.rand(len(gc), width, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    beyond = torch.arange(width)[None, :] >= counts[:, None]  # (C, width): no image there
    keys = keys.masked_fill(beyond, torch.inf)
    taken = keys.topk(min(samples, width), dim=1, largest=False, sorted=False).indices  # (C, S')
    used = taken < counts[:, None]
    return groups.start[gc, None] + torch.where(used, taken, 0), used.to(torch.float64)


def student_t_to_normal(z: torch.Tensor, df: float) -> torch.Tensor:
    """The reference's change of measure for Student-t priors (analyse.py): each coordinate mapped through
    the prior's CDF and a standard Normal's inverse CDF, z' = Phi^-1(T_df(z)), so that codes distributed as
    the StudentT(df, 0, 1) prior come out N(0, 1). Computed in float64 on the tail each side falls in
    (Phi^-1(T(z)) below 0, -Phi^-1(T(-z)) above), so that no code rounds to an infinite z'; returns float64."""
    from scipy import stats

    x = z.detach().cpu().to(torch.float64).numpy()
    lower = stats.norm.ppf(stats.t.cdf(np.minimum(x, 0.0), df))
    upper = stats.norm.isf(stats.t.sf(np.maximum(x, 0.0), df))
    return torch.from_numpy(np.where(x < 0, lower, upper))


# ----------------------------------------------------------------------------- Mutual Information Gap


def histogram_discretize(z: torch.Tensor, bins: int = 20) -> torch.Tensor:
    """(N, L) -> (N, L) int64 bin indices in [1, bins], per dimension over its own range.

    As disentanglement_lib's _histogram_discretize: numpy's equal-width histogram edges from min to max
    (a constant dimension gets one bin), and np.digitize against all edges but the last, so the maximum
    falls in the top bin. numpy is used, in z's own dtype, so the edges match bit for bit.
    """
    z = z.detach().cpu()
    cols = (z if z.dtype in (torch.float32, torch.float64) else z.to(torch.float64)).numpy()  # (N, L)
    out = np.empty(cols.shape, dtype=np.int64)
    for d in range(cols.shape[1]):
        edges = np.histogram_bin_edges(cols[:, d], bins)
        out[:, d] = np.digitize(cols[:, d], edges[:-1])
    return torch.from_numpy(out)


def discrete_entropy(labels: torch.Tensor) -> torch.Tensor:
    """Plug-in entropy in nats of each column of non-negative int labels (N, K) -> (K,) float64."""
    out = []
    for col in labels.T:
        p = torch.bincount(col.cpu()).to(torch.float64) / col.shape[0]
        p = p[p > 0]
        out.append(-(p * p.log()).sum())
    return torch.stack(out)


def discrete_mutual_info(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plug-in MI in nats between every column of codes (N, L) and of labels (N, K) -> (L, K) float64.

    Same estimator as sklearn.metrics.mutual_info_score on the contingency table:
    sum_ij p_ij log(p_ij / (p_i p_j)); inputs are non-negative int64.
    """
    codes, labels = codes.cpu(), labels.cpu()
    n, latent = codes.shape
    nc = int(codes.max()) + 1
    out = torch.zeros(latent, labels.shape[1], dtype=torch.float64)
    for k, col in enumerate(labels.T):
        nl = int(col.max()) + 1
        # One bincount over (dim, code, label) gives every dim's contingency table for this factor.
        flat = (torch.arange(latent) * nc)[None, :] + codes  # (N, L)
        joint = torch.bincount((flat * nl + col[:, None]).reshape(-1), minlength=latent * nc * nl)
        joint = joint.reshape(latent, nc, nl).to(torch.float64) / n  # (L, nc, nl)
        pc = joint.sum(2, keepdim=True)  # (L, nc, 1)
        pl = joint.sum(1, keepdim=True)  # (L, 1, nl)
        terms = joint * (joint / (pc * pl)).log()
        out[:, k] = torch.where(joint > 0, terms, 0.0).sum((1, 2))
    return out.clamp_min(0.0)  # rounding can leave -1e-17 where MI is 0


def mig(z: torch.Tensor, factors: torch.Tensor, factor_sizes: Sequence[int], *, bins: int = 20) -> MigResult:
    """Mutual Information Gap of z (N, L) given factor indices (N, K), as in disentanglement_lib.

    Each dimension is discretised into `bins` equal-width bins; I[d, k] is the plug-in MI between
    discretised dim d and factor k, H_k the factor's entropy; MIG = mean over k of
    (largest - second largest of I[:, k]) / H_k. It rewards one dimension per factor and penalises a
    factor spread over (or duplicated in) several dimensions. Factors taking one value (H_k = 0) carry
    nothing to capture and are left out of the mean (disentanglement_lib would divide by zero); with one
    latent dimension the second largest is 0.
    """
    _check(z, factors, factor_sizes)
    codes = histogram_discretize(z, bins)  # (N, L)
    info = discrete_mutual_info(codes, factors)  # (L, K)
    entropy = discrete_entropy(factors)  # (K,)
    varying = entropy > 0
    if not varying.any():
        raise ValueError("no factor takes more than one value: MIG is undefined")
    top = info.sort(dim=0, descending=True).values  # (L, K)
    second = top[1] if top.shape[0] > 1 else torch.zeros_like(top[0])
    gap = (top[0] - second)[varying] / entropy[varying]
    return MigResult(gap.mean().item(), info, entropy)
