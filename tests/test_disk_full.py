"""A full disk stops a sweep with one line: no traceback, no trained job marked failed, no good shard set
aside, no claim or temporary file left; space freed, the same command finishes with the numbers of a run
that never met a full disk. The end-to-end tests run the real CLI on a small tmpfs (they need root, as CI
has); the unit tests below them need nothing."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from harness.db.ingest import Ingest
from harness.db.migrations import rollback
from harness.db.store import Store, StoreWriteError
from harness.disk import DiskFull, full_disk, is_full, remove_in_flight, replacing
from harness.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]


def pinwheel_sweep(folder: Path) -> Path:
    """16 pinwheel jobs of 2 epochs (23 MB of store): a few seconds on 2 cores."""
    text = (ROOT / "sweeps" / "repro" / "clustering.toml").read_text()
    path = folder / "tiny.toml"
    path.write_text(text.replace('name = "repro_clustering"', 'name = "tiny"').replace("epochs = 500", "epochs = 2")
                    .replace("seeds = [1, 2, 3]", "seeds = [1]"))
    return path


def numbers(store: Path) -> tuple[list, list]:
    with duckdb.connect(str(store), read_only=True) as con:
        return (con.execute("SELECT job_id, split, name, value FROM metrics ORDER BY ALL").fetchall(),
                con.execute("SELECT job_id, epoch, loss, recon, kl, reg FROM epochs ORDER BY ALL").fetchall())


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture
def small_disk(tmp_path):
    """A function that mounts a tmpfs of the given size at tmp_path/disk (or resizes it); unmounted after."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        options = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(size)
        return where

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, tuple[list, list]]:
    folder = tmp_path_factory.mktemp("roomy")
    sweep = pinwheel_sweep(folder)
    done = harness("sweep", "run", str(sweep), "--store", str(folder / "store" / "harness.duckdb"))
    assert done.returncode == 0, done.stderr
    return sweep, numbers(folder / "store" / "harness.duckdb")


def leftovers(store: Path) -> list[str]:
    """What a stopped run must not leave: claims, temporary files, quarantined shards, failed results."""
    found = [str(p) for p in store.rglob("*.tmp")] + [str(p) for p in (store / "claims").glob("*")]
    found += [str(p) for p in (store / "quarantine").glob("*")] if (store / "quarantine").exists() else []
    for shard in (store / "jobs").glob("*/result.json"):
        status = json.loads(shard.read_text())["status"]
        if status != "done":
            found.append(f"{shard}: {status}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("size", ["6m", "14m"])  # the database fills first at 6 MB, the jobs' shards at 14 MB
def test_a_disk_that_fills_mid_sweep_stops_it_in_one_line_and_the_same_command_finishes(small_disk, reference, size):
    sweep, expected = reference
    store = small_disk(size) / "harness.duckdb"
    stopped = harness("sweep", "run", str(sweep), "--store", str(store))
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stdout + stopped.stderr, stopped.stderr
    assert len(errors) == 1 and "the disk is full" in errors[0] and "none was marked failed" in errors[0], errors
    assert " of 16 jobs are done" in errors[0] and "16 of 16" not in errors[0]
    assert leftovers(store.parent) == []
    small_disk("64m")  # space freed
    finished = harness("sweep", "run", str(sweep), "--store", str(store))
    assert finished.returncode == 0 and "0 failed" in finished.stdout, finished.stdout + finished.stderr
    assert numbers(store) == expected  # bit-equal to a run that never met a full disk
    assert leftovers(store.parent) == []


@pytest.mark.slow
def test_a_disk_full_from_the_start_is_one_line_and_leaves_no_temporary_file(small_disk, reference):
    sweep, _ = reference
    store = small_disk("300k") / "harness.duckdb"
    stopped = harness("sweep", "run", str(sweep), "--store", str(store))
    assert stopped.returncode == 1 and "Traceback" not in stopped.stdout + stopped.stderr, stopped.stderr
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "free some space" in errors[0], errors
    assert leftovers(store.parent) == []


@pytest.mark.slow
def test_other_commands_on_a_full_disk_give_one_line(small_disk, reference, tmp_path):
    sweep, _ = reference
    disk = small_disk("64m")
    store = disk / "harness.duckdb"
    assert harness("sweep", "run", str(sweep), "--store", str(store)).returncode == 0
    with open(disk / "filler", "wb") as filler:  # fill what is left
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    before = numbers(store)
    for args in (["eval", "--metric", "hoyer", "--force"], ["db", "rebuild"],
                 ["report", "figures", "--no-job-images", "--out", str(disk / "figures")]):
        result = harness(*args, "--store", str(store))
        where = f"{args}: exit {result.returncode}\n{result.stderr}"
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, where
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1, where
    assert numbers(store) == before
    assert not list(disk.glob(".harness.duckdb.rebuild*"))


# -- without a small disk --------------------------------------------------------------------------------


def test_a_full_disk_is_told_from_other_errors_through_the_chain():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as exc:
            raise StoreWriteError("cannot write x/result.json: No space left on device") from exc
    except StoreWriteError as wrapped:
        assert is_full(wrapped)
    assert is_full(duckdb.IOException('Could not write file "a.wal": No space left on device'))
    assert is_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert is_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_full(duckdb.ConversionException("Could not convert string 'x' to INT32"))
    named = full_disk(OSError(errno.ENOSPC, "No space left on device", "/store/jobs/a/model.safetensors"))
    assert isinstance(named, DiskFull) and "writing /store/jobs/a/model.safetensors failed" in str(named)
    assert "\n" not in str(full_disk(RuntimeError("two\nlines No space left on device")))


def test_rollback_after_a_commit_that_failed_keeps_the_real_error():
    con = duckdb.connect()
    rollback(con)  # no transaction: nothing to undo, and no "cannot rollback" raised over the real error
    con.execute("BEGIN TRANSACTION")
    rollback(con)
    con.close()


def test_ingest_stops_on_a_full_disk_and_sets_no_good_shard_aside(tmp_path, tiny_sweep):
    job = load_sweep(tiny_sweep()).jobs[0]
    result = {"job_id": job.job_id, "spec": job.to_dict(), "status": "done"}
    store = Store(tmp_path / "store" / "harness.duckdb")
    shard = store.shard_path(job.job_id)
    shard.parent.mkdir(parents=True)
    shard.write_text("{}")

    class FullConnection:
        def execute(self, *args):
            raise duckdb.IOException('Could not write file "harness.duckdb.wal": No space left on device')

    ingest = Ingest(store)
    with pytest.raises(DiskFull, match=f"adding job {job.job_id} to the database"):
        ingest.checked(FullConnection(), result)
    assert shard.exists() and ingest.quarantined == [] and not store.quarantine_dir().exists()
    refused = Ingest(store)  # any other refusal still sets the shard aside
    refused.checked(type("Refusing", (), {"execute": lambda self, *a: (_ for _ in ()).throw(
        duckdb.ConstraintException("Duplicate key"))})(), result)
    assert len(refused.quarantined) == 1 and not shard.exists()
    shutil.rmtree(store.quarantine_dir())


def test_a_write_refused_or_interrupted_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    for error in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with replacing(target) as tmp:
                tmp.write_text("half of the new")
                raise error
        assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(FileNotFoundError):  # a worker told to stop removes what it is writing, then exits
        with replacing(target) as tmp:
            tmp.write_text("half of the new")
            remove_in_flight()
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with replacing(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
