"""How many worker processes train at once on a CPU, and how many threads each gets.

A documented rule on a pack's size, not a timing, so that the choice never depends on the load of the
moment (the thread count can change a job's numbers in their last digits: see RunOptions):

- work: the FLOPs of one training step of the pack, 3 x its networks' forward pass at its batch size
  (forward + backward), counted from its layers' shapes on one example (no data, no timing);
- threads = work // WORK_PER_THREAD, between 1 and the cores: a thread pays for its synchronisation only
  with about that much work per step. Measured on 2 cores (2026-12-03), the speed-up of a step on 2
  threads against 1: pinwheel mlp (0.003 GFLOP) 1.13, and 12x slower under load; mlp400 (3 GFLOP) 1.37;
  conv32 at batch 100 (5.5) 1.56; conv64 at batch 64 (8.8) 1.63; conv32 at batch 500 (27) 1.72;
- workers = cores // threads, and no more than the packs to run, nor than the memory holds: each worker
  loads its own copy of the data, which must fit in MEMORY_SHARE of the available memory.

Tiny models (pinwheel, Rotated-MNIST's mlp400, the canary) thus run one single-threaded worker per core;
the paper's conv32 at batch 500 runs one worker with both threads of a 2-core machine. `--workers` and
`--threads` override the rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.spec import JobSpec

WORK_PER_THREAD = 10e9  # FLOPs of a training step per thread
MEMORY_SHARE = 0.5  # of the available memory, for the workers' copies of the data
BYTES_PER_VALUE = 4  # float32 images


@dataclass(frozen=True)
class CpuChoice:
    """Workers and threads for one kind of pack, with one line that says why."""

    workers: int
    threads: int
    why: str


def cores() -> int:
    """The cores this process may run on (its affinity, which a container or Slurm may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def step_flops(job: JobSpec, members: int = 1) -> int:
    """FLOPs of one training step of `members` copies of `job`: 3 x the forward pass of its encoder and
    decoder at its batch size (backward costs about twice the forward), counting the multiply-adds of
    its convolutions and matrix products (2 FLOPs each) on one example, times the batch. Forward hooks,
    not torch's FlopCounterMode, which imports torch._dynamo (1.2 s) on first use; a test checks that the
    two agree."""
    import torch
    from torch import nn

    from harness.datasets import planned_sizes
    from harness.models import nets
    from harness.models.grouped import GLinear
    from harness.models.likelihoods import build_likelihood

    shape = planned_sizes(job.dataset)[2]
    encoder, decoder = nets.build(job.arch, members, job.latent_dim, shape,
                                  build_likelihood(job.likelihood).params_per_pixel)
    macs = 0

    def count(module, inputs, output) -> None:
        nonlocal macs
        if isinstance(module, nn.ConvTranspose2d):  # each input element meets out/groups x kh x kw weights
            macs += inputs[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.Conv2d):  # each output element: in/groups x kh x kw
            macs += output.numel() * module.weight[0].numel()
        elif isinstance(module, GLinear):  # (G, B, din) @ (G, din, dout)
            macs += inputs[0].numel() * module.weight.shape[-1]
        elif isinstance(module, nn.Linear):
            macs += inputs[0].numel() * module.out_features

    layers = (nn.Conv2d, nn.ConvTranspose2d, GLinear, nn.Linear)
    hooks = [m.register_forward_hook(count) for net in (encoder, decoder) for m in net.modules()
             if isinstance(m, layers)]
    try:
        with torch.no_grad():
            loc, _ = encoder(torch.zeros(members, 1, *shape))
            decoder(loc)
    finally:
        for hook in hooks:
            hook.remove()
    return 3 * 2 * macs * job.batch_size


def data_bytes(job: JobSpec) -> int:
    """Bytes of the job's training and test data as float32 (an upper bound where the count is unknown)."""
    from harness.datasets import DATASETS, planned_sizes

    train, test, shape = planned_sizes(job.dataset)
    train = DATASETS[job.dataset.name].train_size if train is None else train
    per_example = BYTES_PER_VALUE
    for side in shape:
        per_example *= side
    return (train + (test or 0)) * per_example


def choose(job: JobSpec, members: int, packs: int, n_cores: int | None = None, memory: int | None = None,
           workers: int | None = None, threads: int | None = None) -> CpuChoice:
    """Workers and threads for `packs` packs of `members` copies of `job` (see the module's rule).
    `workers` and `threads` are the user's overrides; `n_cores` and `memory` can be handed in for tests."""
    n_cores = n_cores or cores()
    flops = step_flops(job, members)
    work = f"{flops / 1e9:.3g} GFLOP a step"
    if threads:
        why_threads = f"{threads} thread{'s' if threads > 1 else ''} (--threads)"
    else:
        threads = max(1, min(n_cores, int(flops // WORK_PER_THREAD)))
        why_threads = (f"{threads} thread{'s' if threads > 1 else ''} ({work}, "
                       f"{WORK_PER_THREAD / 1e9:.0f} GFLOP per thread)")
    if workers:
        return CpuChoice(workers, threads, f"{workers} worker{'s' if workers > 1 else ''} (--workers) x {why_threads}")
    workers = max(1, min(n_cores // threads, packs))
    why_workers = f"{workers} worker{'s' if workers > 1 else ''}"
    memory = available_memory() if memory is None else memory
    if memory is not None and workers > 1:
        fit = max(1, int(MEMORY_SHARE * memory // max(data_bytes(job), 1)))
        if fit < workers:
            workers = fit
            why_workers = f"{workers} worker{'s' if workers > 1 else ''} (the data's copies fill the memory)"
    return CpuChoice(workers, threads, f"{why_workers} x {why_threads}")
