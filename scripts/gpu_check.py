"""`make gpu-check`: one script that fits a short GPU lease and prints one table.

It checks that the training path runs on the device, that a pack agrees with its jobs trained alone
(float32, relative tolerance stated below), that the same job twice gives identical numbers, times the
sparsity model (conv32, batch 500, latent 50) per model-epoch at several pack sizes with the peak
memory, and trains the paper's beta = 1 row (alpha x gamma, 10 jobs) for as many epochs as fit the
time given, with its Hoyer table. It needs torch and the Fashion-MNIST files only (no duckdb, no
polars), so it runs on a bare device machine. `--tiny` is the same on a few hundred images, for a CPU.

    python scripts/gpu_check.py [--tiny] [--data-root DIR] [--row-seconds 180]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.datasets import load_dataset  # noqa: E402
from harness.schema import Options  # noqa: E402
from harness.spec import JobSpec, Pack  # noqa: E402
from harness.train import train_pack  # noqa: E402

# float32: a pack reorders the reductions of grouped convolutions, and training amplifies rounding; after
# one epoch its members match the jobs alone to this relative error (measured on a CPU: 1.9e-4)
PACK_TOLERANCE = 1e-3
ALPHAS, GAMMAS = (0.0, 10.0, 100.0, 500.0, 1000.0), (0.0, 0.8)


def sparsity_job(alpha: float, gamma: float, epochs: int, dataset: Options, batch: int, seed: int = 1) -> JobSpec:
    return JobSpec(dataset=dataset, arch="conv32", latent_dim=50, likelihood=Options("laplace", (("scale", 0.1),)),
                   prior=Options("sparse", (("gamma", gamma), ("spike_scale", 0.05))), divergence="mmd_dim",
                   alpha=alpha, beta=1.0, epochs=epochs, batch_size=batch, lr=5e-4, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few hundred images, pack sizes 1 and 2 (a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--row-seconds", type=float, default=180.0, help="time for the beta = 1 row")
    args = parser.parse_args()

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if args.tiny:
        dataset = Options("fashion_mnist", (("size", 32), ("subset", 20), ("subset_mode", "stratified"),
                                            ("test_subset", 200)))
        batch, sizes = 50, (1, 2)
    else:
        dataset = Options("fashion_mnist", (("size", 32), ("subset", 0), ("subset_mode", "first"),
                                            ("test_subset", 0)))
        batch, sizes = 500, (1, 8, 16, 32)
    device = args.device
    data = load_dataset(dataset, args.data_root, device, "float32")
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    rows: list[tuple[str, str]] = [("device", f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda})")]

    # 1. a pack agrees with its jobs alone; 2. the same job twice is identical
    jobs = tuple(sparsity_job(a, 0.8, 1, dataset, batch) for a in (0.0, 100.0, 1000.0))
    packed = train_pack(Pack(jobs), data, device)
    worst = 0.0
    for together, spec in zip(packed, jobs, strict=True):
        alone = train_pack(Pack((spec,)), data, device)[0]
        for a, b in zip(together.epochs, alone.epochs, strict=True):
            for term in ("loss", "recon", "kl", "reg"):
                worst = max(worst, abs(a[term] - b[term]) / max(abs(b[term]), 1e-12))
    rows.append(("pack of 3 against alone", f"max relative difference {worst:.2e} "
                 f"({'ok' if worst <= PACK_TOLERANCE else 'FAIL'}, tolerance {PACK_TOLERANCE:g})"))
    once, twice = (train_pack(Pack((jobs[2],)), data, device)[0] for _ in range(2))
    same = [e | {"seconds": 0, "samples_per_second": 0} for e in once.epochs] == \
           [e | {"seconds": 0, "samples_per_second": 0} for e in twice.epochs] and once.metrics == twice.metrics
    rows.append(("same job twice", "identical" if same else "DIFFERENT"))

    # 3. seconds per model-epoch and peak memory by pack size (eager; compiled packs are not built yet)
    per_model = {}
    for size in sizes:
        pack = Pack(tuple(sparsity_job(ALPHAS[i % 5], GAMMAS[i % 2], 1, dataset, batch, seed=i) for i in range(size)))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        results = train_pack(pack, data, device)
        seconds = results[0].epochs[0]["seconds"]
        per_model[size] = seconds / size
        rows.append((f"pack of {size}, eager", f"{per_model[size]:.3f} s per model-epoch, epoch {seconds:.2f} s, "
                     f"peak {results[0].peak_memory_bytes / 2**30:.2f} GiB"))
    rows.append(("compiled packs", "not built yet (issue 9, item 2)"))

    # 4. the beta = 1 row for as many epochs as fit
    row_size = 10
    best = min(per_model, key=per_model.get)
    epochs = max(1, int(args.row_seconds / (per_model[best] * row_size)))
    grid = [sparsity_job(a, g, epochs, dataset, batch) for a in ALPHAS for g in GAMMAS]
    tick = time.perf_counter()
    results = []
    for start in range(0, len(grid), best):
        results += train_pack(Pack(tuple(grid[start:start + best])), data, device)
    rows.append((f"beta 1 row: {len(grid)} jobs x {epochs} epochs", f"{time.perf_counter() - tick:.0f} s in packs "
                 f"of {best}"))
    hoyer = {(r.spec["alpha"], r.spec["prior"]["gamma"]): next(m["value"] for m in r.metrics
                                                               if m["name"] == "hoyer") for r in results}
    for alpha in ALPHAS:
        rows.append((f"  hoyer at alpha {alpha:g}", "   ".join(f"gamma {g:g}: {hoyer[(alpha, g)]:.3f}"
                                                             for g in GAMMAS)))

    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label.ljust(width)}  {value}" for label, value in rows))
    failed = worst > PACK_TOLERANCE or not same or any(math.isnan(v) for v in hoyer.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
