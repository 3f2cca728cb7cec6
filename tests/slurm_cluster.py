"""A real single-node Slurm cluster for the tests that need one, started and stopped by scripts/slurm.sh.

The `slurm_cluster` fixture starts it once per session with all its state in a private folder and points
SLURM_CONF at it, so sbatch, squeue and submitit find it. It skips where Slurm is not installed or does not
start; in CI (CI=true) a cluster that does not start fails the session's Slurm tests instead, because CI
installs Slurm to really run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm.sh"
# slurmstepd's unix sockets, DIR/spool/<host>_<job id>.<step id>, must fit in 107 bytes (as slurm.sh checks)
MAX_SOCKET_PATH = 107
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class SlurmCluster:
    """Where the running cluster lives: its folder and its slurm.conf (SLURM_CONF for clients)."""

    dir: Path
    conf: Path


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """The session's folder for the cluster, and whether we made it ourselves (then we remove it).
    munged refuses a socket below a folder that not everyone may enter, and pytest's base temp folder is 0700;
    unix socket paths are short. Where pytest's folder will not do, a short one under /tmp."""
    path = tmp_path_factory.mktemp("slurm")
    enterable = all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    if enterable and len(str(path)) + len(socket.gethostname()) + 29 <= MAX_SOCKET_PATH:
        return path, False
    return Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp")), True


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, check=False)


def _start(path: Path) -> str | None:
    """Start the cluster in path; None when it is up, else why not (the tail of the script's stderr)."""
    try:
        started = _script("start", str(path), timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _script("stop", str(path), timeout=60)  # the script stops what it started on its own failures only
        return f"scripts/slurm.sh start did not finish in {START_TIMEOUT_S} s"
    if started.returncode != 0:
        return _tail(started.stderr) or f"exit status {started.returncode}"
    if started.stdout.strip().splitlines()[-1:] != [f"export SLURM_CONF={path / 'slurm.conf'}"]:
        _script("stop", str(path), timeout=60)
        return f"unexpected output of scripts/slurm.sh start: {started.stdout!r}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A private Slurm cluster for the session, with SLURM_CONF set while it runs (restored afterwards)."""
    if shutil.which("slurmctld") is None:
        if os.environ.get("CI") == "true":  # CI installs Slurm (.ci/run): its absence there is a failure
            pytest.fail("Slurm is not installed, and CI must run the Slurm tests: .ci/run must call "
                        "`bash scripts/slurm.sh install`", pytrace=False)
        pytest.skip("Slurm is not installed here (bash scripts/slurm.sh install)")
    path, made_here = _cluster_dir(tmp_path_factory)
    failure = _start(path)
    if failure is not None:
        if made_here:
            shutil.rmtree(path, ignore_errors=True)
        message = f"the Slurm cluster did not start (scripts/slurm.sh start {path}):\n{failure}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    conf = path / "slurm.conf"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield SlurmCluster(dir=path, conf=conf)
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        stopped = _script("stop", str(path), timeout=120)
        if made_here:
            shutil.rmtree(path, ignore_errors=True)
        if stopped.returncode != 0:
            pytest.fail(f"scripts/slurm.sh stop {path} failed:\n{_tail(stopped.stderr)}", pytrace=False)
