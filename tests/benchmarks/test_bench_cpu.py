"""CPU speed as ratios, each of two things run side by side in this one process (`make bench`).

- pinwheel: a model-epoch at the threads the local executor chooses (harness.workers) against torch's
  default (every core) and against one thread; the timed case is the executor's choice (a whole job; the
  ratios use the stored epoch seconds of each), each round after one run of the others (pytest-benchmark's
  untimed setup), so load that comes and goes hits both alike;
- quickstart jobs: 2 workers x 1 thread against 1 worker x 2 threads, two jobs of one epoch each;
- conv32 at the paper's batch (500, L 50): one training step's GFLOP/s as a fraction of a 2048 x 2048 sgemm's
  in the same process, at the threads the executor chooses for it.
Each test puts its ratio in extra_info (stored by `harness bench run`) and prints it.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.datasets import load_dataset
from harness.models.divergences import DIVERGENCES
from harness.schema import Options
from harness.spec import Pack, load_sweep
from harness.train import TrainStep, build_model, build_optimiser, generator, pack_weights, train_pack
from harness.workers import choose, cores, step_flops

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU benchmarks")


def _job(sweep: str, **changes):
    return replace(load_sweep(SWEEPS / sweep).jobs[-1], **changes)


def _subset(job, n: int):
    """`job` on `n` training images per class."""
    params = dict(job.dataset.params) | {"subset": n}
    return replace(job, dataset=Options(job.dataset.name, tuple(sorted(params.items()))))


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _epochs(job, data, threads: int) -> float:
    """Seconds of training of `job` at `threads`, per model-epoch (the pack's stored epoch seconds)."""
    torch.set_num_threads(threads)
    result = train_pack(Pack((job,)), data, "cpu")[0]
    return sum(e["seconds"] for e in result.epochs) / len(result.epochs)


def test_pinwheel_model_epoch_at_the_executors_threads(benchmark):
    job = _job("demo/clustering.toml", epochs=50)
    data = load_dataset(job.dataset, None, "cpu", job.dtype)
    chosen = choose(job, 1, packs=9).threads
    default, single, mine = [], [], []

    def others():
        default.append(_epochs(job, data, cores()))
        single.append(_epochs(job, data, 1))

    before = torch.get_num_threads()
    try:
        benchmark.pedantic(lambda: mine.append(_epochs(job, data, chosen)), setup=others, rounds=3, iterations=1)
    finally:
        torch.set_num_threads(before)
    ours = statistics.median(mine)
    ratios = {"threads": chosen, "default_over_chosen": statistics.median(default) / ours,
              "chosen_over_single_thread": ours / statistics.median(single)}
    benchmark.extra_info.update(ratios)
    print(f"pinwheel model-epoch: {chosen} thread(s) chosen; torch's default ({cores()} threads) takes "
          f"{ratios['default_over_chosen']:.2f}x as long, one thread {1 / ratios['chosen_over_single_thread']:.2f}x")


def _train_jobs(jobs, threads: int, out) -> None:
    torch.set_num_threads(threads)
    data = load_dataset(jobs[0].dataset, None, "cpu", jobs[0].dtype)
    out.put(sum(_timed(lambda job=job: train_pack(Pack((job,)), data, "cpu")) for job in jobs))


def _processes(groups: list[list], threads: int) -> float:
    """Wall seconds of one process per group of jobs, all at once, each at `threads`."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    processes = [ctx.Process(target=_train_jobs, args=(group, threads, out)) for group in groups]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return time.perf_counter() - started


def test_two_single_threaded_workers_against_one_with_two_threads(benchmark):
    """Two quickstart jobs (conv32, batch 500, 1,000 images, 1 epoch): the timed case is 2 workers x 1 thread;
    the ratio is 1 worker x 2 threads over it (above 1: the workers win)."""
    jobs = [_subset(replace(j, epochs=1), 100) for j in load_sweep(SWEEPS / "quickstart.toml").jobs[:2]]
    one_worker = []
    benchmark.pedantic(lambda: _processes([[jobs[0]], [jobs[1]]], 1),
                       setup=lambda: one_worker.append(_processes([jobs], 2)), rounds=2, iterations=1)
    ratio = statistics.median(one_worker) / benchmark.stats.stats.median
    benchmark.extra_info.update({"one_worker_two_threads_over_two_workers": ratio})
    print(f"quickstart jobs: 1 worker x 2 threads takes {ratio:.2f}x as long as 2 workers x 1 thread")


def test_conv32_step_against_the_machines_sgemm(benchmark):
    job = _job("quickstart.toml")
    threads = choose(job, 1, packs=1).threads
    data = load_dataset(_subset(job, 50).dataset, None, "cpu", job.dtype)
    device = torch.device("cpu")
    model = build_model((job,), data, device)
    like, alpha, beta = pack_weights((job,), device)
    step = TrainStep(model, build_optimiser(model, job), DIVERGENCES[job.divergence], alpha, beta, compile=False)
    x = data.train_x[:job.batch_size].unsqueeze(0)
    eps = torch.randn(1, job.batch_size, job.latent_dim)
    prior_z = model.prior.sample_members([generator(job.seed, "prior", device)], job.batch_size)
    alive = torch.ones(1, dtype=torch.bool)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    sgemm = []

    def matmul():
        sgemm.append(min(_timed(lambda: a @ b) for _ in range(5)))

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step(x, eps, prior_z, alive)  # warm-up: allocations, oneDNN's primitives
        benchmark.pedantic(lambda: step(x, eps, prior_z, alive), setup=matmul, rounds=10, iterations=1)
    finally:
        torch.set_num_threads(before)
    step_rate = step_flops(job) / benchmark.stats.stats.median
    sgemm_rate = 2 * 2048**3 / statistics.median(sgemm)
    benchmark.extra_info.update({"threads": threads, "step_gflops": step_rate / 1e9, "sgemm_gflops": sgemm_rate / 1e9,
                                 "fraction_of_sgemm": step_rate / sgemm_rate})
    print(f"conv32 step at {threads} thread(s): {step_rate / 1e9:.0f} GFLOP/s, {step_rate / sgemm_rate:.0%} of the "
          f"same process's sgemm ({sgemm_rate / 1e9:.0f} GFLOP/s)")
