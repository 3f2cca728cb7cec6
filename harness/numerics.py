"""The numerics version: which computation produced a result.

A job's id hashes its spec together with this version, so that numbers computed by different code
never mix: bump NUMERICS_VERSION (and add a CHANGELOG line saying why) with any change that alters
what a job computes (the objective, a metric, a kernel, a data transform). Jobs stored under an older
version stay in the store, queryable, and show as `stale`; `sweep run` trains the current version
next to them and reports use the current version unless told otherwise.

SPEC_VERSION in harness.spec is another thing: the version of the spec's format.
"""

from __future__ import annotations

NUMERICS_VERSION = 4

CHANGELOG: dict[int, str] = {
    1: "First release. mmd_dim divided the reference's D_hat by B once more, so the batch loss held "
       "alpha * D_hat instead of alpha * B * D_hat: alpha acted B times weaker than the paper's (at B = 500, "
       "alpha = 1000 acted like 2). Its job ids hashed no numerics version.",
    2: "mmd_dim returns the reference's D_hat (the sum over dimensions and scales of the unbiased 1-D MMD^2 "
       "estimates); the batch loss holds alpha * B * D_hat as the reference's obj.sum() does.",
    3: "mmd_dim's kernel sums on the CPU come from a Chebyshev expansion computed in float64 (harness.models."
       "imq_fast) instead of direct float32 sums over all pairs: the same D_hat to float32 rounding, 20 to 30 "
       "times faster, but not the same bits, so float32 CPU runs differ from version 2 in the last digits and "
       "their trajectories drift apart over training.",
    4: "mmd_dim's pair sums come back in float64 and D_hat is formed (xx + yy - 2 xy) before the cast to float32: "
       "version 3 cast each sum to float32 first, which lost 1.3e-2 relative (4e-5 absolute at most) where the "
       "aggregate posterior matches the prior. The logged reg (and loss) change by about 1e-6 relative; the "
       "gradients do not: the canary's 24 jobs trained to the same bits in every other value.",
}

assert max(CHANGELOG) == NUMERICS_VERSION, "every numerics version needs a changelog line"
