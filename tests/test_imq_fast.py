"""harness.models.imq_fast against the direct pair sums of harness.models.divergences.

Float64: totals and both gradients to rtol 1e-6, with an absolute slack of 1e-10 max(1, max |grad|) for the
few gradients that cancel to (near) zero: both implementations round at about 1e-14 max |grad| there, and the
Chebyshev path's own error is at that level too. Float32 in: the Chebyshev path computes in float64, so it matches the
float64 sums of the same (float32) values to float32 rounding (rtol 1e-6); against today's float32 sums, which
accumulate float32 rounding over the pairs, rtol 1e-4.
"""

from __future__ import annotations

import functools

import pytest
import torch

from harness.models import divergences
from harness.models import imq_fast as imq_fast_module
from harness.models.imq_fast import (
    MMD_SCALES,
    _cheb_pair_sums,
    imq_pair_sum_fast,
    imq_pair_sums_fast,
    imq_self_sums_fast,
)

SHAPES = [  # (G, L, Na, Nb)
    (1, 1, 7, 5),
    (2, 3, 33, 81),
    (3, 2, 100, 64),
    (1, 5, 1, 300),
    (2, 9, 400, 300),  # L = 9 > the direct sums' chunk of 2e6 // (G Na Nb) = 8 dimensions
]
METHODS = ["cheb", "direct", "auto"]


def _inputs(g, latent, na, nb, spread=1.0, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = spread * torch.randn(g, latent, na, generator=gen, dtype=dtype)
    b = spread * 1.3 * torch.randn(g, latent, nb, generator=gen, dtype=dtype) + 0.2 * spread
    return a, b


def _close(actual, expected, rtol=1e-6, slack=1e-10):
    atol = slack * max(1.0, float(expected.abs().max())) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _check(out, ref, grads, **tol):
    _close(out[0], ref[0], **tol)
    if grads:
        _close(out[1], ref[1], **tol)
        _close(out[2], ref[2], **tol)
    else:
        assert out[1] is None and out[2] is None


def test_scales_are_mmd_dims():
    assert MMD_SCALES == divergences.MMD_SCALES


@functools.cache
def _reference(shape, same):
    a, b = _inputs(*shape)
    return divergences._imq_pair_sums(a, a if same else b, True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_pair_sums_match_direct(shape, method):
    a, b = _inputs(*shape)
    ref = _reference(shape, False)
    _check(imq_pair_sums_fast(a, b, True, method=method), ref, True)
    _check(imq_pair_sums_fast(a, b, False, method=method), ref, False)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_self_sums_match_direct(shape, method):
    """b is a: ordered pairs with the diagonal included, grad_b = grad_a, as _imq_pair_sums(a, a)."""
    a, _ = _inputs(*shape)
    ref = _reference(shape, True)
    _check(imq_pair_sums_fast(a, a, True, method=method), ref, True)
    _check(imq_self_sums_fast(a, False, method=method), ref, False)


@pytest.mark.parametrize("spread", [0.0, 1e-3, 0.3, 4.0])
def test_chebyshev_across_spreads(spread):
    """One panel (constant or tightly packed values) up to many; all on the Chebyshev path."""
    a, b = _inputs(2, 3, 120, 90, spread=spread)
    _check(_cheb_pair_sums(a, b, True, MMD_SCALES), divergences._imq_pair_sums(a, b, True), True)
    _check(_cheb_pair_sums(a, None, True, MMD_SCALES), divergences._imq_pair_sums(a, a, True), True)


def test_wide_spread_and_non_finite_fall_back_to_direct():
    a, b = _inputs(1, 2, 200, 100, spread=40.0)
    assert _cheb_pair_sums(a, b, True, MMD_SCALES) is None  # needs more than MAX_NODES Chebyshev nodes
    _check(imq_pair_sums_fast(a, b, True, method="cheb"), divergences._imq_pair_sums(a, b, True), True)
    a[0, 1, 3] = float("nan")
    assert _cheb_pair_sums(a, b, True, MMD_SCALES) is None
    out = imq_pair_sums_fast(a, b, True, method="cheb")
    ref = divergences._imq_pair_sums(a, b, True)
    torch.testing.assert_close(out[0], ref[0], equal_nan=True)
    torch.testing.assert_close(out[1], ref[1], equal_nan=True)


def test_other_scales():
    a, b = _inputs(1, 4, 150, 170, spread=2.0)
    scales = (0.05, 0.7, 3.0)
    _check(imq_pair_sums_fast(a, b, True, method="cheb", scales=scales),
           imq_pair_sums_fast(a, b, True, method="direct", scales=scales), True)


@pytest.mark.parametrize("method", METHODS)
def test_float32(method):
    a, b = _inputs(2, 4, 150, 170, dtype=torch.float32)
    for x, y in ((a, b), (a, a)):
        out = imq_pair_sums_fast(x, y, True, method=method)
        assert out[0].dtype == torch.float64  # the totals, which mmd_dim subtracts from each other
        assert out[1].dtype == torch.float32 and out[2].dtype == torch.float32
        # today's float32 sums: float32 rounding accumulated over the pairs
        _check(out, divergences._imq_pair_sums(x, y, True), True, rtol=1e-4, slack=1e-5)
        if method == "cheb":  # computed in float64: the float64 sums of the same values, rounded to float32
            ref = divergences._imq_pair_sums(x.double(), x.double() if y is x else y.double(), True)
            _check([t.double() for t in out], ref, True, rtol=1e-6, slack=1e-7)


def test_empty():
    a = torch.zeros(2, 3, 0, dtype=torch.float64)
    b = torch.randn(2, 3, 4, dtype=torch.float64)
    total, grad_a, grad_b = imq_pair_sums_fast(a, b, True)
    assert total.tolist() == [0.0, 0.0] and grad_a.shape == a.shape and torch.equal(grad_b, torch.zeros_like(b))


def test_autograd_wrapper_matches_imq_pair_sum():
    """mmd_dim's three sums through both wrappers: same values and same gradients for both inputs."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 300, 6, generator=gen, dtype=torch.float64)
    prior_z = torch.randn(2, 300, 6, generator=gen, dtype=torch.float64)
    weights = torch.tensor([0.7, -1.3], dtype=torch.float64)
    results = []
    for pair_sum in (divergences.imq_pair_sum, imq_pair_sum_fast):
        y = z.clone().requires_grad_(True)
        x = prior_z.clone().requires_grad_(True)
        xt, yt = x.transpose(1, 2), y.transpose(1, 2)
        value = pair_sum(xt, xt) + 2 * pair_sum(yt, yt) - 3 * pair_sum(xt, yt)
        (value * weights).sum().backward()
        results.append((value.detach(), x.grad, y.grad))
    for fast, ref in zip(results[1], results[0], strict=True):
        _close(fast, ref)
    with torch.no_grad():
        _close(imq_pair_sum_fast(z.transpose(1, 2), z.transpose(1, 2)),
               divergences.imq_pair_sum(z.transpose(1, 2), z.transpose(1, 2)))


def test_unknown_method():
    a, b = _inputs(1, 1, 3, 3)
    with pytest.raises(ValueError, match="unknown method"):
        imq_pair_sums_fast(a, b, True, method="fft")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    a, b = _inputs(2, 5, 300, 200)
    ref = divergences._imq_pair_sums(a, b, True)
    for method in METHODS:
        out = imq_pair_sums_fast(a.cuda(), b.cuda(), True, method=method)
        _check([t.cpu() for t in out], ref, True)


def _mmd_dim_direct(z, prior_z):
    """mmd_dim as numerics version 2 computed it: the direct sums of divergences.imq_pair_sum."""
    g, b, latent = z.shape
    x, y = prior_z.transpose(1, 2), z.transpose(1, 2)
    xx, yy, xy = divergences.imq_pair_sum(x, x), divergences.imq_pair_sum(y, y), divergences.imq_pair_sum(x, y)
    diagonal = b * latent * len(MMD_SCALES)
    return (xx + yy - 2 * diagonal) / (b * (b - 1)) - 2 * xy / b**2


def test_mmd_dim_takes_the_chebyshev_path_and_keeps_value_and_gradient():
    """Training's mmd_dim at the sparsity experiment's batch (B = 500): value and gradient with respect to the
    posterior samples equal the direct sums' to 1e-6 relative in float64, the SPEC's tolerance."""
    gen = torch.Generator().manual_seed(3)
    z = (0.8 * torch.randn(2, 500, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    prior_z = torch.randn(2, 500, 4, generator=gen, dtype=torch.float64)
    calls = []
    original = imq_fast_module._cheb_pair_sums

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    z_ref = z.detach().clone().requires_grad_(True)
    expected = _mmd_dim_direct(z_ref, prior_z)
    expected.sum().backward()
    imq_fast_module._cheb_pair_sums = spy
    try:
        value = divergences.mmd_dim(z, prior_z)
    finally:
        imq_fast_module._cheb_pair_sums = original
    value.sum().backward()
    assert calls == [True, True, True]  # xx, yy and xy all came from the Chebyshev expansion
    _close(value.detach(), expected.detach())
    _close(z.grad, z_ref.grad)


def test_golden_mmd_dim_through_the_chebyshev_path(golden, monkeypatch):
    """The golden case is small (the direct sums take it by default): forced through the expansion it still
    gives the reference's value."""
    monkeypatch.setattr(imq_fast_module, "MIN_PAIRS", 0)
    monkeypatch.setattr(imq_fast_module, "NODE_COST", 10**9)
    case = golden["mmd_dim"]
    x = torch.tensor(case["x"], dtype=torch.float64).unsqueeze(0)
    y = torch.tensor(case["y"], dtype=torch.float64).unsqueeze(0)
    assert divergences.mmd_dim(y, x)[0].item() == pytest.approx(case["value"], rel=1e-6)


def test_mmd_dim_near_zero_keeps_float32_precision():
    """Where the posterior matches the prior D_hat is a small difference of sums of B^2 L terms: formed in
    float64 before the cast (numerics version 4) it is the float64 value to float32 rounding. Version 3 cast
    each sum to float32 first and was 1e-2 off relative here."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 500, 10, generator=gen)
    prior_z = torch.randn(2, 500, 10, generator=gen)
    out = divergences.mmd_dim(z, prior_z)
    assert out.dtype == torch.float32
    exact = divergences.mmd_dim(z.double(), prior_z.double())
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-12)
