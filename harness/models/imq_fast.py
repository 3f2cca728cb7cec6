"""Pair sums of the 1-D inverse multiquadric kernel used by mmd_dim (harness.models.divergences), with their
gradients: the direct sums, a fast Chebyshev path, and the autograd wrapper that both use.

`imq_pair_sums_fast(a, b, grads)` has the contract of `direct_pair_sums`: a (G, L, Na), b (G, L, Nb) -> the (G,)
sums over dims d, scales s and all pairs (i, j) of k(a_di - b_dj) = sum_s C / (C + u^2), C = 2 s, and, when
`grads`, the derivatives of those sums with respect to a and b.

Method (CPU default). The kernel is analytic in the strip |Im u| < sqrt(2 min s) (its poles are at
u = +-i sqrt(C)), so on every pair of short intervals it is interpolated, to rounding level in float64, by a
tensor-product Chebyshev polynomial. Per row (member g, dimension d) the real line is cut into panels of width
h = 0.75 sqrt(2 min s) starting at the row's smallest value; a point x in panel P(x) with local coordinate
t(x) in [-1, 1] gets the basis vector T(x) = (T_0(t), ..., T_{n-1}(t)) of n = 20 Chebyshev polynomials, and

    sum_ij k(a_i - b_j) ~= m_a^T K m_b,    m_a = sum_i e_P(a_i) (x) T(a_i)   (moments per panel, length P n)
    sum_j k'(a_i - b_j) ~= T(a_i) . (Kd^T m_b)[P(a_i)]

where K and Kd hold the Chebyshev coefficients of k and of k' between two panels. Both are block-Toeplitz (they
depend on the panel offset only), are the same for every row, and are cached per panel count. Interpolating k'
directly, rather than differentiating the interpolant of k, keeps the gradients at rounding level (about 1e-14
of max |grad| against the direct sums in float64; the totals about 1e-15). The work is O((Na + Nb) n) per row
plus O((P n)^2) per row for the products with K and Kd, against O(Na Nb) for the direct sums: with B = 500 and
unit-scale data P n is about 500 (two or three (G L, P n) x (P n, P n) products per call). The computation
runs in float64 whatever the input dtype; results come back in a's dtype.

Where the Chebyshev path does not pay (a spread so wide that P n > MAX_NODES, or (P n)^2 > NODE_COST Na Nb;
non-finite values; a device other than the CPU, where the direct sums are fast and the Chebyshev path is
untimed; tiny inputs) the direct blockwise sums are used; `method` forces either path.
"""

from __future__ import annotations

import math
import threading

import torch

MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # mmd_dim's kernel scales s

NODES = 20  # Chebyshev polynomials per panel
PANEL = 0.75  # panel width in units of the smallest pole distance sqrt(2 min s)
MAX_NODES = 2048  # largest P * NODES for the Chebyshev path (K and Kd: 2 * 8 * MAX_NODES^2 bytes, cached)
MIN_PAIRS = 4096  # "auto": below Na * Nb pairs per row the direct sums are cheaper
NODE_COST = 200  # "auto": Chebyshev while (P n)^2 <= NODE_COST * Na * Nb (measured crossover on a CPU)
SIGNS = tuple(1.0 if j % 4 < 2 else -1.0 for j in range(NODES))  # V_j = SIGNS[j] T_j, see _basis

_lock = threading.Lock()
_operators: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _kernel_and_slope(u: torch.Tensor, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_s C / (C + u^2) and its derivative in u, -2 u sum_s C / (C + u^2)^2, C = 2 s."""
    d2 = u * u
    kern = torch.zeros_like(u)
    weight = torch.zeros_like(u)
    for s in scales:
        c = 2.0 * s
        k = (d2 + c).reciprocal_().mul_(c)
        kern += k
        weight.addcmul_(k, k, value=1.0 / c)
    return kern, weight.mul_(u).mul_(-2.0)


def _build_operators(npanels: int, scales: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """K and Kd^T, each (P n, P n) in float64, for P = npanels panels of width h and n = NODES polynomials.

    Block (p, q) of K is C k(h (p - q) + h/2 (t_k - t_l)) C^T with t the Chebyshev points of the first kind and
    C the map from values at those points to Chebyshev coefficients; the same for Kd with k'. Returned in the
    row form used by the callers: u = m @ K and ud = m @ KdT.
    """
    n = NODES
    h = PANEL * math.sqrt(2.0 * min(scales))
    f64 = torch.float64
    k = torch.arange(n, dtype=f64, device=device)
    theta = math.pi * (k + 0.5) / n
    nodes = torch.cos(theta)
    coef = torch.cos(k[:, None] * theta[None, :]) * (2.0 / n)  # (n coefficients, n points)
    coef[0] *= 0.5
    coef *= torch.tensor(SIGNS, dtype=f64, device=device)[:, None]  # coefficients of the V_j = SIGNS[j] T_j
    offsets = torch.arange(-(npanels - 1), npanels, dtype=f64, device=device)
    u = h * offsets[:, None, None] + 0.5 * h * (nodes[:, None] - nodes[None, :])  # (2P - 1, n, n)
    kern, slope = _kernel_and_slope(u, scales)
    blocks = coef @ kern @ coef.T
    dblocks = coef @ slope @ coef.T
    panel = torch.arange(npanels, device=device)
    which = panel[:, None] - panel[None, :] + (npanels - 1)  # block (p, q) is blocks[p - q]
    size = npanels * n
    big_k = blocks[which].permute(0, 2, 1, 3).reshape(size, size)
    big_kd = dblocks[which].permute(0, 2, 1, 3).reshape(size, size)
    return big_k, big_kd.T.contiguous()


def _operators_for(npanels: int, scales: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached K and Kd^T for npanels panels: leading blocks of the largest pair built so far (block-Toeplitz)."""
    key = (scales, str(device))
    with _lock:
        cached = _operators.get(key)
        if cached is None or cached[0].shape[0] < npanels * NODES:
            built = max(npanels, 8 * math.ceil(npanels / 8))  # grow in steps: fewer rebuilds as the spread grows
            with torch.no_grad():
                cached = _build_operators(built, scales, device)
            _operators[key] = cached
    size = npanels * NODES
    return cached[0][:size, :size], cached[1][:size, :size]


def _basis(x: torch.Tensor, lo: torch.Tensor, h: float, npanels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Panel indices (R N,), row-major over (R, P), and basis values V (n, R N) of x (R, N) on panels from lo.

    V_j = SIGNS[j] T_j(t): with these signs the Chebyshev recurrence is one addcmul per degree,
    V_j = V_{j-2} + (2 SIGNS[j] SIGNS[j-1]) t V_{j-1}; the signs are folded into the cached operators.
    """
    rows, count = x.shape
    y = (x - lo) / h
    panel = y.floor().clamp_(0, npanels - 1)
    t = y.sub_(panel).mul_(2.0).sub_(1.0).reshape(-1)
    index = (panel + torch.arange(rows, device=x.device, dtype=x.dtype)[:, None] * npanels).reshape(-1).long()
    basis = x.new_empty(NODES, rows * count)
    basis[0] = 1.0
    if NODES > 1:
        basis[1] = t
    for j in range(2, NODES):
        torch.addcmul(basis[j - 2], t, basis[j - 1], value=2.0 * SIGNS[j] * SIGNS[j - 1], out=basis[j])
    return index, basis


def _moments(index: torch.Tensor, basis: torch.Tensor, rows: int, npanels: int) -> torch.Tensor:
    """(R, P n) sums of the basis vectors of the points in each panel, panel-major."""
    m = basis.new_zeros(NODES, rows * npanels)
    m.index_add_(1, index, basis)
    return m.T.reshape(rows, npanels * NODES)


def _slopes(index: torch.Tensor, basis: torch.Tensor, ud: torch.Tensor) -> torch.Tensor:
    """(R N,) V(x_i) . ud[panel(x_i)] for ud (R, P n); one degree at a time, every op on (R N,) vectors."""
    table = ud.reshape(-1, NODES).T.contiguous()  # (n, R P)
    out = table[0].index_select(0, index).mul_(basis[0])
    for j in range(1, NODES):
        out.addcmul_(table[j].index_select(0, index), basis[j])
    return out


def _cheb_pair_sums(a: torch.Tensor, b: torch.Tensor | None, grads: bool, scales: tuple,
                    max_nodes: int = MAX_NODES):
    """Chebyshev path; b None means b = a (moments computed once, grad_b = grad_a). None where it does not
    apply: non-finite values, or a per-row spread that needs more than max_nodes nodes."""
    g, latent, na = a.shape
    rows = g * latent
    x = a.detach().to(torch.float64).reshape(rows, na)
    y = None if b is None else b.detach().to(torch.float64).reshape(rows, b.shape[2])
    lo = x.amin(1, keepdim=True)
    hi = x.amax(1, keepdim=True)
    if y is not None:
        lo = torch.minimum(lo, y.amin(1, keepdim=True))
        hi = torch.maximum(hi, y.amax(1, keepdim=True))
    h = PANEL * math.sqrt(2.0 * min(scales))
    spread = (hi - lo).max().item()
    if not math.isfinite(spread) or math.ceil(spread / h) * NODES > max_nodes:
        return None
    npanels = max(1, math.ceil(spread / h))
    big_k, big_kdt = _operators_for(npanels, scales, a.device)
    index_a, basis_a = _basis(x, lo, h, npanels)
    m_a = _moments(index_a, basis_a, rows, npanels)
    if y is None:
        index_b, basis_b, m_b = index_a, basis_a, m_a
    else:
        index_b, basis_b = _basis(y, lo, h, npanels)
        m_b = _moments(index_b, basis_b, rows, npanels)
    total = (m_a * (m_b @ big_k)).sum(1).reshape(g, latent).sum(1)  # float64: see imq_pair_sums_fast
    if not grads:
        return total, None, None
    # d/da_i sum_j k(a_i - b_j) = sum_j k'(a_i - b_j); d/db_j = -sum_i k'(a_i - b_j) = sum_i k'(b_j - a_i)
    grad_a = _slopes(index_a, basis_a, m_b @ big_kdt).reshape(a.shape).to(a.dtype)
    if y is None:
        return total, grad_a, grad_a.clone()
    grad_b = _slopes(index_b, basis_b, m_a @ big_kdt).reshape(b.shape).to(a.dtype)
    return total, grad_a, grad_b


def direct_pair_sums(a: torch.Tensor, b: torch.Tensor, grads: bool, scales: tuple = MMD_SCALES):
    """The direct sums over all pairs (kernels in the input dtype, totals accumulated in float64). Works through
    the dimensions in chunks so that the (G, chunk, Na, Nb) temporaries stay small, and keeps nothing for
    autograd: the derivative of C / (C + u^2) is -2 u k^2 / C, accumulated over scales while the kernel is at
    hand."""
    g, latent, na = a.shape
    nb = b.shape[2]
    a, b = a.detach(), b.detach()
    total = a.new_zeros(g, dtype=torch.float64)
    grad_a = torch.zeros_like(a) if grads else None
    grad_b = torch.zeros_like(b) if grads else None
    chunk = max(1, min(latent, 2_000_000 // max(1, g * na * nb)))
    for lo in range(0, latent, chunk):
        hi = min(latent, lo + chunk)
        diff = a[:, lo:hi, :, None] - b[:, lo:hi, None, :]  # (G, c, Na, Nb)
        kern, slope = _kernel_and_slope(diff, scales)
        total += kern.sum(dim=(1, 2, 3), dtype=torch.float64)
        if grads:
            grad_a[:, lo:hi] = slope.sum(-1)
            grad_b[:, lo:hi] = -slope.sum(-2)
    return total, grad_a, grad_b


def imq_pair_sums_fast(a: torch.Tensor, b: torch.Tensor, grads: bool, method: str = "auto",
                       scales: tuple = MMD_SCALES):
    """(total (G,), grad_a or None, grad_b or None) as direct_pair_sums(a, b, grads, scales).

    a (G, L, Na), b (G, L, Nb), float32 or float64, any device; the totals come back in float64 (the caller
    subtracts sums of about B^2 L terms from each other, which float32 would round to 1e-2 relative where they
    nearly cancel), the gradients in a's dtype. Nothing is kept for autograd. When b is a (the
    same tensor object) the sums over ordered pairs include the diagonal i = j, as the direct sums do, and
    grad_b equals grad_a (the derivative with respect to each argument separately). method: "auto" (Chebyshev
    on the CPU when it pays, else direct), "cheb" (Chebyshev, falls back to direct for non-finite values or a
    spread beyond MAX_NODES nodes), or "direct".
    """
    if method not in ("auto", "cheb", "direct"):
        raise ValueError(f"unknown method {method!r}")
    scales = tuple(float(s) for s in scales)
    same = b is a
    if a.numel() == 0 or b.numel() == 0:
        zero = a.new_zeros(a.shape[0])
        return zero, (torch.zeros_like(a) if grads else None), (torch.zeros_like(b) if grads else None)
    pairs = a.shape[2] * b.shape[2]
    max_nodes = MAX_NODES if method == "cheb" else min(MAX_NODES, math.isqrt(NODE_COST * pairs))
    if method == "cheb" or (method == "auto" and a.device.type == "cpu" and pairs >= MIN_PAIRS):
        result = _cheb_pair_sums(a, None if same else b, grads, scales, max_nodes)
        if result is not None:
            return result
    return direct_pair_sums(a, b, grads, scales)


def imq_self_sums_fast(a: torch.Tensor, grads: bool, method: str = "auto", scales: tuple = MMD_SCALES):
    """imq_pair_sums_fast(a, a, grads): all ordered pairs including i = j (k = 1 there, L * len(scales) * Na per
    member); grad_a = grad_b = sum_j k'(a_i - a_j), the derivative with respect to one argument (the total's
    derivative with respect to a is twice that)."""
    return imq_pair_sums_fast(a, a, grads, method, scales)


class PairSumWithGradient(torch.autograd.Function):
    """Autograd wrapper of a pair sum that computes its gradient in the forward pass: `pair_sums(a, b)`
    returns (total (G,), d total / d a, d total / d b)."""

    @staticmethod
    def forward(ctx, a, b, pair_sums):
        total, grad_a, grad_b = pair_sums(a, b)
        ctx.save_for_backward(grad_a, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_a, grad_b = ctx.saved_tensors
        scale = grad_total.reshape(-1, 1, 1).to(grad_a.dtype)  # the total is float64, the inputs may not be
        return grad_a * scale, grad_b * scale, None


def imq_pair_sum_fast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Drop-in for divergences.imq_pair_sum: (G,) kernel sums, differentiable in a and b."""
    grads = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if not grads:
        return imq_pair_sums_fast(a, b, False)[0]
    same = b is a  # the self-sum shortcut, decided before autograd hands over its own references
    return PairSumWithGradient.apply(a, b, lambda x, y: imq_pair_sums_fast(x, x if same else y, True))
