"""Pinwheel: R. Adams' four-armed 2-D toy data, as the reference scripts call it (SPEC section 4).

The reference calls pinwheel(radial_std=0.1, tangential_std=0.3, classes=4, per_class=100, rate=0.25),
and the generator scales the standard-normal features by [tangential_std, radial_std] = [0.3, 0.1]:
0.3 along the arm, 0.1 across it. Each point's arm is swept by rate * exp(f_1), which curls the arms.
Labels come in blocks (class 0 first), nothing is shuffled or rescaled, and the test set is a second,
independent draw from the same generator.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from harness.datasets.base import Dataset
from harness.schema import Options

RADIAL_STD = 0.1
TANGENTIAL_STD = 0.3
CLASSES = 4
RATE = 0.25
CLASS_NAMES = tuple(f"arm {k}" for k in range(CLASSES))


def pinwheel(per_class: int, generator: torch.Generator, radial_std: float = RADIAL_STD,
             tangential_std: float = TANGENTIAL_STD, classes: int = CLASSES,
             rate: float = RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw: points (classes * per_class, 2) float64 and labels (classes * per_class,) in blocks."""
    n = classes * per_class
    scale = torch.tensor([tangential_std, radial_std], dtype=torch.float64)  # the swap is the reference's
    features = torch.randn(n, 2, generator=generator, dtype=torch.float64) * scale  # (n, 2)
    features[:, 0] += 1.0
    labels = torch.arange(classes).repeat_interleave(per_class)  # (n,) 0 0 ... 1 1 ...
    angles = 2 * math.pi * labels / classes + rate * torch.exp(features[:, 0])  # (n,)
    cos, sin = torch.cos(angles), torch.sin(angles)
    f1, f2 = features[:, 0], features[:, 1]
    points = torch.stack([f1 * cos + f2 * sin, -f1 * sin + f2 * cos], dim=1)  # (n, 2)
    return points, labels


def locate(root: Path | None) -> str | None:
    return "procedural (generated on demand)"


def fetch(root: Path | None) -> str:
    return "nothing to fetch: pinwheel is generated on demand"


def verify(root: Path | None) -> str:
    return "procedural: nothing stored, nothing to check"


def load(options: Options, root: Path | None, device, dtype) -> Dataset:
    generator = torch.Generator().manual_seed(options.get("seed", 0))
    train_x, train_y = pinwheel(options.get("n_train", 100), generator)
    test_x, test_y = pinwheel(options.get("n_test", 100), generator)  # an independent second draw
    return Dataset(
        name="pinwheel",
        train_x=train_x.to(device=device, dtype=dtype),
        train_y=train_y.to(device),
        test_x=test_x.to(device=device, dtype=dtype),
        test_y=test_y.to(device),
        class_names=CLASS_NAMES,
        source="procedural",
        note="R. Adams' pinwheel, unscaled 2-D points (not in [0, 1]); labels in blocks",
    )
