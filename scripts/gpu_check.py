"""`make gpu-check`: one script that fits a short GPU lease (8 minutes on one H100) and prints one table.

It checks that the training path runs on the device, that a pack agrees with its jobs trained alone
(float32, relative tolerance stated below), that the same job twice gives identical numbers; times the
sparsity model (conv32, batch 500, latent 50) per model-epoch at pack sizes 1, 8, 16 and 32, eager and
compiled (torch.compile), with the peak memory and how far compiled numbers are from eager ones; says what
cuDNN's determinism costs the grouped convolutions (RunOptions(deterministic=False) is the switch that
trades it for speed) and what bfloat16 autocast gains; shows the pack size harness.packing would choose;
and trains the paper's beta = 1 row (alpha x gamma, 10 jobs) for as many epochs as the remaining time
allows, with its Hoyer table. Timings come from the second epoch (the first includes compiling, cuDNN's
autotuning and warm-up) of 2-epoch packs on the first 10,000 training images, scaled to the full 60,000.

It needs torch and the Fashion-MNIST files only (no duckdb, polars or submitit), so it runs on a bare device
machine. `--tiny` is the same on a few hundred images with pack sizes 1 and 2, for a CPU.

    python scripts/gpu_check.py [--tiny] [--data-root DIR] [--budget 450] [--row-seconds S]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.datasets import load_dataset  # noqa: E402
from harness.models.divergences import DIVERGENCES  # noqa: E402
from harness.packing import choose_pack_size  # noqa: E402
from harness.schema import Options  # noqa: E402
from harness.spec import JobSpec, Pack  # noqa: E402
from harness.train import (  # noqa: E402
    RunOptions,
    TrainStep,
    build_model,
    build_optimiser,
    generator,
    pack_weights,
    train_pack,
)

# float32: a pack reorders the reductions of grouped convolutions, and training amplifies rounding; after
# one epoch its members match the jobs alone to this relative error (measured on a CPU: 1.9e-4)
PACK_TOLERANCE = 1e-3
# the compiled step against the eager one at the same weights and batch, relative, per term: inductor fuses and
# reorders float32 arithmetic. D_hat is a difference of kernel sums far larger than itself, so rounding in z
# moves it most (measured on a CPU: 7e-5; recon and kl 2e-7, the loss 3e-6). After training, compiled and eager
# runs drift much further apart, as Adam amplifies rounding (4.6e-3 after the 8 steps of --tiny on a CPU):
# the table shows that drift, the check is the one step.
COMPILE_TOLERANCE = {"loss": 1e-4, "recon": 1e-5, "kl": 1e-5, "reg": 1e-3}
ALPHAS, GAMMAS = (0.0, 10.0, 100.0, 500.0, 1000.0), (0.0, 0.8)
TERMS = ("loss", "recon", "kl", "reg")


def sparsity_job(alpha: float, gamma: float, epochs: int, dataset: Options, batch: int, seed: int = 1,
                 autocast: str = "none") -> JobSpec:
    return JobSpec(dataset=dataset, arch="conv32", latent_dim=50, likelihood=Options("laplace", (("scale", 0.1),)),
                   prior=Options("sparse", (("gamma", gamma), ("spike_scale", 0.05))), divergence="mmd_dim",
                   alpha=alpha, beta=1.0, epochs=epochs, batch_size=batch, lr=5e-4, seed=seed, autocast=autocast)


def worst_difference(left, right) -> float:
    """The largest relative difference of any epoch's loss terms between two runs of the same jobs."""
    worst = 0.0
    for a_result, b_result in zip(left, right, strict=True):
        for a, b in zip(a_result.epochs, b_result.epochs, strict=True):
            for term in TERMS:
                worst = max(worst, abs(a[term] - b[term]) / max(abs(b[term]), 1e-12))
    return worst


def step_difference(jobs: tuple[JobSpec, ...], data, device: str) -> dict[str, float]:
    """Per loss term, the largest relative difference between the compiled and the eager forward pass and
    objective, at the same initial weights, on the same batch, noise and prior samples."""
    model = build_model(jobs, data, torch.device(device))
    like, alpha, beta = pack_weights(jobs, device)
    step = TrainStep(model, build_optimiser(model, jobs[0]), DIVERGENCES[jobs[0].divergence], alpha, beta, True)
    batch, size = jobs[0].batch_size, len(jobs)
    x = data.train_x[:batch].unsqueeze(0).repeat(size, 1, 1, 1, 1)
    eps = torch.randn(size, batch, jobs[0].latent_dim, generator=generator(0, "noise", device), device=device)
    prior_z = model.prior.sample_members([generator(j.seed, "prior", device) for j in jobs], batch)
    eager, compiled = step.terms(x, eps, prior_z), step.compiled(x, eps, prior_z)
    return {t: ((getattr(compiled, t) - getattr(eager, t)).abs() / getattr(eager, t).abs().clamp_min(1e-12))
            .max().item() for t in TERMS}


class Warnings(logging.Handler):
    """Collects harness.train's warnings (a compilation that fell back to eager)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few hundred images, pack sizes 1 and 2 (a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 450, "
                        "180 with --tiny); the beta = 1 row gets what the checks before it leave")
    parser.add_argument("--row-seconds", type=float, default=None, help="time for the beta = 1 row (default: the rest)")
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 180.0 if args.tiny else 450.0
    # as in train_pack, and so that the compiled graphs of the timed packs serve step_difference too
    torch.distributions.Distribution.set_default_validate_args(False)
    started = time.perf_counter()
    warnings = Warnings()
    logging.getLogger("harness.train").addHandler(warnings)

    if args.tiny:
        dataset = Options("fashion_mnist", (("size", 32), ("subset", 20), ("subset_mode", "stratified"),
                                            ("test_subset", 200)))
        timing_dataset, scale = dataset, 1.0
        batch, sizes = 50, (1, 2)
    else:
        dataset = Options("fashion_mnist", (("size", 32), ("subset", 0), ("subset_mode", "first"),
                                            ("test_subset", 0)))
        timing_dataset = Options("fashion_mnist", (("size", 32), ("subset", 10_000), ("subset_mode", "first"),
                                                   ("test_subset", 1000)))
        scale = 60_000 / 10_000
        batch, sizes = 500, (1, 8, 16, 32)
    device = args.device
    data = load_dataset(dataset, args.data_root, device, "float32")
    timing = data if timing_dataset == dataset else load_dataset(timing_dataset, args.data_root, device, "float32")
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    rows: list[tuple[str, str]] = [("device", f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda})")]
    failures: list[str] = []

    # 1. a pack agrees with its jobs alone; 2. the same job twice is identical
    jobs = tuple(sparsity_job(a, 0.8, 1, dataset, batch) for a in (0.0, 100.0, 1000.0))
    packed = train_pack(Pack(jobs), data, device)
    alone = [train_pack(Pack((spec,)), data, device)[0] for spec in jobs]
    worst = worst_difference(packed, alone)
    rows.append(("pack of 3 against alone", f"max relative difference {worst:.2e} "
                 f"({'ok' if worst <= PACK_TOLERANCE else 'FAIL'}, tolerance {PACK_TOLERANCE:g})"))
    if worst > PACK_TOLERANCE:
        failures.append("pack against alone")
    once, twice = (train_pack(Pack((jobs[2],)), data, device)[0] for _ in range(2))
    same = [e | {"seconds": 0, "samples_per_second": 0} for e in once.epochs] == \
           [e | {"seconds": 0, "samples_per_second": 0} for e in twice.epochs] and once.metrics == twice.metrics
    rows.append(("same job twice", "identical" if same else "DIFFERENT"))
    if not same:
        failures.append("same job twice")

    # 3. seconds per model-epoch (the second epoch's, scaled to the full training set) and peak memory
    def timed(size: int, options: RunOptions = RunOptions(), autocast: str = "none"):
        pack = Pack(tuple(sparsity_job(ALPHAS[i % 5], GAMMAS[i % 2], 2, timing_dataset, batch, seed=i,
                                       autocast=autocast) for i in range(size)))
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        results = train_pack(pack, timing, device, options=options)
        if results[0].status != "done":
            failures.append(f"pack of {size} {options}")
            return results, math.nan, math.nan
        first, second = (e["seconds"] for e in results[0].epochs)
        return results, second * scale / size, first - second

    per_model: dict[tuple[int, bool], float] = {}
    compiling: dict[int, float] = {}  # pack size -> seconds the first compiled epoch took beyond the second
    eager_results = {}
    compile_worst = 0.0
    for size in sizes:
        for compiled in (False, True):
            if compiled and time.perf_counter() - started > 0.6 * args.budget:
                rows.append((f"pack of {size}, compiled", "skipped: the time budget is spent"))
                continue
            before = len(warnings.messages)
            results, seconds, extra = timed(size, RunOptions(compile=compiled))
            per_model[(size, compiled)] = seconds
            line = (f"{seconds:.4f} s per model-epoch, peak {results[0].peak_memory_bytes / 2**30:.2f} GiB")
            if compiled:
                fell_back = warnings.messages[before:]
                difference = worst_difference(results, eager_results[size])
                compile_worst = max(compile_worst, difference)
                compiling[size] = extra
                line += (f", compiling took {extra:.0f} s, {difference:.1e} from eager"
                         + (f"; FELL BACK TO EAGER: {fell_back[0]}" if fell_back else ""))
                if fell_back:
                    per_model[(size, compiled)] = math.nan
            else:
                eager_results[size] = results
            rows.append((f"pack of {size}, {'compiled' if compiled else 'eager'}", line))
    check = min(s for s in sizes if s > 1)  # a timed size: its compiled graph is cached
    jobs = tuple(sparsity_job(ALPHAS[i % 5], GAMMAS[i % 2], 2, timing_dataset, batch, seed=i) for i in range(check))
    try:
        difference = step_difference(jobs, timing, device)
        ok = all(difference[t] <= COMPILE_TOLERANCE[t] for t in TERMS)
        line = ("relative difference " + ", ".join(f"{t} {difference[t]:.0e} (<= {COMPILE_TOLERANCE[t]:g})"
                                                  for t in TERMS)
                + f": {'ok' if ok else 'FAIL'}; after 2 epochs {compile_worst:.1e} (Adam amplifies rounding)")
    except Exception as exc:  # a compiler's failure is a finding of this check, not its end
        ok, line = False, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if not ok:
        failures.append("compiled step against eager")
    rows.append((f"compiled step, pack of {check}", line))

    # 4. what cuDNN's determinism costs grouped convolutions; what bfloat16 autocast gains (eager)
    probe = max(s for s in sizes if s <= 16)
    _, fast, _ = timed(probe, RunOptions(deterministic=False))
    deterministic = per_model[(probe, False)]
    rows.append((f"cudnn determinism, pack of {probe}", f"{deterministic:.4f} s per model-epoch deterministic, "
                 f"{fast:.4f} with RunOptions(deterministic=False): determinism costs "
                 f"{(deterministic / fast - 1) * 100:+.0f}%{' (no cuDNN on a CPU: noise)' if device == 'cpu' else ''}"))
    _, low, _ = timed(probe, autocast="bfloat16")
    rows.append((f"autocast bfloat16, pack of {probe}", f"{low:.4f} s per model-epoch eager, "
                 f"{deterministic / low:.2f}x float32's speed"))

    # 5. the pack size harness.packing chooses for the sparsity sweep (90 jobs, at most 64 a pack)
    sweep = [sparsity_job(ALPHAS[i % 5], GAMMAS[i % 2], 1, dataset, batch, seed=i) for i in range(90)]
    tick = time.perf_counter()
    _, why = choose_pack_size(sweep, data, device)
    rows.append(("pack size chosen", f"{why} (measured in {time.perf_counter() - tick:.1f} s)"))

    # 6. the beta = 1 row for as many epochs as fit, in the fastest of the packings timed
    row_size = 10
    timed_ok = {k: v for k, v in per_model.items() if math.isfinite(v) and k[0] <= row_size} or {(1, False): 1.0}
    best, compiled = min(timed_ok, key=timed_ok.get)
    left = args.row_seconds if args.row_seconds is not None else args.budget - (time.perf_counter() - started)
    packs = math.ceil(row_size / best)
    left -= packs * compiling.get(best, 0.0) if compiled else 0.0  # a last, smaller pack compiles anew
    # 80% of what is left for the epochs, and one epoch's time for evaluating the packs
    epochs = max(1, int(0.8 * left / (timed_ok[(best, compiled)] * row_size)) - 1)
    grid = [sparsity_job(a, g, epochs, dataset, batch) for a in ALPHAS for g in GAMMAS]
    tick = time.perf_counter()
    results = []
    for start in range(0, len(grid), best):
        results += train_pack(Pack(tuple(grid[start:start + best])), data, device,
                              options=RunOptions(compile=compiled))
    rows.append((f"beta 1 row: {len(grid)} jobs x {epochs} epochs", f"{time.perf_counter() - tick:.0f} s in packs "
                 f"of {best}, {'compiled' if compiled else 'eager'}"))
    hoyer = {(r.spec["alpha"], r.spec["prior"]["gamma"]): next((m["value"] for m in r.metrics
                                                                if m["name"] == "hoyer"), math.nan) for r in results}
    for alpha in ALPHAS:
        rows.append((f"  hoyer at alpha {alpha:g}", "   ".join(f"gamma {g:g}: {hoyer[(alpha, g)]:.3f}"
                                                             for g in GAMMAS)))
    if any(math.isnan(v) for v in hoyer.values()):
        failures.append("the beta = 1 row")
    rows.append(("total", f"{time.perf_counter() - started:.0f} s; "
                 + (f"FAILED: {', '.join(failures)}" if failures else "every check passed")))

    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label.ljust(width)}  {value}" for label, value in rows))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
