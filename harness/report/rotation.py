"""Does Rotated-MNIST's rotation live in particular latent dimensions? (The report's open question.)

For each finished job of a Rotated-MNIST sweep, its codes of the test split (from the checkpoint) give the
normalised mutual information of every dimension with the angle (harness.metrics.factor_info, the numbers
of the `factor_info` metric). Against what baseline:
- chance: the same statistic with the angles shuffled among the test images (the largest NMI of any
  dimension, 99th percentile over PERMUTATIONS shuffles), which is what a code that ignores the angle
  scores given the plug-in estimator's bias at this sample size;
- the digit: the same statistic for the digit, the factor the model is known to encode.
A dimension "carries the angle" when its NMI exceeds the chance level. Where the angle lives in particular
dimensions, few dimensions carry it and the strongest carries much more than the next.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

PERMUTATIONS = 20


def rotation_dimensions(store: Path, sweep: str, numerics: int | None = None) -> pl.DataFrame:
    """One row per finished job of `sweep`: its setting and seed, the strongest and second strongest
    dimension's NMI with the angle (and which dimension), how many dimensions exceed the chance level,
    the chance level, and the digit's strongest NMI."""
    from harness.datasets import load_dataset
    from harness.db import queries
    from harness.db.store import Store
    from harness.evaluation import load_checkpoint, posteriors, read_spec
    from harness.metrics.factor_info import factor_information
    from harness.numerics import NUMERICS_VERSION

    runs = queries.finished_runs(store, sweep, NUMERICS_VERSION if numerics is None else numerics)
    handle, rows, loaded = Store(store), [], {}
    for job in runs.iter_rows(named=True):
        spec = read_spec(handle, job["job_id"])
        key = repr(spec.dataset)
        if key not in loaded:
            loaded = {key: load_dataset(spec.dataset, None, "cpu", spec.dtype)}
        data = loaded[key]
        spec, model = load_checkpoint(handle, job["job_id"], data, "cpu", spec)
        loc, _ = posteriors(model, data.test_x, spec.batch_size)
        names = list(data.factor_names)
        angle, digit = data.test_factors[:, names.index("angle")], data.test_factors[:, names.index("digit")]
        info = factor_information(loc, angle).normalised_mi  # (L,)
        gen = torch.Generator().manual_seed(int(spec.seed))
        null = torch.tensor([factor_information(loc, angle[torch.randperm(len(angle), generator=gen)])
                             .normalised_mi.max().item() for _ in range(PERMUTATIONS)])
        chance = torch.quantile(null, 0.99).item()
        top = info.sort(descending=True)
        rows.append({"job_id": job["job_id"], "alpha": job["alpha"], "beta": job["beta"], "gamma": job["gamma"],
                     "seed": job["seed"], "angle_nmi_top": top.values[0].item(), "angle_dim_top": int(top.indices[0]),
                     "angle_nmi_second": top.values[1].item(), "dims_above_chance": int((info > chance).sum()),
                     "latent_dims": len(info), "chance_nmi": chance,
                     "digit_nmi_top": factor_information(loc, digit).normalised_mi.max().item()})
    return pl.DataFrame(rows)


def summary(frame: pl.DataFrame) -> pl.DataFrame:
    """Per setting (alpha, beta, gamma): means over seeds of each column, and the seeds' count."""
    values = ["angle_nmi_top", "angle_nmi_second", "dims_above_chance", "chance_nmi", "digit_nmi_top"]
    return (frame.group_by("alpha", "beta", "gamma")
            .agg(*(pl.col(v).mean().round(3) for v in values), pl.col("angle_dim_top").alias("top_dims"),
                 pl.len().alias("seeds"))
            .sort("alpha", "beta", "gamma"))


def main(argv: list[str] | None = None) -> None:
    """python -m harness.report.rotation STORE SWEEP OUT.csv: the per-job table to OUT.csv and the summary
    to the terminal."""
    import sys

    store, sweep, out = argv if argv is not None else sys.argv[1:]
    frame = rotation_dimensions(Path(store), sweep)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200):
        print(summary(frame))


if __name__ == "__main__":
    main()
