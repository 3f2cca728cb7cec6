"""Shared fixtures: the golden values, the real Fashion-MNIST (required in CI), tiny sweep files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Torch's OpenMP threads spin while they wait for each other. Where other processes share the cores (a
# developer's machine running two suites, a loaded CI runner), a spinning thread burns the time slice its
# partner needs, and a tiny pack took 9 to 18 s instead of 3 s at load average 5.5 on 2 cores. Waiting
# threads that sleep cost next to nothing on quiet cores. Set before torch loads; the workers that tests
# start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# a copy of the paper's reference values (shared/golden), so that a clone tests on its own
GOLDEN = Path(__file__).resolve().parent / "golden" / "reference_values.json"


@pytest.fixture(scope="session")
def golden() -> dict:
    if not GOLDEN.exists():
        pytest.fail(f"golden values not found at {GOLDEN}")
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="session")
def fashion_mnist_present() -> None:
    """Skip where Fashion-MNIST is absent on a developer's machine; CI installs it, so there it must exist."""
    from harness.datasets import fashion_mnist

    if fashion_mnist.locate(None) is None:
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST missing in CI: .ci/run must install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


TINY_SWEEP = """
[sweep]
name = "{name}"
description = "tiny end-to-end sweep for tests"
seeds = {seeds}

[base]
dataset = {{ name = "fashion_mnist", subset = {subset}, subset_mode = "stratified", test_subset = 200 }}
arch = "conv32"
latent_dim = 6
likelihood = {{ name = "laplace", scale = 0.1 }}
prior = {{ name = "sparse", gamma = 0.0 }}
divergence = "mmd_dim"
beta = 1.0
epochs = {epochs}
batch_size = 50
lr = 5e-4

[grid]
{grid}
"""
TINY_GRID = 'alpha = [0, 1000]\n"prior.gamma" = [0, 0.8]'  # 4 jobs per seed


@pytest.fixture
def tiny_sweep(tmp_path):
    def write(name: str = "tiny", seeds: str = "[1]", epochs: int = 2, subset: int = 20, grid: str = TINY_GRID) -> Path:
        return write_tiny_sweep(tmp_path, name, seeds, epochs, subset, grid)

    return write


def write_tiny_sweep(folder: Path, name: str = "tiny", seeds: str = "[1]", epochs: int = 2, subset: int = 20,
                     grid: str = TINY_GRID) -> Path:
    """folder/<name>.toml: the tiny sweep with these seeds, epochs, training images per class and [grid]."""
    path = folder / f"{name}.toml"
    path.write_text(TINY_SWEEP.format(name=name, seeds=seeds, epochs=epochs, subset=subset, grid=grid))
    return path
