"""A resume state is checked before it is trusted: tampered tensors, an edited epoch, a truncated, empty or
garbled state.json and a missing tensor file are each discarded with one line naming the file, the state is
moved aside, and the pack trains from epoch 0 to the numbers of an uninterrupted run. Never numbers from a
bad state, never the same failure on every retry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from harness import resume
from harness.checksums import sha256_file
from harness.spec import Pack
from harness.train import train_pack
from tests.test_pack import job, synthetic_images

DATA = synthetic_images(40, 20)
PACK = Pack((job(100.0, 1.0, 0.8, 1, epochs=4),))


def numbers(results) -> list:
    return [([e["loss"] for e in r.epochs], sorted((m["name"], m["value"]) for m in r.metrics)) for r in results]


@pytest.fixture(scope="module")
def whole():
    return numbers(train_pack(PACK, DATA, "cpu"))


def saved_at_epoch_2(folder: Path, monkeypatch) -> None:
    """A run that saved its state after epoch 2 and was killed: the state stays in `folder`."""
    save = resume.save_state
    with monkeypatch.context() as patch:
        patch.setattr(resume, "save_state", lambda f, epoch, *a: save(f, epoch, *a) if epoch <= 2 else None)
        patch.setattr(resume, "clear", lambda f: None)
        train_pack(PACK, DATA, "cpu", resume_dir=folder, save_every=2)
    assert json.loads((folder / "state.json").read_text())["epoch"] == 2


def test_an_intact_state_resumes_to_the_same_numbers(tmp_path, monkeypatch, whole):
    saved_at_epoch_2(tmp_path / "r", monkeypatch)
    results = train_pack(PACK, DATA, "cpu", resume_dir=tmp_path / "r", save_every=2)
    assert numbers(results) == whole and "resume_discarded" not in results[0].run_options


def _garble_tensors(folder: Path) -> None:
    path = next(folder.glob("state-*.safetensors"))
    data = bytearray(path.read_bytes())
    data[-64:-32] = bytes(32)  # tensor bytes, past the header: the file still loads, with other numbers
    path.write_bytes(bytes(data))


def _edit_epoch(folder: Path) -> None:
    record = json.loads((folder / "state.json").read_text())
    record["epoch"] = 4
    (folder / "state.json").write_text(json.dumps(record))


DAMAGE = {
    "garbled tensors": _garble_tensors,
    "edited epoch": _edit_epoch,
    "truncated state.json": lambda f: (f / "state.json").write_text((f / "state.json").read_text()[:200]),
    "empty state.json": lambda f: (f / "state.json").write_text(""),
    "garbled state.json": lambda f: (f / "state.json").write_bytes(b"\xff\xfe{not json"),
    "missing tensor file": lambda f: next(f.glob("state-*.safetensors")).unlink(),
    "truncated tensor file": lambda f: next(f.glob("state-*.safetensors")).write_bytes(b"\x08\x00"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_state_is_discarded_and_the_pack_trains_afresh(tmp_path, monkeypatch, caplog, whole, damage):
    folder = tmp_path / "r"
    saved_at_epoch_2(folder, monkeypatch)
    DAMAGE[damage](folder)
    with caplog.at_level(logging.WARNING, logger="harness.train"):
        results = train_pack(PACK, DATA, "cpu", resume_dir=folder, save_every=2)
    assert numbers(results) == whole  # trained from epoch 0: the uninterrupted run's numbers
    assert results[0].status == "done" and "state" in results[0].run_options["resume_discarded"]
    lines = [r.getMessage() for r in caplog.records if "resume state discarded" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and str(folder) in lines[0] and "epoch 0" in lines[0]
    assert not folder.exists() and len(list(tmp_path.glob("r.damaged-*"))) == 1  # moved aside, kept


def test_a_changed_checkpoint_is_refused_by_eval_and_report_job(tmp_path):
    """The checkpoint's sha256 is recorded in its shard and the store; `eval --force` and `report job` check
    it and refuse changed bytes with one line, and the stored values stay as they were."""
    from dataclasses import replace

    from typer.testing import CliRunner

    from harness.cli import app
    from harness.db import sweeps
    from harness.db.ingest import Ingest
    from harness.db.store import Store, run_query
    from harness.executors.worker import run_pack
    from harness.spec import load_sweep

    job = replace(load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "clustering.toml").jobs[0], epochs=2)
    store = Store(tmp_path / "h.duckdb")
    sweeps.register(store, "tiny", "-", "", "", [job.job_id])
    run_pack(Pack((job,)), store, "tiny", "cpu", None)
    Ingest(store).shards([job.job_id])
    _, rows = run_query(store.path, "SELECT kind, sha256 FROM artifacts WHERE job_id = ? ORDER BY kind", [job.job_id])
    weights = store.job_dir(job.job_id) / "model.safetensors"
    assert rows == [("spec", sha256_file(weights.with_name("spec.json"))),
                    ("weights", sha256_file(weights))]
    sql = "SELECT name, value FROM metrics WHERE job_id = ? AND metric = 'class_separation' ORDER BY name"
    before = run_query(store.path, sql, [job.job_id])[1]
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["eval", "--metric", "class_separation", "--force", "--store", str(store.path)])
    assert result.exit_code != 0 and "model.safetensors does not match the sha256" in result.output + result.stderr
    assert "Traceback" not in result.output
    assert run_query(store.path, sql, [job.job_id])[1] == before
    result = CliRunner().invoke(app, ["report", "job", job.job_id, "--store", str(store.path), "--out",
                                      str(tmp_path / "r")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "does not match the sha256" in result.stderr


def test_an_edited_number_in_a_shard_is_caught_when_it_is_read(tmp_path):
    """Result and evaluation shards carry the sha256 of their content: a number edited afterwards sets the
    shard aside when it is read (db rebuild), instead of entering the store."""
    import json
    from dataclasses import replace

    from harness.db import sweeps
    from harness.db.ingest import Ingest, rebuild
    from harness.db.store import Store, run_query
    from harness.executors.worker import run_pack
    from harness.shards import ShardError, read_shard
    from harness.spec import load_sweep

    job = replace(load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "clustering.toml").jobs[0], epochs=2)
    store = Store(tmp_path / "h.duckdb")
    sweeps.register(store, "tiny", "-", "", "", [job.job_id])
    run_pack(Pack((job,)), store, "tiny", "cpu", None)
    shard = json.loads(store.shard_path(job.job_id).read_text())
    assert read_shard(store.shard_path(job.job_id))["sha256"] == shard["sha256"]
    shard["metrics"][0]["value"] += 1.0
    store.shard_path(job.job_id).write_text(json.dumps(shard))
    with pytest.raises(ShardError, match="does not match its sha256"):
        read_shard(store.shard_path(job.job_id))
    ingest = Ingest(store)
    assert ingest.shards([job.job_id]) == 0
    assert ["does not match its sha256" in a.reason for a in ingest.quarantined] == [True]
    assert run_query(store.path, "SELECT count(*) FROM jobs WHERE job_id = ?", [job.job_id])[1] == [(0,)]
    assert rebuild(store).jobs == 0  # set aside, not rebuilt from
