"""How many jobs to train as one pack on a GPU when the user gave no --pack-size.

One training step (forward, backward, Adam's step, and one IWAE microbatch where the job asks for IWAE)
is measured at G = 1 and G = 2 members of the first job's kind. Memory grows linearly with G, so
per_member = peak(2) - peak(1) and base = peak(1) - per_member, and the pack size is the largest G that
keeps base + G * per_member within FILL of the free memory, between 1 and min(len(jobs), MAX_PACK).
The measuring and the free-memory query can be handed in, so the arithmetic is testable on a CPU.
No printing: the answer comes with one line that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from harness.datasets.base import Dataset
from harness.spec import JobSpec

MAX_PACK = 64  # beyond this grouped convolutions stop getting faster per model
FILL = 0.8  # of the free memory: room for the allocator's fragmentation and the evaluation


def choose_pack_size(jobs: Sequence[JobSpec], data: Dataset, device: torch.device | str,
                     free_bytes: int | None = None,
                     measure: Callable[[int], int] | None = None) -> tuple[int, str]:
    """(pack size, one line saying why) for training `jobs` on `device`.

    `measure(G)` returns the peak bytes of one step of G members (default: measure_step on `device`);
    `free_bytes` the memory free on the device (default: torch.cuda.mem_get_info). Off CUDA the answer
    is 1 and nothing is measured. `data` is on `device`, as train_pack takes it.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return 1, "pack size 1 on the CPU" if device.type == "cpu" else f"pack size 1 on {device.type}"
    limit = min(len(jobs), MAX_PACK)
    if limit <= 1:
        return 1, f"pack size 1: {len(jobs)} job{'s' if len(jobs) != 1 else ''}"
    try:
        if measure is None:
            # a first step allocates cuBLAS's and cuDNN's workspaces, which stay: left out of both measures
            measure_step(jobs[0], data, device, 1)

            def measure(groups: int) -> int:
                return measure_step(jobs[0], data, device, groups)

        one, two = measure(1), measure(2)
    except torch.cuda.OutOfMemoryError:
        return 1, "pack size 1: a step of one or two members does not fit in the free memory"
    per_member = max(two - one, 0)
    base = max(one - per_member, 0)
    if free_bytes is None:
        torch.cuda.empty_cache()
        free_bytes = torch.cuda.mem_get_info(device)[0]
    budget = FILL * free_bytes
    fit = limit if per_member == 0 else int((budget - base) // per_member)
    size = max(1, min(limit, fit))
    why = f"{_size(per_member)} per member, {_size(base)} besides, {_size(free_bytes)} free"
    if fit < 1:
        why += f"; even one member needs more than {FILL:.0%} of it"
    elif size == len(jobs) and fit > size:
        why += f"; all {len(jobs)} jobs"
    elif size == MAX_PACK and fit > size:
        why += f"; at most {MAX_PACK}"
    return size, f"pack size {size}: {why}"


def measure_step(job: JobSpec, data: Dataset, device: torch.device, groups: int) -> int:
    """Peak CUDA bytes, above what was allocated before, of one_step(job, data, device, groups)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    one_step(job, data, device, groups)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    return int(peak)


def one_step(job: JobSpec, data: Dataset, device: torch.device, groups: int) -> torch.Tensor:
    """One eager training step of `groups` copies of `job` from a fresh model (weights, Adam's state,
    activations, gradients), then one IWAE microbatch as evaluate() runs it where the job asks for IWAE
    (its decoder pass over batch x samples can outgrow the step); returns the members' losses, (G,)."""
    from harness.metrics.iwae import iwae_log_px
    from harness.models.divergences import DIVERGENCES
    from harness.train import TrainStep, build_model, build_optimiser, generator, pack_weights

    jobs = tuple(replace(job, seed=job.seed + g) for g in range(groups))
    model = build_model(jobs, data, device)
    like, alpha, beta = pack_weights(jobs, device)
    step = TrainStep(model, build_optimiser(model, job), DIVERGENCES[job.divergence], alpha, beta, compile=False)
    batch = job.batch_size
    x = data.train_x[:batch].unsqueeze(0).repeat(groups, *[1] * data.train_x.dim())  # (G, B, *shape)
    eps = torch.randn(groups, batch, job.latent_dim, device=device, dtype=like.dtype)
    prior_z = eps
    if job.divergence != "none" and batch > 1:
        prior_z = model.prior.sample_members([generator(j.seed, "prior", device) for j in jobs], batch)
    terms = step(x, eps, prior_z, torch.ones(groups, dtype=torch.bool, device=device))
    if job.iwae_k > 0:
        n = min(100, len(data.test_x))
        test = data.test_x[:n].unsqueeze(0).expand(groups, *data.test_x[:n].shape)
        iwae_log_px(model, test, job.iwae_k, [generator(j.seed, "iwae", device) for j in jobs], batch_size=n,
                    k_chunk=min(100, job.iwae_k))
    return terms.loss.detach()


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
