"""A job's random streams: each drawn from its own generator, seeded from the job's seed and the stream's
name, so that a job's numbers depend on neither the pack it ran in nor what else was drawn before.
Training uses `init`, `data`, `noise`, `prior`, `eval` and `iwae` (harness.train); each registry metric
`metric:<name>`, at the end of training and in `harness eval` alike."""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of a job."""
    digest = hashlib.sha256(f"harness:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def metric_generator(seed: int, name: str) -> torch.Generator:
    """The job's own random stream for metric `name` (e.g. Kim & Mnih's votes)."""
    return generator(seed, f"metric:{name}")
