"""Time to generate the whole shapes2d set (737,280 images); the target is under a minute on 2 cores.

Run with: pytest tests/benchmarks/test_bench_shapes2d.py --benchmark-only
The images are made in chunks and bit-packed (377 MB in all) so the benchmark does not need the 3 GB
that the full set takes as uint8.
"""

from __future__ import annotations

import numpy as np

from harness.datasets import shapes2d

CHUNK = 64 * shapes2d.BLOCK  # 64 (shape, scale, orientation) blocks at a time: 256 MB of uint8


def generate_packed() -> np.ndarray:
    """Every image of the grid, in grid order, as packed bits: (737,280, 512) uint8."""
    packed = np.empty((shapes2d.N_IMAGES, shapes2d.IMAGE * shapes2d.IMAGE // 8), dtype=np.uint8)
    for start in range(0, shapes2d.N_IMAGES, CHUNK):
        images = shapes2d.render(np.arange(start, min(start + CHUNK, shapes2d.N_IMAGES)))  # (n, 64, 64)
        packed[start:start + len(images)] = np.packbits(images.reshape(len(images), -1), axis=1)
    return packed


def test_bench_shapes2d_full_set(benchmark):
    packed = benchmark.pedantic(generate_packed, rounds=1, iterations=1)
    assert packed.shape == (737_280, 512)
    assert np.all(packed.any(axis=1))  # every image has a sprite in it
    assert benchmark.stats.stats.max < 60.0
