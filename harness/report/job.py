"""Per-job figures from a stored checkpoint: reconstructions, decoded prior samples, latent traversals.

Each function loads jobs/<job_id>/spec.json and model.safetensors, the job's test split (the dataset as
its spec names it), and writes `{job_id}_<figure>` as PNG and PDF plus a CSV of what it plotted; it
returns the paths. Image data is drawn as grids; vector data (pinwheel's 2-D points) as scatters of the
first two coordinates. No printing: the CLI reports the paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from harness.datasets import Dataset, load_dataset  # noqa: E402
from harness.db.store import Store  # noqa: E402
from harness.evaluation import load_checkpoint, posteriors, read_spec  # noqa: E402
from harness.spec import JobSpec  # noqa: E402
from harness.streams import generator  # noqa: E402

MAX_TRAVERSED = 10  # dims shown by default: those whose posterior means vary most over the test set
SAMPLE_STREAM = "report:samples"


@dataclass(frozen=True)
class Loaded:
    spec: JobSpec
    data: Dataset
    model: torch.nn.Module  # a one-member PackedVAE in eval mode, on the CPU

    @property
    def is_image(self) -> bool:
        return self.data.test_x.dim() > 2  # images (N, C, H, W); vector data (N, D)


def load_job(store: Store, job_id: str, data_root: str | None = None) -> Loaded:
    """The job's spec, test data and model; FileNotFoundError naming the job when its checkpoint is missing."""
    folder = store.job_dir(job_id)
    absent = [name for name in ("spec.json", "model.safetensors") if not (folder / name).is_file()]
    if absent:
        raise FileNotFoundError(f"job {job_id}: no checkpoint in {folder} (missing {', '.join(absent)}); "
                                "only jobs that finished training leave one")
    spec = read_spec(store, job_id)
    data = load_dataset(spec.dataset, data_root, "cpu", spec.dtype)
    _, model = load_checkpoint(store, job_id, data, "cpu", spec)
    return Loaded(spec, data, model)


def title(spec: JobSpec, job_id: str, what: str) -> str:
    """'<what>, job <id>' over the settings that tell jobs apart: dataset, prior and its parameters, alpha,
    beta, seed."""
    prior = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.prior.params)
    return (f"{what}, job {job_id}\n{spec.dataset.name}, prior {spec.prior.name}"
            f"{f'({prior})' if prior else ''}, alpha={spec.alpha:g}, beta={spec.beta:g}, seed {spec.seed}")


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@torch.no_grad()
def _decode(model, z: torch.Tensor, clamp: bool) -> torch.Tensor:
    """The likelihood's mean for latents z (N, L): (N, *example_shape), in [0, 1] for images."""
    mean = model.likelihood.mean(model.decoder(z.unsqueeze(0)))[0]  # (N, *shape)
    return mean.clamp(0, 1) if clamp else mean


def _encode(model, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means (N, L) of x (N, *shape), `batch` examples at a time."""
    return posteriors(model, x, batch)[0]


def _save(fig, frame: pl.DataFrame, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    frame.write_csv(paths[2])
    return paths


def _image_grid(rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None, heading: str):
    """A figure with one row of images per tensor in `rows`, each (K, C, H, W) in [0, 1]: square cells of
    one inch, a small gap between them, row labels on the left, column labels on top."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    gap, head = 0.06, 0.7 + (0.2 if col_labels else 0.0)  # inches
    width, height = n_cols + gap * (n_cols - 1), n_rows + gap * (n_rows - 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height + head), squeeze=False)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=height / (height + head), wspace=gap, hspace=gap)
    for i, images in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(images):
                image = images[j].detach().float().cpu()
                if image.shape[0] == 1:
                    ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(image.permute(1, 2, 0).numpy())
            if i == 0 and col_labels:
                ax.set_title(col_labels[j], fontsize=7)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(heading, fontsize=8, y=1 - 0.1 / (height + head), va="top")
    return fig


def _points(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """The first two coordinates of vector data (N, D) (D = 1: against zero)."""
    x = x.detach().double().cpu()
    second = x[:, 1] if x.shape[1] > 1 else torch.zeros(len(x), dtype=x.dtype)
    return x[:, 0].tolist(), second.tolist()


def _columns(prefix: str, values: torch.Tensor) -> dict[str, list[float]]:
    """{'prefix_0': [...], 'prefix_1': [...]} from (N, D)."""
    values = values.detach().double().cpu()
    return {f"{prefix}_{d}": values[:, d].tolist() for d in range(values.shape[1])}


def reconstructions(store: Store, job_id: str, out: Path, *, data_root: str | None = None,
                    n: int = 8) -> list[Path]:
    """The first n test inputs and their reconstructions (the likelihood's mean at the posterior mean):
    a two-row grid for images, a scatter with input-to-reconstruction segments for vector data."""
    job = load_job(store, job_id, data_root)
    x = job.data.test_x[:n]  # (n, *shape)
    recon = _decode(job.model, _encode(job.model, x), clamp=job.is_image)  # (n, *shape)
    heading = title(job.spec, job_id, f"Reconstructions of the first {len(x)} test inputs")
    frame = pl.DataFrame({"index": list(range(len(x))), "label": job.data.test_y[:n].cpu().tolist()})
    if job.is_image:
        fig = _image_grid([x, recon], ["input", "reconstruction"], [str(i) for i in range(len(x))], heading)
        error = (recon - x).abs().flatten(1).mean(1)  # (n,)
        frame = frame.with_columns(pl.Series("mean_abs_error", error.double().tolist()))
    else:
        (x0, x1), (r0, r1) = _points(x), _points(recon)
        fig, ax = plt.subplots(figsize=(5, 5))
        for a, b, c, d in zip(x0, x1, r0, r1, strict=True):
            ax.plot([a, c], [b, d], color="0.6", lw=0.8, zorder=1)
        ax.scatter(x0, x1, s=18, label="input", zorder=2)
        ax.scatter(r0, r1, s=18, marker="x", label="reconstruction", zorder=3)
        ax.set_xlabel("x_0")
        ax.set_ylabel("x_1")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
        ax.set_title(heading, fontsize=8)
        frame = frame.with_columns(**{k: pl.Series(v) for k, v in {**_columns("input", x),
                                                                   **_columns("recon", recon)}.items()})
    return _save(fig, frame, out, f"{job_id}_reconstructions")


def prior_samples(store: Store, job_id: str, out: Path, *, data_root: str | None = None,
                  n: int = 16) -> list[Path]:
    """n samples z ~ p(z) (the job's seed, stream 'report:samples') decoded to the likelihood's mean: an
    image grid, or for vector data a scatter of the latents beside one of the decoded points."""
    job = load_job(store, job_id, data_root)
    z = job.model.prior.sample_members([generator(job.spec.seed, SAMPLE_STREAM)], n)[0]  # (n, L)
    x = _decode(job.model, z, clamp=job.is_image)  # (n, *shape)
    heading = title(job.spec, job_id, f"{n} decoded prior samples")
    frame = pl.DataFrame({"index": list(range(n)), **_columns("z", z)})
    if job.is_image:
        cols = min(n, 8)
        rows = [x[start:start + cols] for start in range(0, n, cols)]
        fig = _image_grid(rows, [f"{start}-{start + len(r) - 1}" for start, r in zip(range(0, n, cols), rows,
                                                                                   strict=True)], None, heading)
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.5), layout="constrained")
        left.scatter(*_points(z), s=14)
        left.set_title("z ~ p(z)" + (" (dims 0, 1)" if z.shape[1] > 2 else ""), fontsize=8)
        left.set_xlabel("z_0")
        left.set_ylabel("z_1")
        right.scatter(*_points(x), s=14, color="C1")
        right.set_title("decoded mean", fontsize=8)
        right.set_xlabel("x_0")
        right.set_ylabel("x_1")
        for ax in (left, right):
            ax.set_aspect("equal", adjustable="datalim")
        fig.suptitle(heading, fontsize=8)
        frame = frame.with_columns(**{k: pl.Series(v) for k, v in _columns("x", x).items()})
    return _save(fig, frame, out, f"{job_id}_prior_samples")


def traversals(store: Store, job_id: str, out: Path, *, data_root: str | None = None,
               dims: list[int] | None = None, steps: int = 7, span: float = 2.0) -> list[Path]:
    """Latent traversals of the first test input: its posterior mean with dimension d replaced by each
    of linspace(-span, span, steps), decoded; one row per dimension. By default the (at most 10)
    dimensions whose posterior means vary most over the test set, most varied first. Image data only."""
    job = load_job(store, job_id, data_root)
    if not job.is_image:
        raise ValueError(f"job {job_id}: traversals need image data; {job.spec.dataset.name} is vector data "
                         "(use reconstructions or prior_samples)")
    if steps < 2:
        raise ValueError(f"job {job_id}: steps must be >= 2, got {steps}")
    means = _encode(job.model, job.data.test_x, job.spec.batch_size)  # (N, L)
    variance = means.var(0, correction=0) if len(means) > 1 else torch.zeros(means.shape[1], dtype=means.dtype)
    latent = means.shape[1]
    if dims is None:
        dims = variance.argsort(descending=True)[:MAX_TRAVERSED].tolist()
    bad = [d for d in dims if not 0 <= d < latent]
    if bad or not dims:
        raise ValueError(f"job {job_id}: dims must be a non-empty list of integers in [0, {latent}), got {dims}")
    values = [-span + 2 * span * i / (steps - 1) for i in range(steps)]  # linspace, exactly 0 in the middle
    base = means[0]  # (L,)
    z = base.repeat(len(dims), steps, 1)  # (D, S, L)
    for row, d in enumerate(dims):
        z[row, :, d] = torch.tensor(values, dtype=z.dtype)
    images = _decode(job.model, z.flatten(0, 1), clamp=True).unflatten(0, (len(dims), steps))  # (D, S, *shape)
    heading = title(job.spec, job_id, f"Latent traversals of test input 0 over [{-span:g}, {span:g}]")
    fig = _image_grid(list(images), [f"dim {d}" for d in dims], [f"{v:+.2f}" if v else "0" for v in values], heading)
    frame = pl.DataFrame({
        "row": list(range(len(dims))),
        "dim": dims,
        "variance_of_means": [float(variance[d]) for d in dims],
        "input_mean": [float(base[d]) for d in dims],
        "values": [";".join(f"{v:g}" for v in values)] * len(dims),
    })
    return _save(fig, frame, out, f"{job_id}_traversals")
