"""shapes2d: a procedural stand-in for dSprites, generated on demand over the dSprites factor grid.

Factors, in dSprites' order (posY varies fastest): shape (square, ellipse, heart), scale (6 values
0.5..1), orientation (40 values 2 pi k / 40), posX (32), posY (32): 737,280 binary 64x64 images. These
are NOT the real dSprites images (`dsprites` reads those when the file is present); every record says
"procedural stand-in for dSprites".

How an image is drawn: a shape is an implicit inside-test f(u, v) <= 0 in its own frame, where (u, v)
is the pixel centre's offset from the sprite centre, turned by -orientation and divided by scale * 6 px.
Sprite centres sit at 8.75 + 1.5 k px (k = 0..31), so they fall on two sub-pixel phases only, and a
sprite at any position is a whole-pixel shift of the same sprite at the same phase. For each (shape,
scale, orientation) block the generator therefore evaluates the inside-test once per phase pair on a
111x111 canvas and takes the 1,024 positions as 64x64 windows of those canvases (a strided gather):
the pixels are exactly those of evaluating the test on each image's own grid, at a fraction of the
cost (see tests/benchmarks/test_bench_shapes2d.py for the time of the full set).

Memory: images are made as uint8, and only for the indices a load asks for; the Dataset holds them as
float (the interface), so the full training set as float32 needs 12 GB (4 bytes x 737,280 x 4,096).
Use `subset` or `stride` for anything smaller. There is no test split in dSprites: test is a seeded
random 10,000 of the same grid (it overlaps training, as the paper's metrics use the whole set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from harness.datasets.base import Dataset
from harness.schema import Options, Param

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
STRIDED = (False, False, True, True, True)  # which factors `stride` subsamples
STRIDES = (1, 2, 4, 8)  # divide 40 and 32
N_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
BLOCK = 32 * 32  # images per (shape, scale, orientation) block: the positions
TEST_SIZE = 10_000
NOTE = "procedural stand-in for dSprites"

# Options of shapes2d and dsprites (same factor grid, same split).
OPTIONS: dict[str, Param] = {
    "stride": Param(int, 1, "keep every stride-th orientation, posX and posY (2: 92,160 images)",
                    lambda v: v in STRIDES, "one of 1, 2, 4, 8"),
    "seed": Param(int, 0, "fixes the training order (so subset N is N random images) and the test draw"),
}

SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = 2 * np.pi * np.arange(40) / 40
IMAGE = 64
UNIT = 6.0  # px: half the side of the square at scale 1
REACH = 1.42  # units: no shape reaches further from its centre (the square's corner: sqrt 2)
CENTRES_Q = 35 + 6 * np.arange(32)  # sprite centres in quarter pixels: 8.75, 10.25, ..., 55.25 px


# ---------------------------------------------------------------------------------------------------
# The shapes: inside-tests in the sprite's frame, unit size


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.3) ** 2 + (v / 0.65) ** 2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u, 0.12 - v  # y up, shifted so the heart is centred (tip at the bottom of the image)
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0


INSIDE = (_square, _ellipse, _heart)  # in the order of SHAPES


def inside(shape: int, scale: float, angle: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Whether pixel centres at offsets (dx, dy) px from the sprite centre are inside the sprite."""
    cos, sin = np.cos(angle), np.sin(angle)
    radius = scale * UNIT
    u = (cos * dx + sin * dy) / radius
    v = (-sin * dx + cos * dy) / radius
    return INSIDE[shape](u, v)


# ---------------------------------------------------------------------------------------------------
# Positions: whole-pixel part and sub-pixel phase of each sprite centre

_WHOLE = CENTRES_Q // 4  # (32,) px
_PHASES, _PHASE_OF = np.unique(CENTRES_Q % 4, return_inverse=True)  # phases in quarter px; (32,) index
_BASE = int(_WHOLE.min())
_SPAN = int(_WHOLE.max()) - _BASE  # 47: the largest whole-pixel shift
_SHIFT = _SPAN - (_WHOLE - _BASE)  # (32,) where each position's 64x64 window starts in the canvas
CANVAS = IMAGE + _SPAN  # 111


# Only a patch around the sprite centre can be inside: 1.42 units * 6 px < 9 px, plus a pixel of slack.
_REACH = int(np.ceil(REACH * UNIT)) + 1
_PATCH = slice(_SPAN + _BASE - _REACH, _SPAN + _BASE + _REACH + 1)  # canvas rows/columns evaluated


def _patch_offsets() -> np.ndarray:
    """Pixel-centre offsets from the sprite centre across the patch, per phase: (P, patch)."""
    centre = _SPAN + _BASE + _PHASES / 4.0  # (P,) the sprite centre in canvas pixels
    return np.arange(CANVAS)[_PATCH][None, :] + 0.5 - centre[:, None]


def render_block(block: int) -> np.ndarray:
    """The canvases of one (shape, scale, orientation) block: bool (P_y, P_x, CANVAS, CANVAS)."""
    shape, scale, orientation = np.unravel_index(block, FACTOR_SIZES[:3])
    offsets = _patch_offsets()  # (P, patch)
    dy = offsets[:, None, :, None]  # (P_y, 1, patch, 1)
    dx = offsets[None, :, None, :]  # (1, P_x, 1, patch)
    canvases = np.zeros((len(_PHASES), len(_PHASES), CANVAS, CANVAS), dtype=bool)
    canvases[..., _PATCH, _PATCH] = inside(int(shape), SCALES[scale], ORIENTATIONS[orientation], dx, dy)
    return canvases


def _gather(canvases: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray) -> np.ndarray:
    """The 64x64 images at positions (pos_x, pos_y), each (n,), cut from the block's canvases."""
    windows = sliding_window_view(canvases, (IMAGE, IMAGE), axis=(-2, -1))  # (P_y, P_x, S+1, S+1, 64, 64)
    return windows[_PHASE_OF[pos_y], _PHASE_OF[pos_x], _SHIFT[pos_y], _SHIFT[pos_x]]  # (n, 64, 64)


def render(indices: np.ndarray) -> np.ndarray:
    """Images at flat grid indices (n,), in that order: uint8 (n, 64, 64) of 0 and 1."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices), IMAGE, IMAGE), dtype=np.uint8)
    blocks = indices // BLOCK
    order = np.argsort(blocks, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(blocks[order]) != 0])
    for first, last in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        where = order[first:last]  # positions in `out` of this block's images
        position = indices[where] % BLOCK
        out[where] = _gather(render_block(int(blocks[order[first]])), position // 32, position % 32)
    return out


def render_direct(index: int) -> np.ndarray:
    """One image by evaluating the inside-test on its own 64x64 grid (slow; the reference for tests)."""
    shape, scale, orientation, pos_x, pos_y = np.unravel_index(index, FACTOR_SIZES)
    pixel = np.arange(IMAGE) + 0.5
    dx = (pixel - CENTRES_Q[pos_x] / 4.0)[None, :]  # (1, 64)
    dy = (pixel - CENTRES_Q[pos_y] / 4.0)[:, None]  # (64, 1)
    return inside(int(shape), SCALES[scale], ORIENTATIONS[orientation], dx, dy).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# The factor grid and the train/test split (shared with `dsprites`, which has the same grid)


def factors_of(indices: np.ndarray) -> np.ndarray:
    """Flat grid indices (n,) -> factor indices (n, 5) in FACTOR_NAMES order."""
    return np.stack(np.unravel_index(np.asarray(indices), FACTOR_SIZES), axis=1).astype(np.int64)


def grid_indices(stride: int) -> np.ndarray:
    """Flat indices of the grid points kept when orientation, posX and posY take every stride-th value."""
    axes = [np.arange(0, size, stride if strided else 1) for size, strided in zip(FACTOR_SIZES, STRIDED, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.ravel_multi_index([m.ravel() for m in mesh], FACTOR_SIZES)


def kept_sizes(stride: int) -> tuple[int, ...]:
    return tuple(size // stride if strided else size for size, strided in zip(FACTOR_SIZES, STRIDED, strict=True))


def compact_factors(indices: np.ndarray, stride: int) -> np.ndarray:
    """Factor values renumbered 0..kept-1 along the subsampled factors: (n, 5) int64."""
    return factors_of(indices) // np.array([stride if s else 1 for s in STRIDED])


@dataclass(frozen=True)
class GridSplit:
    """Which grid points a load returns (flat indices, in order) and the kept size of each factor."""

    train: np.ndarray
    test: np.ndarray
    factor_sizes: tuple[int, ...]


def _first(indices: np.ndarray, n: int, mode: str) -> np.ndarray:
    """The first `n` indices, or the first `n` of each shape ('stratified'), keeping their order."""
    if n <= 0 or n >= len(indices):
        return indices
    if mode == "first":
        return indices[:n]
    shapes = indices // (N_IMAGES // FACTOR_SIZES[0])
    keep = np.zeros(len(indices), dtype=bool)
    for shape in range(FACTOR_SIZES[0]):
        keep[np.flatnonzero(shapes == shape)[:n]] = True
    return indices[keep]


def split(options: Options) -> GridSplit:
    """Train: the kept grid in a seeded random order (so `subset` N is N random images); test: a
    second seeded draw of up to 10,000 of the same points. Subsets are taken here, before any image is
    made, so that a small subset never builds the full set."""
    stride = options.get("stride", 1)
    kept = grid_indices(stride)
    generator = torch.Generator().manual_seed(options.get("seed", 0))
    train = kept[torch.randperm(len(kept), generator=generator).numpy()]
    test = kept[torch.randperm(len(kept), generator=generator)[:TEST_SIZE].numpy()]
    return GridSplit(
        train=_first(train, options.get("subset", 0), options.get("subset_mode", "first")),
        test=_first(test, options.get("test_subset", 0), "first"),
        factor_sizes=kept_sizes(stride),
    )


def images_to_float(images: np.ndarray, device, dtype, chunk: int = 65_536) -> torch.Tensor:
    """uint8 (n, 64, 64) of 0/1 -> float (n, 1, 64, 64) on `device`, converted chunk by chunk."""
    out = torch.empty((len(images), 1, IMAGE, IMAGE), device=device, dtype=dtype)
    for start in range(0, len(images), chunk):
        out[start:start + chunk, 0] = torch.from_numpy(images[start:start + chunk]).to(device).to(dtype)
    return out


GRID_CHUNK = 4096  # images made and handed over at once by a Dataset's grid(): 64 MB as float32


def grid_chunks(stride: int, images_of, dtype, chunk: int = GRID_CHUNK):
    """The whole kept grid in flat-index order, chunk by chunk: (float images (n, 1, 64, 64) on the CPU,
    compact factor indices (n, 5))."""
    kept = grid_indices(stride)
    for start in range(0, len(kept), chunk):
        indices = kept[start:start + chunk]
        yield images_to_float(images_of(indices), "cpu", dtype), torch.from_numpy(compact_factors(indices, stride))


def make_dataset(name: str, gridsplit: GridSplit, stride: int, images_of, device, dtype, source: str,
                 note: str) -> Dataset:
    """The Dataset for a split, with images from `images_of(indices) -> uint8 (n, 64, 64)`."""
    parts = {}
    for part, indices in (("train", gridsplit.train), ("test", gridsplit.test)):
        factors = torch.from_numpy(compact_factors(indices, stride)).to(device)  # (n, 5)
        parts[part] = (images_to_float(images_of(indices), device, dtype), factors[:, 0].clone(), factors)
    return Dataset(
        name=name,
        train_x=parts["train"][0], train_y=parts["train"][1], train_factors=parts["train"][2],
        test_x=parts["test"][0], test_y=parts["test"][1], test_factors=parts["test"][2],
        class_names=SHAPES,
        source=source,
        factor_names=FACTOR_NAMES,
        factor_sizes=gridsplit.factor_sizes,
        note=note,
        grid=lambda: grid_chunks(stride, images_of, dtype),
        grid_size=int(np.prod(gridsplit.factor_sizes)),
    )


# ---------------------------------------------------------------------------------------------------
# Registry functions


def locate(root: Path | None) -> str | None:
    return "procedural (generated on demand)"


def fetch(root: Path | None) -> str:
    return "nothing to fetch: shapes2d is generated on demand"


def verify(root: Path | None) -> str:
    return "procedural: nothing stored, nothing to check"


def load(options: Options, root: Path | None, device, dtype) -> Dataset:
    stride = options.get("stride", 1)
    return make_dataset("shapes2d", split(options), stride, render, device, dtype, source="procedural",
                        note=f"{NOTE} (square, ellipse, heart on the dSprites factor grid; stride {stride})")
