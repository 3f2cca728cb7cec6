"""A soak: the driver SIGKILLed at random moments, about 20 times, on cheap jobs. It must end with every
job stored exactly once, every job's epochs stored once, and no process left behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.db.store import run_query

pytestmark = pytest.mark.slow

SWEEP = """
[sweep]
name = "soak"
seeds = [1, 2, 3]

[base]
dataset = { name = "pinwheel", n_train = 50, n_test = 25 }
arch = "mlp"
latent_dim = 2
likelihood = "normal"
prior = "mixture"
divergence = "kld_inc"
epochs = 40
batch_size = 100
lr = 1e-3

[grid]
alpha = [0, 1]
beta = [0, 1]
"""
KILLS = 20


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def test_random_driver_kills_lose_and_duplicate_nothing(tmp_path):
    sweep = tmp_path / "soak.toml"
    sweep.write_text(SWEEP)
    store = tmp_path / "store" / "harness.duckdb"
    command = [sys.executable, "-m", "harness.cli", "sweep", "run", str(sweep), "--store", str(store)]
    rng = random.Random(2026)
    seen: set[int] = set()
    kills = 0
    for _ in range(KILLS):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + rng.uniform(1.0, 6.0)
        while time.time() < deadline and process.poll() is None:
            seen.update(_children(process.pid))
            time.sleep(0.05)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)  # the driver alone, at a random moment
            kills += 1
        process.wait(timeout=60)
    final = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    _, jobs = run_query(store, "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE status = 'done') "
                               "FROM jobs")
    _, epochs = run_query(store, "SELECT count(*), count(DISTINCT (job_id, epoch)) FROM epochs")
    deadline = time.time() + 15
    while any(_alive(pid) for pid in seen) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in seen if _alive(pid)]
    print(f"soak: {kills} kills, {jobs[0][0]} jobs stored, {jobs[0][0] - jobs[0][1]} duplicated, "
          f"{12 - jobs[0][2]} lost, {len(left)} processes left")
    assert kills >= KILLS // 2
    assert jobs == [(12, 12, 12)]
    assert epochs == [(12 * 40, 12 * 40)]
    assert not left, f"processes outlived their driver: {left}"
    assert not list((store.parent / "claims").glob("*.json"))
