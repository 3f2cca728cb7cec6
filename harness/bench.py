"""Performance regression checks: pytest-benchmark suites run, stored and compared (`harness bench`).

`run_suites` runs the suites with pytest-benchmark and returns one row per case with its statistics,
the commit, the numerics version and a fingerprint of the machine (CPU model and count, GPU, torch and
CUDA versions). `compare` sets a run against an earlier one on the same fingerprint only: timings from
two machines say nothing about the code. A case is slower than noise allows when its median exceeds
the earlier mean by more than max(3 earlier standard deviations, 10% of the earlier mean). No printing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.numerics import NUMERICS_VERSION

NOISE_SIGMAS, NOISE_FRACTION = 3.0, 0.10
SUITES = Path(__file__).resolve().parent.parent / "tests" / "benchmarks"  # in a source checkout


def default_suites() -> list[str]:
    """The project's suites (tests/benchmarks of a source checkout). An installed copy has no tests/:
    RuntimeError saying to name a suite."""
    if not SUITES.is_dir():
        raise RuntimeError(f"no benchmark suites here ({SUITES} is not a folder: an installed copy of harness "
                           "has no tests/); give --suite FILE or FOLDER, e.g. from a clone of the repository")
    return [str(SUITES)]


def machine() -> dict[str, Any]:
    """What a timing depends on besides the code."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "cuda": torch.version.cuda or ""}


def fingerprint(info: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass(frozen=True)
class BenchRun:
    run_id: str
    rows: list[dict[str, Any]]  # one per case: the benchmarks table's columns
    output: str  # pytest's output, for the CLI to show on failure


def run_suites(paths: list[str], extra_args: list[str] | None = None) -> BenchRun:
    """Run pytest-benchmark on `paths` in a subprocess and return the cases' rows (nothing stored yet)."""
    info = machine()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "bench.json"
        done = subprocess.run([sys.executable, "-m", "pytest", *paths, "--benchmark-only", "--benchmark-enable",
                               f"--benchmark-json={report}", "-q", "-p", "no:cacheprovider", *(extra_args or [])],
                              capture_output=True, text=True)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"the benchmark suites failed (exit {done.returncode}):\n{done.stdout[-3000:]}"
                               f"{done.stderr[-2000:]}")
        data = json.loads(report.read_text())
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    commit, stamp = git_commit(), fingerprint(info)
    rows = [{"run_id": run_id, "suite": b["fullname"].split("::")[0], "case_name": b["name"],
             "params": json.dumps(b.get("params") or {}, sort_keys=True),
             "extra": json.dumps(b.get("extra_info") or {}, sort_keys=True), "mean": b["stats"]["mean"],
             "stddev": b["stats"]["stddev"], "median": b["stats"]["median"], "min": b["stats"]["min"],
             "max": b["stats"]["max"], "rounds": b["stats"]["rounds"], "git_commit": commit,
             "numerics": NUMERICS_VERSION, "fingerprint": stamp, "machine": json.dumps(info, sort_keys=True)}
            for b in data["benchmarks"]]
    return BenchRun(run_id, rows, done.stdout)


@dataclass(frozen=True)
class Verdict:
    case: str
    before: float  # mean of the earlier run (s)
    spread: float  # its standard deviation (s)
    after: float  # median of this run (s)
    slower: bool

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before > 0 else float("inf")


def baseline(runs: list[tuple[str, str]], against: str) -> tuple[str, str] | None:
    """The run to compare the newest of `runs` (run_id, commit; oldest first) with: the one before it
    ('latest'), or the newest earlier one whose commit starts with `against`; None where there is none."""
    earlier = runs[:-1] if against == "latest" else [r for r in runs[:-1] if (r[1] or "").startswith(against)]
    return earlier[-1] if earlier else None


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Verdict]:
    """Each case of `after` that `before` has too, against the earlier mean and spread."""
    earlier = {(r["suite"], r["case_name"]): r for r in before}
    verdicts = []
    for row in after:
        old = earlier.get((row["suite"], row["case_name"]))
        if old is None:
            continue
        limit = old["mean"] + max(NOISE_SIGMAS * (old["stddev"] or 0.0), NOISE_FRACTION * old["mean"])
        verdicts.append(Verdict(row["case_name"], old["mean"], old["stddev"] or 0.0, row["median"],
                                row["median"] > limit))
    return verdicts
