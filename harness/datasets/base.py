"""The one dataset interface every experiment uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.schema import Param


class DataUnavailable(RuntimeError):
    """The dataset could not be found or fetched; the message says every way to get it."""


class DataCorrupt(RuntimeError):
    """Files were found but failed a checksum or could not be read."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors already on the target device.

    Images are float tensors in [0, 1] shaped (N, C, H, W); vector data is (N, D).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor  # (N,) int64 class labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    source: str = ""  # where the data was found, for the record
    train_factors: torch.Tensor | None = None  # (N, F) factor values (indices)
    test_factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    note: str = ""  # e.g. "procedural stand-in for dSprites"
    # The whole factor grid the data come from (dSprites and its stand-in: every kept grid point), which the
    # Kim & Mnih score is computed on as the reference computes it: grid() yields (images (n, C, H, W) in the
    # data's dtype on the CPU, factor indices (n, F)) chunk by chunk, so that no more than a chunk is held.
    grid: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]] | None = None
    grid_size: int = 0  # images in the grid

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry: what the dataset is, its options, and how to find, fetch and load it."""

    name: str
    description: str
    train_size: int
    test_size: int
    example_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    load: Callable[..., Dataset]  # load(options: Options, root: Path | None, device, dtype) -> Dataset
    locate: Callable[[Path | None], str | None]  # where it is present, or None
    fetch: Callable[[Path | None], str]  # get it; returns a line saying from where
    options: dict[str, Param] = field(default_factory=dict)
    factors: tuple[tuple[str, int], ...] = ()
    # check the files against their published checksums: returns a line saying what matched, raises DataCorrupt
    # (or DataUnavailable where they are absent); None where no checksum is known
    verify: Callable[[Path | None], str] | None = None
