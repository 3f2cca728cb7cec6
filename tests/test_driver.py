"""harness.driver without training: a fake executor kind in the registry writes each pack's shards at once,
and the driver's events, claims, ingest and summary are checked as a library user sees them."""

from __future__ import annotations

import json

import pytest

from harness.db import claims, jobs
from harness.db.store import Store
from harness.driver import (
    Epoch,
    ExecutorRefused,
    Finished,
    Ingested,
    Interrupted,
    Planned,
    Quarantined,
    Started,
    Summary,
    run_sweep,
    what_is_left,
)
from harness.executors import registry
from harness.executors.base import Tasks
from harness.executors.worker import PackEnded, write_results
from harness.shards import JobResult
from harness.spec import load_sweep, plan_packs
from harness.train import Progress


class FakeExecutor:
    """Runs a pack per poll by writing its shards (done, one epoch); `garble` names jobs whose shard comes out
    unreadable, `interrupt_at` the poll that raises KeyboardInterrupt (Ctrl-C)."""

    detached = False
    where = "fake"
    made: list[FakeExecutor] = []

    def __init__(self, store, sweep, on_progress, garble=(), interrupt_at=None):
        self.store, self.sweep, self.on_progress = store, sweep, on_progress
        self.garble, self.interrupt_at = set(garble), interrupt_at
        self.pack_size, self.notes, self.submitted = 2, ["fake: packs of 2"], []
        self.pending, self.polls, self.closed = [], 0, False
        FakeExecutor.made.append(self)

    @classmethod
    def create(cls, store, sweep, data_root, pack_size, on_progress, run_options=None, save_every=None, **options):
        if set(options) - {"garble", "interrupt_at"}:
            raise ValueError(f"the fake executor takes no {', '.join(sorted(options))}")
        return cls(store, sweep, on_progress, **options)

    @classmethod
    def live_tasks(cls, store, sweep, write):
        return Tasks()

    @classmethod
    def cancel(cls, store, sweep):
        return []

    def plan(self, jobs):
        return plan_packs(jobs, self.pack_size)

    def submit(self, packs):
        self.pending.extend(packs)

    def attach(self, task_ids):
        pass

    @property
    def in_flight(self):
        return len(self.pending)

    def poll(self, timeout):
        self.polls += 1
        if self.polls == self.interrupt_at:
            raise KeyboardInterrupt
        pack = self.pending.pop(0)
        for job in pack.jobs:
            self.on_progress(Progress("start", job.job_id, 0, 1))
            self.on_progress(Progress("epoch", job.job_id, 1, 1, loss=2.5))
            self.on_progress(Progress("end", job.job_id, 1, 1, status="done"))
        epoch = {"epoch": 1, "loss": 2.5, "recon": 2.0, "kl": 0.5, "reg": 0.0, "seconds": 0.1,
                 "samples_per_second": 9.0}
        write_results(self.store, [JobResult(job.job_id, job.to_dict(), "done", epochs=[epoch]) for job in pack.jobs],
                      self.sweep.name)
        for job in pack.jobs:
            if job.job_id in self.garble:
                self.store.shard_path(job.job_id).write_text("{ cut short")
        return [PackEnded([job.job_id for job in pack.jobs])]

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    FakeExecutor.made.clear()
    monkeypatch.setitem(registry.EXECUTORS, "fake", FakeExecutor)
    return FakeExecutor


def test_a_run_yields_its_plan_progress_and_summary_and_releases_its_claims(fake, tiny_sweep, tmp_path):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    events = list(run_sweep(store, sweep, "fake", poll_seconds=0))
    planned = events[0]
    assert isinstance(planned, Planned)
    assert (planned.total, planned.skipped, planned.todo, planned.packs, planned.watched) == (4, 0, 4, 2, 4)
    assert planned.notes == ("fake: packs of 2",) and planned.runs and planned.where == "fake"
    kinds = [type(e) for e in events[1:-1]]
    assert kinds == [Started, Epoch, Finished] * 2 + [Ingested] + [Started, Epoch, Finished] * 2 + [Ingested]
    assert next(e for e in events if isinstance(e, Epoch)).loss == 2.5
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.ran
    assert (summary.done, summary.failed, summary.diverged, summary.submitted, summary.failed_waiting) == (4, 0, 0,
                                                                                                          None, 0)
    ids = [j.job_id for j in sweep.jobs]
    assert jobs.statuses(store, ids) == dict.fromkeys(ids, "done")
    assert fake.made[0].closed and claims.running(store, ids) == set()

    again = list(run_sweep(store, sweep, "fake", poll_seconds=0))
    assert [type(e) for e in again] == [Planned, Summary]
    assert again[0].skipped == 4 and not again[0].runs and not again[1].ran


def test_a_shard_that_cannot_be_ingested_is_reported_when_it_is_set_aside(fake, tiny_sweep, tmp_path):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    bad = sweep.jobs[1].job_id
    events = list(run_sweep(store, sweep, "fake", options={"garble": [bad]}, poll_seconds=0))
    set_aside = [e for e in events if isinstance(e, Quarantined)]
    assert len(set_aside) == 1 and set_aside[0].shard == str(store.shard_path(bad))
    assert set_aside[0].reason.startswith("not JSON")
    assert events.index(set_aside[0]) < next(i for i, e in enumerate(events) if isinstance(e, Ingested))
    assert events[-1].done == 3
    assert [j.job_id for j in what_is_left(store, sweep, write=False).todo] == [bad]  # it runs again


def test_ctrl_c_ends_in_interrupted_with_the_executor_closed_and_the_claims_released(fake, tiny_sweep, tmp_path):
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    events = list(run_sweep(store, sweep, "fake", options={"interrupt_at": 2}, poll_seconds=0))
    assert events[-1] == Interrupted(done=2, total=4, queued=0)
    assert fake.made[0].closed
    assert not list((store.root / "claims").glob("*.json"))


def test_ctrl_c_while_an_event_is_drawn_reaches_the_run(fake, tiny_sweep, tmp_path):
    """The CLI hands a Ctrl-C that lands in its own code to the run (generator.throw): the run stops as if the
    Ctrl-C had landed while it waited."""
    sweep = load_sweep(tiny_sweep())
    store = Store(tmp_path / "h.duckdb")
    events = run_sweep(store, sweep, "fake", poll_seconds=0)
    seen = [next(events) for _ in range(3)]
    assert isinstance(seen[0], Planned)
    assert events.throw(KeyboardInterrupt) == Interrupted(done=0, total=4, queued=0)
    assert not list((store.root / "claims").glob("*.json"))


def test_options_an_executor_refuses_stop_the_run_before_the_store_is_touched(tiny_sweep, tmp_path):
    store = Store(tmp_path / "store" / "h.duckdb")
    with pytest.raises(ExecutorRefused, match="the local executor takes no parameters"):
        next(run_sweep(store, load_sweep(tiny_sweep()), "local", options={"parameters": ["x=1"]}))
    assert not store.root.exists()


def test_the_registered_sweep_is_the_text_it_was_read_from(fake, tiny_sweep, tmp_path):
    path = tiny_sweep()
    store = Store(tmp_path / "h.duckdb")
    list(run_sweep(store, load_sweep(path), "fake", poll_seconds=0))
    assert json.loads(store.sweep_manifest("tiny").read_text())["toml"] == path.read_text()
