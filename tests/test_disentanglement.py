"""Known answers for the disentanglement metrics on synthetic codes with explicit generators.

A code that copies the factors (permuted, rescaled, with tiny noise) must score 1 on Kim & Mnih and
near 1 on MIG; a code independent of the factors scores about 1/K and near 0; constant dimensions are
ignored rather than turned into NaN; the same seed gives the same votes.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.metrics import disentanglement
from harness.metrics.disentanglement import (
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    kim_mnih,
    mig,
)
from harness.metrics.factor_info import factor_information

SIZES = (3, 5, 8)  # at most 20 values each, so a 20-bin histogram of a copied factor separates every value
N = 3000
PERM = (2, 0, 1)  # latent dim d copies factor PERM[d]
SCALES = (0.5, 3.0, 20.0)
FAST = {"votes": 1000, "samples": 100}  # each kim_mnih call below takes well under a second


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_factors(seed: int = 0, sizes: tuple[int, ...] = SIZES, n: int = N) -> torch.Tensor:
    """(n, K) independent uniform factor indices."""
    g = seeded(seed)
    return torch.stack([torch.randint(s, (n,), generator=g) for s in sizes], dim=1)


def copy_code(factors: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """(N, K) z_d = SCALES[d] * factor PERM[d] + N(0, 1e-3^2): perfectly disentangled up to the noise."""
    noise = 1e-3 * torch.randn(factors.shape, generator=seeded(seed))
    return factors[:, list(PERM)].float() * torch.tensor(SCALES) + noise


def random_code(seed: int = 2, n: int = N, latent: int = len(SIZES)) -> torch.Tensor:
    """(N, L) standard normal, independent of every factor."""
    return torch.randn(n, latent, generator=seeded(seed))


def expected_table_support() -> torch.Tensor:
    """(L, K) bool: where a perfect copy's votes may land, V[d, k] > 0 iff dim d copies factor k."""
    return torch.nn.functional.one_hot(torch.tensor(PERM), len(SIZES)).bool()


# ----------------------------------------------------------------------------- Kim & Mnih


@pytest.mark.parametrize("variant", ["reference", "dlib"])
def test_kim_mnih_perfect_copy_scores_one(variant):
    factors = make_factors()
    result = kim_mnih(copy_code(factors), factors, SIZES, seeded(3), variant=variant, **FAST)
    # Fixing factor k freezes exactly one dim (variance ~1e-6 against ~1 for the others), so every vote
    # is right and the score is exactly 1, not just close.
    assert result.score == 1.0
    assert result.train_accuracy == 1.0
    assert result.num_active_dims == 3
    assert result.votes.shape == (3, 3) and result.votes.dtype == torch.int64
    assert torch.equal(result.votes > 0, expected_table_support())
    assert int(result.votes.sum()) == FAST["votes"]
    if variant == "dlib":
        assert result.eval_votes is not None and int(result.eval_votes.sum()) == FAST["votes"] // 2
        assert torch.equal(result.eval_votes > 0, expected_table_support())
    else:
        assert result.eval_votes is None


def test_kim_mnih_random_code_scores_about_one_over_k():
    factors = make_factors()
    k = len(SIZES)
    result = kim_mnih(random_code(), factors, SIZES, seeded(3), votes=2000, samples=100)
    # sum_d max_k V[d, k] >= sum_d mean_k V[d, k] = M / K, so 1/K is a hard floor; the excess is the
    # expected maximum of K multinomial cells, about 0.02 at M = 2000 with L = K = 3, so 0.05 is ~5 sd.
    assert 1 / k <= result.score < 1 / k + 0.05
    assert result.votes.sum(1).min() > 2000 / k * 0.8  # the winning dim is uniform over dims, not stuck


def test_kim_mnih_dlib_random_code_scores_about_one_over_k():
    factors = make_factors()
    result = kim_mnih(random_code(), factors, SIZES, seeded(3), variant="dlib", votes=2000, samples=64)
    # Held-out accuracy of a classifier learnt from noise: 1/K in expectation, sd ~ 0.015 on 1000 votes.
    assert abs(result.score - 1 / 3) < 0.06
    assert result.num_active_dims == 3
    # The classifier is each dim's majority factor on the training votes; the score is its accuracy on the
    # held-out votes, while the training accuracy, like the reference score, can never fall below 1/K.
    classifier = result.votes.argmax(dim=1)  # (L,)
    held_out = result.eval_votes[torch.arange(3), classifier].sum().item() / result.eval_votes.sum().item()
    assert result.score == held_out
    assert result.train_accuracy == result.votes.max(dim=1).values.sum().item() / 2000 >= 1 / 3


@pytest.mark.parametrize("variant", ["reference", "dlib"])
def test_kim_mnih_constant_dim_gets_no_vote_and_no_nan(variant):
    factors = make_factors()
    z = torch.cat([copy_code(factors), torch.full((N, 1), 0.1)], dim=1)  # (N, 4), last dim constant
    result = kim_mnih(z, factors, SIZES, seeded(3), variant=variant, **FAST)
    # Treating std 0 as 1 would give the constant dim variance 0 and every vote, scoring about 1/K.
    assert result.score == 1.0 and not math.isnan(result.train_accuracy)
    assert result.num_active_dims == 3
    assert result.votes[3].sum() == 0
    assert torch.equal(result.votes[:3] > 0, expected_table_support())


@pytest.mark.parametrize("variant", ["reference", "dlib"])
def test_kim_mnih_all_constant_scores_zero(variant):
    factors = make_factors()
    result = kim_mnih(torch.ones(N, 3), factors, SIZES, seeded(3), variant=variant, **FAST)
    assert (result.score, result.train_accuracy, result.num_active_dims) == (0.0, 0.0, 0)
    assert torch.equal(result.votes, torch.zeros(3, 3, dtype=torch.int64))


def test_kim_mnih_dlib_prunes_dims_below_threshold():
    factors = make_factors()
    # Dim 3 is informative noise of std 0.01 < 0.05: disentanglement_lib's pruning drops it, the
    # reference keeps it and, being pure noise, it wins only votes that are anyway about 1/L each.
    z = torch.cat([copy_code(factors), 0.01 * random_code(seed=4, latent=1)], dim=1)  # (N, 4)
    dlib = kim_mnih(z, factors, SIZES, seeded(3), variant="dlib", **FAST)
    assert dlib.num_active_dims == 3 and dlib.votes[3].sum() == 0 and dlib.score == 1.0
    reference = kim_mnih(z, factors, SIZES, seeded(3), **FAST)
    assert reference.num_active_dims == 4


def test_kim_mnih_is_deterministic_given_the_seed():
    factors = make_factors()
    z = random_code()
    for variant in ("reference", "dlib"):
        first = kim_mnih(z, factors, SIZES, seeded(7), variant=variant, votes=500, samples=50)
        again = kim_mnih(z, factors, SIZES, seeded(7), variant=variant, votes=500, samples=50)
        other = kim_mnih(z, factors, SIZES, seeded(8), variant=variant, votes=500, samples=50)
        assert first.score == again.score and torch.equal(first.votes, again.votes)
        assert not torch.equal(first.votes, other.votes)


def test_kim_mnih_chunking_does_not_change_the_protocol(monkeypatch):
    factors = make_factors()
    # 150 elements per chunk = one vote of 50 images x 3 dims at a time: 500 chunks, same answer.
    monkeypatch.setattr(disentanglement, "_CHUNK_ELEMENTS", 150)
    result = kim_mnih(copy_code(factors), factors, SIZES, seeded(3), votes=500, samples=50)
    assert result.score == 1.0 and int(result.votes.sum()) == 500


def test_kim_mnih_only_fixes_values_that_occur():
    # Factor 1 is declared with 9 values but only 0..4 occur; fixing an absent value would index an
    # empty group and silently borrow another group's images.
    factors = make_factors()
    sizes = (3, 9, 8)
    result = kim_mnih(copy_code(factors), factors, sizes, seeded(3), **FAST)
    assert result.score == 1.0


def test_kim_mnih_one_dim_takes_every_vote():
    factors = make_factors()
    result = kim_mnih(random_code(latent=1), factors, SIZES, seeded(3), **FAST)
    assert result.votes.shape == (1, 3) and int(result.votes.sum()) == FAST["votes"]
    assert result.score == pytest.approx(result.votes.max().item() / FAST["votes"])


def test_kim_mnih_rejects_bad_inputs():
    factors = make_factors()
    z = copy_code(factors)
    with pytest.raises(ValueError, match="indices"):
        kim_mnih(z, factors, (3, 5, 7), seeded(0), **FAST)  # factor 2 reaches 7
    with pytest.raises(ValueError, match="integer"):
        kim_mnih(z, factors.float(), SIZES, seeded(0), **FAST)
    with pytest.raises(ValueError, match="non-finite"):
        kim_mnih(torch.full_like(z, math.nan), factors, SIZES, seeded(0), **FAST)
    with pytest.raises(ValueError, match="two samples"):
        kim_mnih(z, factors, SIZES, seeded(0), votes=10, samples=1)


# ----------------------------------------------------------------------------- MIG


GRID_SIZES = (3, 6, 10, 8, 8)  # a small dSprites-like factor grid: 11,520 images


def grid_code() -> tuple[torch.Tensor, torch.Tensor]:
    """Every point of GRID_SIZES with a noisy code (one dim per factor, noise rising with the factor, plus an
    entangled dim and pure noise): a score near 0.5, where the protocol's details move the number."""
    import numpy as np

    factors = torch.from_numpy(np.stack(np.unravel_index(np.arange(int(np.prod(GRID_SIZES))), GRID_SIZES), 1))
    g = seeded(0)
    z = torch.randn(len(factors), 10, generator=g)
    for k, size in enumerate(GRID_SIZES):
        z[:, k] = factors[:, k].float() / size + (0.8 + 0.4 * k) * torch.randn(len(factors), generator=g)
    z[:, 5] = 0.3 * z[:, 5] + 0.5 * z[:, 2]
    return z, factors.long()


def reference_kim_mnih(zs: torch.Tensor, ys: torch.Tensor, seed: int, L: int = 1000, M: int = 1500) -> float:
    """The reference's compute_disentanglement (src/metrics.py), loop for loop: a factor per vote from numpy,
    a value uniform over those present, min(L, n) distinct images by torch.randperm."""
    import numpy as np

    rng = np.random.RandomState(seed)
    torch.manual_seed(seed)
    zs_std = torch.std(zs, dim=0)
    ys_uniq = [c.unique() for c in ys.split(1, dim=1)]
    V = torch.zeros(zs.shape[1], ys.shape[1])
    ks = rng.randint(0, ys.shape[1], M)
    for m in range(M):
        k = ks[m]
        fk = ys_uniq[k][rng.choice(len(ys_uniq[k]))]
        zsh = zs[ys[:, k] == fk]
        zsh = zsh[torch.randperm(zsh.size(0))][:L]
        V[torch.argmin(torch.var(zsh / zs_std, dim=0)), k] += 1
    return (torch.max(V, dim=1)[0].sum() / M).item()


def test_kim_mnih_matches_the_reference_loop_on_the_whole_grid(monkeypatch):
    """On the whole grid with distinct draws (metric version 2) the score is the reference's within the seed
    spread; version 1's protocol (1,500 images of the grid, drawn with replacement) is far outside it."""
    import statistics

    z, factors = grid_code()
    seeds = range(4)
    ref = [reference_kim_mnih(z, factors, seed) for seed in seeds]
    ours = [kim_mnih(z, factors, GRID_SIZES, seeded(seed), votes=1500).score for seed in seeds]
    spread = math.sqrt((statistics.variance(ref) + statistics.variance(ours)) / len(seeds))
    spread = max(spread, 0.005)  # four seeds estimate a spread loosely: never tighter than 1/200
    assert abs(statistics.mean(ours) - statistics.mean(ref)) < 3 * spread, (ref, ours)
    subset = torch.randperm(len(z), generator=seeded(1))[:1500]
    monkeypatch.setitem(disentanglement.PROTOCOLS, "reference",
                        dataclasses.replace(disentanglement.PROTOCOLS["reference"], distinct=False))
    old = [kim_mnih(z[subset], factors[subset], GRID_SIZES, seeded(seed), votes=1500).score for seed in seeds]
    assert abs(statistics.mean(old) - statistics.mean(ref)) > 6 * spread, (ref, old)


def test_distinct_picks_never_repeat_an_image():
    """Each vote takes min(samples, n) different images of its group, and only images of that group."""
    factors = torch.tensor([[0]] * 7 + [[1]] * 3 + [[2]] * 12)
    groups = disentanglement._Groups(factors, (3,))
    votes = torch.tensor([0, 1, 2] * 50)
    pick, used = disentanglement._distinct_picks(votes, groups, 5, seeded(0))
    assert pick.shape == (150, 5)
    for row, weight, group in zip(pick.tolist(), used.tolist(), votes.tolist(), strict=True):
        images = [groups.order[p].item() for p, w in zip(row, weight, strict=True) if w]
        assert len(images) == min(5, [7, 3, 12][group]) == len(set(images))
        assert {factors[i, 0].item() for i in images} == {group}


def test_kim_mnih_never_fixes_a_value_held_by_one_image():
    """With distinct draws a value of one image has no variance: it is never fixed (the reference would pick
    NaN); a factor whose values all have one image cannot vote and is refused."""
    factors = torch.tensor([[0, i] for i in range(10)] + [[1, 0]] * 10)  # factor 1: value 0 has 11 images
    z = torch.randn(20, 2, generator=seeded(0))
    result = kim_mnih(z, factors, (2, 10), seeded(1), votes=200, samples=5)
    assert result.votes.sum() == 200
    with pytest.raises(ValueError, match="two images"):
        kim_mnih(z[:10], factors[:10, 1:], (10,), seeded(1), votes=10, samples=5)


def test_student_t_change_of_measure_gives_normal_codes():
    """Student-t codes mapped by Phi^-1(T_df(z)) are N(0, 1) (Kolmogorov-Smirnov); unmapped they are not."""
    from scipy import stats

    from harness.metrics.disentanglement import student_t_to_normal

    torch.manual_seed(0)
    z = torch.distributions.StudentT(3.0).sample((20_000, 2))
    mapped = student_t_to_normal(z, 3.0)
    assert mapped.dtype == torch.float64 and torch.isfinite(mapped).all()
    for d in range(2):
        assert stats.kstest(mapped[:, d].numpy(), "norm").pvalue > 1e-3
        assert stats.kstest(z[:, d].double().numpy(), "norm").pvalue < 1e-6
    # monotone, so the order of the codes (and hence which images share a value) is kept
    assert torch.equal(mapped.argsort(0), z.double().argsort(0))
    assert torch.isfinite(student_t_to_normal(torch.tensor([-1e30, 1e30]), 9.0)).all()


def test_histogram_discretize_matches_numpy_digitize():
    # np.digitize(x, np.histogram(x, 20)[1][:-1]) as disentanglement_lib: bins 1..20, max in the top bin,
    # a constant column in one bin.
    z = torch.stack([torch.arange(5.0), torch.full((5,), 0.1)], dim=1)  # (5, 2)
    codes = histogram_discretize(z, 20)
    assert codes[:, 0].tolist() == [1, 6, 11, 16, 20]
    assert codes[:, 1].unique().numel() == 1


def test_discrete_mutual_info_closed_form():
    f = torch.tensor([[0], [0], [1], [1]])  # (4, 1), H = log 2
    codes = torch.tensor([[0, 5, 0], [0, 5, 1], [1, 5, 0], [1, 5, 1]])  # copy, constant, independent
    info = discrete_mutual_info(codes, f)
    assert info[:, 0].tolist() == pytest.approx([math.log(2), 0.0, 0.0], abs=1e-12)
    assert discrete_entropy(f).tolist() == pytest.approx([math.log(2)], abs=1e-12)


def test_mig_perfect_copy_is_near_one():
    factors = make_factors()
    result = mig(copy_code(factors), factors, SIZES)
    entropy = discrete_entropy(factors)
    # Every factor has <= 20 values, so each of its values falls in its own bins: I[copy, k] = H_k exactly.
    assert result.mutual_info.shape == (3, 3)
    for d, k in enumerate(PERM):
        assert result.mutual_info[d, k].item() == pytest.approx(entropy[k].item(), abs=1e-9)
    # The runner-up is the plug-in MI of two independent factors, ~ (n_j - 1)(n_k - 1) / (2N) <= 0.005 nats
    # against H >= log 3, so MIG = 1 - mean(runner-up / H) lies in (0.99, 1).
    assert 0.99 < result.score < 1.0


def test_mig_random_code_is_near_zero():
    factors = make_factors()
    result = mig(random_code(), factors, SIZES)
    # Only estimator bias, ~ 19 (n_k - 1) / (2N) <= 0.022 nats, is left, and the gap is a fraction of it.
    assert 0.0 <= result.score < 0.01
    assert result.mutual_info.max() < 0.04


def test_mig_closed_form_gap_and_redundancy():
    f = torch.tensor([[0], [0], [1], [1]])  # (4, 1)
    one_copy = torch.tensor([[0.0, 3.0], [0.0, 3.0], [1.0, 3.0], [1.0, 3.0]])  # dim 1 constant
    assert mig(one_copy, f, (2,)).score == pytest.approx(1.0, abs=1e-12)
    two_copies = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [1.0, 2.0]])  # the factor in both dims
    assert mig(two_copies, f, (2,)).score == pytest.approx(0.0, abs=1e-12)


def test_mig_constant_dim_and_constant_factor_do_not_give_nan():
    factors = make_factors()
    z = copy_code(factors)
    base = mig(z, factors, SIZES).score
    with_constant_dim = mig(torch.cat([z, torch.full((N, 1), 0.1)], dim=1), factors, SIZES)
    assert with_constant_dim.mutual_info[3].abs().max() == 0.0
    assert with_constant_dim.score == pytest.approx(base, abs=1e-12)
    # A factor with one value carries nothing to capture and leaves the mean over the others unchanged.
    factors4 = torch.cat([factors, torch.zeros(N, 1, dtype=torch.int64)], dim=1)
    with_constant_factor = mig(z, factors4, (*SIZES, 1))
    assert with_constant_factor.factor_entropy[3] == 0.0
    assert with_constant_factor.score == pytest.approx(base, abs=1e-12)
    with pytest.raises(ValueError, match="undefined"):
        mig(z, torch.zeros(N, 1, dtype=torch.int64), (1,))


# ----------------------------------------------------------------------------- factor_information


def angles(seed: int = 5) -> torch.Tensor:
    """(N,) a Rotated-MNIST-like angle per image, uniform over {0, 45, 90, 135, 180} degrees."""
    return torch.randint(5, (N,), generator=seeded(seed)).double() * 45.0


def test_factor_information_finds_the_angle_dim():
    angle = angles()
    z = torch.stack(
        [
            angle.float() / 90.0 - 1.0,  # carries the angle exactly
            random_code(latent=1)[:, 0],  # independent
            torch.full((N,), 0.3),  # constant
            (angle.float() - 90.0) ** 2,  # carries |angle - 90| only: half the information, no correlation
        ],
        dim=1,
    )  # (N, 4)
    info = factor_information(z, angle)
    assert info.mutual_info.shape == info.normalised_mi.shape == info.abs_corr.shape == (4,)
    assert info.factor_entropy == pytest.approx(math.log(5), abs=0.01)
    assert info.normalised_mi[0].item() == pytest.approx(1.0, abs=1e-9)
    assert info.abs_corr[0].item() == pytest.approx(1.0, abs=1e-6)
    # Plug-in bias ~ 19 * 4 / (2N) = 0.013 nats = 0.008 of log 5; corr sd ~ 1/sqrt(N) = 0.018.
    assert info.normalised_mi[1] < 0.02 and info.abs_corr[1] < 0.1
    assert info.normalised_mi[2] == 0.0 and info.abs_corr[2] == 0.0
    # (angle - 90)^2 takes 3 values with probs 2/5, 2/5, 1/5: MI = H(3 values), about 0.65 of log 5.
    folded = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(5)
    assert info.normalised_mi[3].item() == pytest.approx(folded, abs=0.03)
    assert info.abs_corr[3] < 0.1
    assert not any(t.isnan().any() for t in (info.mutual_info, info.normalised_mi, info.abs_corr))


def test_factor_information_discretises_a_continuous_factor():
    value = torch.rand(N, generator=seeded(6), dtype=torch.float64)  # N distinct values > 20 bins
    z = torch.stack([value, random_code(latent=1)[:, 0].double()], dim=1)  # (N, 2)
    info = factor_information(z, value)
    # Discretised with the same 20 bins as dim 0, so dim 0 determines the factor's bin exactly.
    assert info.factor_entropy == pytest.approx(math.log(20), abs=0.01)
    assert info.normalised_mi[0].item() == pytest.approx(1.0, abs=1e-9)
    assert info.normalised_mi[1] < 0.05  # plug-in bias ~ 19^2 / (2N) = 0.06 nats against H = log 20
