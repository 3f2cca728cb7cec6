"""The store: numbered migrations recorded in the database, idempotent ingest, shard statuses."""

from __future__ import annotations

import json

import duckdb
import pytest

from harness.db import claims, jobs
from harness.db.ingest import Ingest, ingest_result, shard_statuses, write_shard
from harness.db.migrations import MIGRATIONS
from harness.db.store import Store
from harness.schema import Options
from harness.spec import JobSpec


def a_result(job_id_seed: int = 1, status: str = "done") -> dict:
    spec = JobSpec(dataset=Options("fashion_mnist", (("size", 32), ("subset", 0), ("subset_mode", "first"),
                                                     ("test_subset", 0))),
                   arch="conv32", latent_dim=4, likelihood=Options("laplace", (("scale", 0.1),)),
                   prior=Options("sparse", (("gamma", 0.8), ("spike_scale", 0.05))), divergence="mmd_dim",
                   alpha=10.0, beta=1.0, epochs=2, batch_size=10, lr=1e-3, seed=job_id_seed)
    return {"job_id": spec.job_id, "spec": spec.to_dict(), "status": status, "sweep": "s",
            "epochs": [{"epoch": e, "loss": 1.0 / e, "recon": 2.0, "kl": 3.0, "reg": 0.1, "seconds": 1.0,
                        "samples_per_second": 10.0} for e in (1, 2)],
            "metrics": [{"split": "test", "name": "hoyer", "value": 0.5}],
            "latent_stats": [{"split": "test", "class_index": 1, "class_name": "Trouser", "dim": 0,
                              "mean_abs_loc": 0.7}],
            "artifacts": [], "started": 1.0, "finished": 2.0, "wall_seconds": 1.0}


def test_migrations_are_numbered_and_recorded_once(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    with store.connect():
        pass
    with store.connect() as con:  # a second open applies nothing new
        rows = con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_ingesting_a_shard_twice_changes_nothing(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    result = a_result()
    with store.connect() as con:
        ingest_result(con, result)
        ingest_result(con, result)
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("jobs", "epochs", "metrics", "latent_stats", "dim_stats")]
        row = con.execute("SELECT alpha, gamma, seed, hoyer FROM runs").fetchall()
    assert counts == [1, 2, 1, 1, 1]
    assert row == [(10.0, 0.8, 1, 0.5)]


def test_a_failed_ingest_leaves_the_store_as_it_was(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    good, bad = a_result(1), a_result(2)
    bad["epochs"] = [{"epoch": 1}]  # missing fields: the insert fails half-way
    with store.connect() as con:
        ingest_result(con, good)
        try:
            ingest_result(con, bad)
        except (KeyError, duckdb.Error):
            pass
        jobs = con.execute("SELECT job_id FROM jobs").fetchall()
    assert jobs == [(good["job_id"],)]


def test_shard_statuses_are_read_without_the_database(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    result = a_result(status="diverged")
    write_shard(store, result)
    assert json.loads(store.shard_path(result["job_id"]).read_text())["status"] == "diverged"
    assert shard_statuses(store, [result["job_id"], "0" * 16]) == {result["job_id"]: "diverged"}
    assert not store.path.exists()


def test_a_shard_ingests_whatever_todays_rules_say(tmp_path):
    """Ingest reads a stored spec as it is: a shard whose spec today's validation would refuse (here a
    batch larger than its data, and a prior no registry knows) still ingests."""
    store = Store(tmp_path / "h.duckdb")
    result = a_result()
    result["spec"] = {**result["spec"], "batch_size": 10**6, "prior": {"name": "retired_prior", "gamma": 0.5}}
    with store.connect() as con:
        ingest_result(con, result)
        rows = con.execute("SELECT prior, gamma, batch_size FROM jobs").fetchall()
    assert rows == [("retired_prior", 0.5, 10**6)]


def _bad_shards(store: Store) -> dict[str, str]:
    """Three shards that cannot be ingested, each as a worker or a disk might leave it: job id -> why."""
    truncated, garbled, overflow = a_result(11), a_result(12), a_result(13)
    write_shard(store, truncated)
    text = store.shard_path(truncated["job_id"]).read_text()
    store.shard_path(truncated["job_id"]).write_text(text[: len(text) // 2])
    write_shard(store, garbled)
    store.shard_path(garbled["job_id"]).write_text("\x00\x17 not json")
    overflow["spec"] = {**overflow["spec"], "batch_size": 3_000_000_000}
    write_shard(store, overflow)
    return {truncated["job_id"]: "not JSON", garbled["job_id"]: "not JSON",
            overflow["job_id"]: "spec.batch_size = 3000000000 does not fit"}


def test_bad_shards_are_set_aside_and_the_rest_rebuilds(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    store = Store(tmp_path / "h.duckdb")
    good = [a_result(1), a_result(2)]
    for result in good:
        write_shard(store, result)
    bad = _bad_shards(store)
    result = CliRunner().invoke(app, ["db", "rebuild", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    assert "0 sweeps, 2 jobs" in result.output
    for job_id, reason in bad.items():
        assert job_id in result.stderr and reason in result.stderr
        assert not store.shard_path(job_id).exists()
    kept = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert len(kept) == 6 and sum(name.endswith(".reason") for name in kept) == 3
    with store.reader() as con:
        assert {r[0] for r in con.execute("SELECT job_id FROM jobs").fetchall()} == {g["job_id"] for g in good}


def test_a_shard_gone_bad_after_ingest_makes_its_job_not_done(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    ingest = Ingest(store)
    result = a_result(5)
    write_shard(store, result)
    assert ingest.shards([result["job_id"]]) == 1
    store.shard_path(result["job_id"]).write_text("{")  # the truth is now unreadable
    assert ingest.shards([result["job_id"]]) == 0
    assert jobs.statuses(store, [result["job_id"]]) == {} and shard_statuses(store, [result["job_id"]]) == {}
    assert [aside.reason for aside in ingest.quarantined] == ["not JSON (Expecting property name enclosed in double "
                                                        "quotes at line 1, column 2; truncated?)"]


def test_the_shard_format_round_trips_and_reads_version_1():
    from harness.shards import FORMAT_VERSION, JobResult, check_shard

    result = JobResult("0123456789abcdef", a_result()["spec"], "done", epochs=[{"epoch": 1, "loss": 1.0, "recon": 2.0,
                       "kl": 3.0, "reg": 0.0, "seconds": 1.0, "samples_per_second": 5.0}], numerics=2)
    shard = result.to_dict()
    assert shard["format"] == FORMAT_VERSION and check_shard(shard) is shard
    assert JobResult.from_dict(shard) == result
    old = {k: v for k, v in a_result().items() if k not in ("format", "numerics")}  # as release 0.1.0 wrote it
    assert JobResult.from_dict(old).numerics == 1


@pytest.mark.parametrize("damage", ["empty", "garbage", "folder"])
def test_a_damaged_database_is_called_damaged_not_locked(tmp_path, damage):
    from typer.testing import CliRunner

    from harness.cli import app

    store = Store(tmp_path / "h.duckdb")
    results = [a_result(1), a_result(2)]
    for result in results:
        write_shard(store, result)
    Ingest(store).shards([r["job_id"] for r in results])
    store.path.unlink()
    if damage == "folder":
        store.path.mkdir()
    else:
        store.path.write_bytes(b"" if damage == "empty" else b"\x17garbage" * 500)
    runner = CliRunner()
    for args in (["db", "query", "SELECT 1"], ["sweep", "status"]):
        result = runner.invoke(app, [*args, "--store", str(store.path)])
        assert result.exit_code != 0 and "is damaged" in result.stderr and "in use" not in result.stderr, args
        assert "harness db rebuild" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    rebuilt = runner.invoke(app, ["db", "rebuild", "--store", str(store.path)])
    if damage == "folder":
        assert rebuilt.exit_code != 0 and "is a folder, not a database" in rebuilt.stderr
        return
    assert rebuilt.exit_code == 0 and "2 jobs" in rebuilt.output, rebuilt.output
    assert store.path.with_name("h.duckdb.damaged").exists()
    assert set(jobs.statuses(store, [r["job_id"] for r in results]).values()) == {"done"}


def test_ingest_waits_for_a_reader_that_holds_the_database(tmp_path):
    """A reader holding the file (as the README invites) must not kill a sweep: the driver keeps the
    shards and ingests them once the file is free."""
    import subprocess
    import sys

    store = Store(tmp_path / "h.duckdb")
    ingest = Ingest(store)
    first, second = a_result(1), a_result(2)
    write_shard(store, first)
    ingest.shards([first["job_id"]])
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"con = duckdb.connect({str(store.path)!r}, read_only=True)\n"
                               "print('holding', flush=True)\nsys.stdin.readline()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        write_shard(store, second)
        ingest.or_defer([second["job_id"]])  # must return, not raise
        assert ingest.deferred == [second["job_id"]]
    finally:
        holder.communicate("\n", timeout=30)
    ingest.or_defer([])
    assert ingest.deferred == [] and jobs.statuses(store, [second["job_id"]]) == {second["job_id"]: "done"}


def test_claims_keep_a_second_driver_off_running_jobs_and_stale_ones_are_taken_over(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    store = Store(tmp_path / "h.duckdb")
    ids = [f"{i:016x}" for i in range(4)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        host = socket.gethostname()
        (tmp_path / "claims").mkdir()
        for job_id, owner in ((ids[0], {"pid": sleeper.pid, "host": host}), (ids[1], {"pid": dead.pid, "host": host}),
                              (ids[2], {"pid": 1234, "host": "another-node"})):
            store.claim_path(job_id).write_text(json.dumps(owner))
        mine, others = claims.claim(store, ids)
        assert mine == [ids[1], ids[3]]  # the dead driver's claim is taken over; the free job claimed
        assert set(others) == {ids[0], ids[2]} and others[ids[0]]["pid"] == sleeper.pid
        assert json.loads(store.claim_path(ids[1]).read_text())["pid"] == os.getpid()
        assert claims.claim(store, ids)[0] == [ids[1], ids[3]]  # claiming again is idempotent
        claims.release(store, ids)
        assert not store.claim_path(ids[1]).exists() and store.claim_path(ids[0]).exists()  # others' stay
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_claim_cut_short_by_a_kill_is_taken_over_and_claims_never_appear_empty(tmp_path):
    """Found by the soak test: a driver SIGKILLed between creating its claim file and writing its owner left
    an empty claim, which every later driver respected, so that job never ran again. Claims now appear with
    their owner in them, and a claim that names no owner is stale."""
    import json
    import os

    store = Store(tmp_path / "h.duckdb")
    ids = [f"{i:016x}" for i in range(2)]
    (tmp_path / "claims").mkdir()
    store.claim_path(ids[0]).write_text("")  # what the kill left
    mine, others = claims.claim(store, ids)
    assert mine == ids and others == {}
    assert all(json.loads(store.claim_path(i).read_text())["pid"] == os.getpid() for i in ids)
    assert [p.name for p in (tmp_path / "claims").iterdir()] != [] and not list((tmp_path / "claims").glob(".*"))
    claims.release(store, ids)
    store.claim_path(ids[1]).write_text("")
    claims.clear_stale(store, ids)
    assert not store.claim_path(ids[1]).exists()


def test_evaluation_shards_have_a_typed_format_checked_at_rebuild(tmp_path):
    """Evaluation shards (`harness eval`) are checked like result shards: a bad one is set aside with its
    reason and the rest rebuilds; one from before the format had a version reads as version 1."""
    from harness.db.ingest import rebuild, write_evaluation
    from harness.db.store import atomic_write_json
    from harness.shards import EVALUATION_FORMAT, Evaluation, check_evaluation

    store = Store(tmp_path / "h.duckdb")
    result = a_result(1)
    write_shard(store, result)
    job_id = result["job_id"]
    good = Evaluation(job_id, "hoyer", 1, 5.0, [{"split": "test", "name": "hoyer", "value": 0.25, "metric": "hoyer",
                                                  "version": 1}])
    shard = good.to_dict()
    assert shard["format"] == EVALUATION_FORMAT and Evaluation.from_dict(shard) == good
    old = {k: v for k, v in shard.items() if k != "format"}  # as commit 408c335 wrote it
    assert check_evaluation(old) is old
    write_evaluation(store, shard)
    write_evaluation(store, Evaluation(job_id, "mig", 1, 5.0, dim_stats=[
        {"split": "test", "metric": "mig", "stat": "mutual_info", "dim": "0", "key": "shape", "key_index": 0,
         "value": 0.1}]).to_dict())
    atomic_write_json(store.evaluation_path(job_id, "factor_info"), shard)  # hoyer's values under another name
    rebuilt = rebuild(store)
    assert (rebuilt.sweeps, rebuilt.jobs) == (0, 1)
    assert sorted(aside.reason for aside in rebuilt.quarantined) == [
        "dim_stats[0].dim must be an integer, got '0'", "metric 'hoyer' in the file of factor_info"]
    assert sorted(p.name.split(".json")[0] for p in (tmp_path / "quarantine").glob("*.reason")) == [
        f"{job_id}-eval-factor_info", f"{job_id}-eval-mig"]
    assert store.evaluation_path(job_id, "hoyer").exists()
    with store.reader() as con:
        assert con.execute("SELECT hoyer FROM runs").fetchall() == [(0.25,)]
