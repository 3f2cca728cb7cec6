"""Training and evaluation of one pack: a loop and nothing else (no printing, no SQL).

Every job in a pack keeps its own random streams, derived from its seed and the stream's name:
`init` (weights), `data` (minibatch order), `noise` (reparameterisation), `prior` (prior samples for
D), `eval` (test-time noise), `iwae` (importance samples). The pack's members never share a random
draw, so a job's numbers do not depend on which pack it ran in, up to floating-point reordering.

How a pack runs, as opposed to what it computes, is a RunOptions: torch.compile or not, and whether
cuDNN may trade determinism for speed. Like the pack size, neither is part of a job's spec or id.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributions import Distribution

from harness import resume
from harness.checksums import sha256_file
from harness.datasets.base import Dataset
from harness.disk import full_disk, is_full, replacing
from harness.metrics.iwae import iwae_log_px
from harness.metrics.registry import compute_metrics, encode_grid, encodings, needs_grid, training_metrics
from harness.models.divergences import DIVERGENCES
from harness.models.likelihoods import build_likelihood
from harness.models.priors import build_prior
from harness.models.vae import PackedVAE, Terms, objective
from harness.numerics import NUMERICS_VERSION
from harness.shards import JobResult, metric_records
from harness.spec import JobSpec, Pack
from harness.streams import generator, metric_generator

STREAMS = ("init", "data", "noise", "prior", "eval", "iwae")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How a pack runs; not part of any job's spec (the numbers may differ in the last digits).

    compile: torch.compile the training step's forward pass and objective (on any device; it pays on
    CUDA; the first epoch's seconds include the compilation). A compilation that fails falls back to
    eager for the rest of the pack, with a warning on the `harness.train` logger.
    deterministic: cuDNN uses deterministic kernels and no autotuning (cudnn.deterministic = True,
    cudnn.benchmark = False), so the same job twice gives the same bits on one machine. False is the
    switch that trades this for speed: cuDNN autotunes its convolution algorithms (benchmark = True) and
    may pick nondeterministic ones; gpu_check.py measures what determinism costs grouped convolutions.
    threads: on a CPU, torch's intra-op threads for the pack (harness.workers chooses them by the pack's
    size). The thread count can change the order of floating-point reductions and so a job's numbers in
    their last digits (which training can grow, to about 2% of the ELBO after 50 steps): the same spec,
    seed, machine and thread count give the same bits, and each job records its threads and workers.
    """

    compile: bool = False
    deterministic: bool = True
    threads: int = 0  # torch's intra-op threads on a CPU (0: leave torch's default); harness.workers decides
    workers: int = 0  # CPU workers that ran beside each other (0: not decided by the local executor)


@dataclass(frozen=True)
class Progress:
    """An event for whoever watches: a job started, finished an epoch, or ended."""

    kind: str  # "start" | "epoch" | "end"
    job_id: str
    epoch: int = 0
    epochs: int = 0
    loss: float = math.nan
    status: str = ""


@dataclass
class _Member:
    job: JobSpec
    gens: dict[str, torch.Generator]
    result: JobResult
    alive: bool = True


@contextmanager
def _no_distribution_checks():
    """A diverged member's NaNs must not trip torch.distributions' argument checks for the whole pack."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _one_line(exc: Exception, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def build_model(jobs: tuple[JobSpec, ...], data: Dataset, device: torch.device) -> PackedVAE:
    """The pack's grouped network, each member initialised from its own `init` stream."""
    first = jobs[0]
    dtype = getattr(torch, first.dtype)
    autocast = None if first.autocast == "none" else getattr(torch, first.autocast)
    likelihood = build_likelihood(first.likelihood)
    prior = build_prior([j.prior for j in jobs], first.latent_dim, data)
    model = PackedVAE(first.arch, len(jobs), first.latent_dim, data.example_shape, likelihood, prior, autocast)
    model = model.to(device=device, dtype=dtype)
    model.init_weights([generator(j.seed, "init") for j in jobs])
    return model


def build_optimiser(model: PackedVAE, job: JobSpec) -> torch.optim.Optimizer:
    """The pack's optimiser (the reference's Adam with AMSGrad); lr is part of the pack key."""
    return torch.optim.Adam(model.parameters(), lr=job.lr, betas=(0.9, 0.999), amsgrad=True)


def member_state(model: PackedVAE, g: int) -> dict[str, torch.Tensor]:
    """Member g's weights as the state dict of a one-member model (same keys), for checkpoints: every
    per-member tensor's row block g, and whole what the prior shares among members (PriorModule.shared)."""
    groups = model.groups
    shared = {f"prior.{name}" for name in model.prior.shared}
    state = {}
    for key, tensor in model.state_dict().items():
        if tensor.dim() == 0 or key in shared:
            state[key] = tensor.clone()
        elif tensor.shape[0] % groups == 0:
            state[key] = tensor.chunk(groups, dim=0)[g].contiguous().clone()
        else:
            raise ValueError(f"cannot split {key} of shape {tuple(tensor.shape)} into {groups} members")
    return state


def pack_weights(jobs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a scalar carrying the pack's dtype and device, alpha (G,), beta (G,))."""
    like = torch.zeros((), device=device, dtype=getattr(torch, jobs[0].dtype))
    alpha = torch.tensor([j.alpha for j in jobs], device=device, dtype=like.dtype)
    beta = torch.tensor([j.beta for j in jobs], device=device, dtype=like.dtype)
    return like, alpha, beta


def _prior_samples(model: PackedVAE, members: list[_Member], stream: str, n: int, eps: torch.Tensor):
    """(G, n, L) prior samples for D from each member's `stream`; none are drawn where there is no D
    (or a batch of one), and `eps` stands in, unused."""
    if members[0].job.divergence == "none" or n < 2:
        return eps
    return model.prior.sample_members([m.gens[stream] for m in members], n)


def _batches(data: Dataset, members: list[_Member], batch: int, device: torch.device):
    """Yield (G, B, *shape) minibatches: each member follows its own permutation; the last partial
    batch is dropped (D_hat needs a full batch)."""
    n = len(data.train_x)
    perms = torch.stack([torch.randperm(n, generator=m.gens["data"], device=device) for m in members])  # (G, N)
    for start in range(0, n - batch + 1, batch):
        yield data.train_x[perms[:, start:start + batch]]


def _noise(members: list[_Member], stream: str, batch: int, latent: int, like: torch.Tensor) -> torch.Tensor:
    """(G, B, L) standard normal noise, member g from its own `stream`."""
    return torch.stack([torch.randn(batch, latent, generator=m.gens[stream], device=like.device, dtype=like.dtype)
                        for m in members])


def train_pack(pack: Pack, data: Dataset, device: torch.device | str,
               progress: Callable[[Progress], None] = lambda event: None,
               checkpoint_dir: Callable[[str], Path] | None = None,
               resume_dir: Path | None = None, save_every: int = 0, *,
               options: RunOptions = RunOptions()) -> list[JobResult]:
    """Train every job of `pack` for its epochs, evaluate it on the test set, return one result each.

    A member whose loss turns NaN or inf is marked diverged at that epoch and leaves the pack's loss;
    the others go on. An exception fails every member still running, with its text. With `resume_dir`,
    the pack saves its state there every `save_every` epochs and, if a killed run left one, goes on
    from it (harness.resume); the folder is removed when the pack ends. `options` say how it runs
    (compiled or not, cuDNN deterministic or not), never what it computes.
    """
    device = torch.device(device)
    jobs = pack.jobs
    started = time.time()
    members = [
        _Member(job, {s: generator(job.seed, s, device) for s in STREAMS},
                JobResult(job.job_id, job.to_dict(), "running", started=started, pack_id=pack.pack_id,
                          plugins=job.plugin_record(),
                          pack_size=len(jobs), device=str(device)))
        for job in jobs
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # process-wide flags, set by every pack for itself (they do nothing where cuDNN does not run). By default:
    # same spec and seed, same numbers on the same machine: no autotuned, nondeterministic kernels
    torch.backends.cudnn.deterministic = options.deterministic
    torch.backends.cudnn.benchmark = not options.deterministic
    if device.type == "cpu" and options.threads:
        torch.set_num_threads(options.threads)
    for m in members:
        m.result.run_options = {"compile": options.compile, "compiled": options.compile, "compile_error": "",
                                "deterministic": options.deterministic}
        if device.type == "cpu":  # the thread count may change the last digits (reductions' order)
            m.result.run_options.update(threads=torch.get_num_threads(), workers=options.workers or 1)
        progress(Progress("start", m.job.job_id, 0, m.job.epochs))
    try:
        with _no_distribution_checks():
            _train_and_evaluate(pack, members, data, device, progress, checkpoint_dir, resume_dir, save_every,
                                options.compile)
    except Exception as exc:  # one pack's failure is recorded, never raised into the sweep
        if is_full(exc):  # but a full disk is not the jobs' failure: the sweep stops, they run again
            raise full_disk(exc, f"writing the files of pack {pack.pack_id}") from exc
        for m in members:
            if m.result.status == "running":
                m.result.status, m.result.failed_epoch = "failed", len(m.result.epochs)
                m.result.error = _one_line(exc)
    finished = time.time()
    peak = _peak_memory(device)
    for m in members:
        m.result.finished, m.result.wall_seconds, m.result.peak_memory_bytes = finished, finished - started, peak
        if m.result.status != "diverged":
            progress(Progress("end", m.job.job_id, len(m.result.epochs), m.job.epochs, status=m.result.status))
    return [m.result for m in members]


class TrainStep:
    """A training step of the pack: forward pass and objective, backward over the living members' losses,
    Adam's step.

    With `compile`, torch.compile takes the forward pass and objective (not backward() nor the optimiser);
    dynamo breaks the graph where mmd_dim's Chebyshev sums read a number (.item()) and runs that part
    eagerly. Tensors stay in the contiguous format: inductor's convolution_backward failed on channels_last
    (torch 2.11). Compilation happens in the first step (the backward graph in its backward()): if that
    step raises, the batch-norm statistics it may have moved are put back and the pack trains eagerly,
    with one warning; a later exception is the pack's own and propagates.
    """

    def __init__(self, model: PackedVAE, optimiser: torch.optim.Optimizer, divergence, alpha: torch.Tensor,
                 beta: torch.Tensor, compile: bool):
        self.model, self.optimiser, self.divergence, self.alpha, self.beta = model, optimiser, divergence, alpha, beta
        self.compiled = torch.compile(self.terms, dynamic=False) if compile else None
        self.first = True
        self.fallback = ""  # why compiling failed, where it did

    def terms(self, x: torch.Tensor, eps: torch.Tensor, prior_z: torch.Tensor) -> Terms:
        return objective(self.model, x, self.model(x, eps), prior_z, self.alpha, self.beta, self.divergence)

    def _backward(self, forward, x, eps, prior_z, alive: torch.Tensor) -> Terms:
        terms = forward(x, eps, prior_z)
        total = torch.where(alive, terms.loss, torch.zeros_like(terms.loss)).sum()
        self.optimiser.zero_grad(set_to_none=True)
        total.backward()
        return terms

    def __call__(self, x: torch.Tensor, eps: torch.Tensor, prior_z: torch.Tensor, alive: torch.Tensor) -> Terms:
        if self.compiled is None:
            terms = self._backward(self.terms, x, eps, prior_z, alive)
        elif not self.first:
            terms = self._backward(self.compiled, x, eps, prior_z, alive)
        else:
            buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
            try:
                terms = self._backward(self.compiled, x, eps, prior_z, alive)
            except Exception as exc:  # a compiler's failure must not fail the jobs
                with torch.no_grad():
                    for name, b in self.model.named_buffers():
                        b.copy_(buffers[name])
                self.compiled, self.fallback = None, _one_line(exc)
                log.warning("torch.compile failed, the pack trains eagerly: %s", self.fallback)
                terms = self._backward(self.terms, x, eps, prior_z, alive)
        self.first = False
        self.optimiser.step()
        return terms


def _train_and_evaluate(pack: Pack, members: list[_Member], data: Dataset, device: torch.device,
                        progress: Callable[[Progress], None], checkpoint_dir, resume_dir: Path | None,
                        save_every: int, compile: bool = False) -> None:
    """The loop of train_pack: train (from a saved state where there is one), then evaluate and
    checkpoint the members still alive."""
    jobs = pack.jobs
    first = jobs[0]
    model = build_model(jobs, data, device)
    divergence = DIVERGENCES[first.divergence]
    like, alpha, beta = pack_weights(jobs, device)
    optimiser = build_optimiser(model, first)
    batch, latent = first.batch_size, first.latent_dim
    if len(data.train_x) < batch:
        raise ValueError(f"batch_size {batch} is larger than the training set ({len(data.train_x)} examples)")
    done = 0
    if resume_dir is not None:
        try:
            done = resume.load_state(resume_dir, model, optimiser, members, device)
        except resume.DamagedState as exc:  # nothing was loaded: train from the start, never from bad numbers
            moved = resume.set_aside(resume_dir)
            log.warning("resume state discarded: %s; moved aside to %s; the pack trains from epoch 0", exc, moved)
            for m in members:
                m.result.run_options["resume_discarded"] = str(exc)
    step = TrainStep(model, optimiser, divergence, alpha, beta, compile)
    for epoch in range(done + 1, first.epochs + 1):
        model.train()
        tick = time.perf_counter()
        sums = torch.zeros(4, len(jobs), device=device, dtype=like.dtype)  # loss, recon, kl, reg
        steps = 0
        alive = torch.tensor([m.alive for m in members], device=device)
        for x in _batches(data, members, batch, device):
            eps = _noise(members, "noise", batch, latent, like)
            prior_z = _prior_samples(model, members, "prior", batch, eps)
            terms = step(x, eps, prior_z, alive)
            sums += torch.stack([terms.loss.detach() / batch, terms.recon.detach(), terms.kl.detach(),
                                 terms.reg.detach()])
            steps += 1
        means = (sums / steps).tolist()  # synchronises: the timing below is honest on a GPU too
        seconds = time.perf_counter() - tick
        for g, m in enumerate(members):
            if not m.alive:
                continue
            record = {"epoch": epoch, "loss": means[0][g], "recon": means[1][g], "kl": means[2][g],
                      "reg": means[3][g], "seconds": seconds, "samples_per_second": steps * batch / seconds}
            m.result.epochs.append(record)
            if not all(math.isfinite(record[k]) for k in ("loss", "recon", "kl", "reg")):
                m.alive = False
                m.result.status, m.result.failed_epoch = "diverged", epoch
                m.result.error = f"loss became {record['loss']} in epoch {epoch}"
                progress(Progress("end", m.job.job_id, epoch, m.job.epochs, record["loss"], "diverged"))
            else:
                progress(Progress("epoch", m.job.job_id, epoch, m.job.epochs, record["loss"]))
        if not any(m.alive for m in members):
            break
        if resume_dir is not None and save_every and epoch % save_every == 0 and epoch < first.epochs:
            resume.save_state(resume_dir, epoch, model, optimiser, members)
    if step.fallback:  # compiling failed: the pack trained eagerly
        for m in members:
            m.result.run_options.update(compiled=False, compile_error=step.fallback)
    living = [g for g, m in enumerate(members) if m.alive]
    if living:
        evaluate(model, members, data, device)
        for g in living:  # done only once its artifacts exist: a failed save fails the member
            if checkpoint_dir is not None:
                members[g].result.artifacts.extend(save_checkpoint(model, g, members[g].job,
                                                                   checkpoint_dir(members[g].job.job_id)))
            members[g].result.status = "done"
    if resume_dir is not None:
        resume.clear(resume_dir)


@torch.no_grad()
def evaluate(model: PackedVAE, members: list[_Member], data: Dataset, device: torch.device) -> None:
    """Test-set ELBO and its terms, D_hat and reconstruction MSE (and IWAE where asked), then every
    registry metric that applies to the data (Hoyer sparsity, class magnitudes, disentanglement)."""
    model.eval()
    first = members[0].job
    groups, batch = len(members), first.batch_size
    like, alpha, beta = pack_weights([m.job for m in members], device)
    divergence = DIVERGENCES[first.divergence]
    n = len(data.test_x)
    images = data.test_x.dim() == 4
    totals = torch.zeros(5, groups, device=device, dtype=like.dtype)  # recon, kl, elbo, mse (sums); reg
    reg_batches = 0
    locs, scales = [], []
    for start in range(0, n, batch):
        chunk = data.test_x[start:start + batch]
        x = chunk.expand(groups, *chunk.shape)  # every member sees the same test images
        size = len(chunk)
        eps = _noise(members, "eval", size, first.latent_dim, like)
        enc = model(x, eps)
        prior_z = _prior_samples(model, members, "eval", size, eps)
        terms = objective(model, x, enc, prior_z, alpha, beta, divergence)
        mean = model.likelihood.mean(enc.out)
        if images:  # the [0, 1] scale, whatever the likelihood's support
            mean = mean.clamp(0, 1)
        mse = ((mean - x) ** 2).flatten(2).mean(-1).sum(1)  # (G,) sum over images of per-pixel MSE
        totals[:3] += torch.stack([terms.recon, terms.kl, terms.elbo]) * size
        totals[3] += mse
        if size > 1:
            totals[4] += terms.reg
            reg_batches += 1
        locs.append(enc.loc)
        scales.append(enc.scale)
    loc, scale = torch.cat(locs, dim=1), torch.cat(scales, dim=1)  # (G, N, L)
    means = (totals[:4] / n).tolist()
    regs = (totals[4] / max(reg_batches, 1)).tolist()
    iwae = None
    if first.iwae_k > 0:  # the same for the whole pack: iwae_k is part of the pack key
        x = data.test_x.unsqueeze(0).expand(groups, *data.test_x.shape)
        iwae = iwae_log_px(model, x, first.iwae_k, [m.gens["iwae"] for m in members],
                           batch_size=min(100, n), k_chunk=min(100, first.iwae_k)).mean(1).tolist()
    grid = None  # the whole factor grid's codes (G, N, L) twice and its factors, for the metrics that read it
    if data.grid is not None and needs_grid(training_metrics()):
        grid = encode_grid(data, lambda images: model.encoder(images.to(device).expand(groups, *images.shape)))
    for g, m in enumerate(members):
        if not m.alive:
            continue
        job = m.job
        values = {"recon": means[0][g], "kl": means[1][g], "elbo": means[2][g], "recon_mse": means[3][g],
                  "reg": regs[g]}
        # per datapoint, like the training loss: the batch loss alpha * B * D_hat divided by B
        values["loss"] = -(values["recon"] - job.beta * values["kl"]) + job.alpha * values["reg"]
        if iwae is not None:
            values["iwae"] = iwae[g]
        m.result.metrics = [{"split": "test", "name": k, "value": float(v), "metric": "elbo",
                             "version": NUMERICS_VERSION} for k, v in values.items()]
        if m.result.epochs:
            last = m.result.epochs[-1]
            m.result.metrics += [{"split": "train", "name": k, "value": float(last[k]), "metric": "elbo",
                                  "version": NUMERICS_VERSION} for k in ("loss", "recon", "kl", "reg")]
        encs = {"test": encodings(data, "test", loc[g], scale[g], job.prior.to_dict())}
        if grid is not None:
            encs["grid"] = encodings(data, "grid", grid[0][g], grid[1][g], job.prior.to_dict(), grid[2])
        outputs = compute_metrics(encs, training_metrics(), lambda name, seed=job.seed: metric_generator(seed, name))
        metrics, m.result.dim_stats, m.result.points = metric_records(outputs)
        m.result.metrics += metrics


def save_checkpoint(model: PackedVAE, g: int, job: JobSpec, folder: Path) -> list[dict[str, str]]:
    """safetensors weights of member g (as a one-member model) plus the JSON spec; never pickle."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights, spec = folder / "model.safetensors", folder / "spec.json"
    with replacing(weights) as tmp:
        save_file(member_state(model, g), str(tmp), metadata={"job_id": job.job_id})
    with replacing(spec) as tmp:
        tmp.write_text(job.canonical_json() + "\n")
    return [{"kind": "weights", "path": str(weights), "sha256": sha256_file(weights)},
            {"kind": "spec", "path": str(spec), "sha256": sha256_file(spec)}]
