"""A held-out corpus of damaged stores: each file the store holds (the database, a result shard, an
evaluation shard, a sweep manifest, the weights, the spec), truncated, garbled, emptied or replaced by a
folder, against each command that reads it. Every cell ends with its numbers or one line (exit 1 or 2),
never a traceback; a changed checkpoint never gives numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]
DAMAGES = ("truncate", "garble", "empty", "folder")
COMMANDS = {"run": ["sweep", "run", "SWEEP"], "plan": ["sweep", "plan", "SWEEP"], "status": ["sweep", "status"],
            "cancel": ["sweep", "cancel", "tiny"],
            "query": ["db", "query", "SELECT count(*) FROM runs"], "rebuild": ["db", "rebuild"],
            "eval": ["eval", "--metric", "hoyer", "--force"], "claims": ["report", "claims"],
            "figures": ["report", "figures", "--no-job-images", "--out", "OUT"],
            "job": ["report", "job", "JOB", "--out", "OUT"],
            "export": ["report", "export", "--out", "OUT/runs.csv"]}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path, str]:
    """One finished pinwheel job with an evaluation, made by the CLI."""
    folder = tmp_path_factory.mktemp("corpus")
    sweep = folder / "tiny.toml"
    text = (ROOT / "sweeps" / "repro" / "clustering.toml").read_text()
    text = text.replace('name = "repro_clustering"', 'name = "tiny"').replace("epochs = 500", "epochs = 2")
    sweep.write_text(text.replace("alpha = [0, 1, 5, 10]", "alpha = [0]").replace("beta = [0, 0.5, 1, 2]", "beta = [1]")
                     .replace("seeds = [1, 2, 3]", "seeds = [1]"))
    store = folder / "store" / "harness.duckdb"
    for args in (["sweep", "run", str(sweep)], ["eval", "--metric", "hoyer", "--force"]):
        subprocess.run([*HARNESS, *args, "--store", str(store)], check=True, capture_output=True, cwd=ROOT)
    job = next((store.parent / "jobs").iterdir()).name
    return sweep, store.parent, job


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif how == "garble":
        path.write_bytes(bytes(b ^ 0x5A if i % 97 == 0 else b for i, b in enumerate(data)))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", ["database", "shard", "evaluation", "manifest", "weights", "spec"])
def test_every_command_on_a_damaged_store_gives_numbers_or_one_line(base, tmp_path, kind, how):
    sweep, original, job = base
    files = {"database": "harness.duckdb", "shard": f"jobs/{job}/result.json",
             "evaluation": f"jobs/{job}/eval/hoyer.json", "manifest": "sweeps/tiny.json",
             "weights": f"jobs/{job}/model.safetensors", "spec": f"jobs/{job}/spec.json"}
    cells = 0
    for name, command in COMMANDS.items():
        work = tmp_path / name
        shutil.copytree(original, work)
        damage(work / files[kind], how)
        args = [a.replace("SWEEP", str(sweep)).replace("JOB", job).replace("OUT", str(work / "out")) for a in command]
        result = CliRunner().invoke(app, [*args, "--store", str(work / "harness.duckdb")])
        where = f"{kind} {how}, {name}: exit {result.exit_code}\n{result.output}{result.stderr}"
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        assert "Traceback" not in result.output + result.stderr, where
        if result.exit_code != 0:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert result.exit_code in (1, 2) and len(errors) == 1, where
        if kind == "weights" and name in ("eval", "job"):  # a changed checkpoint never gives numbers
            assert result.exit_code != 0, where
        cells += 1
    assert cells == len(COMMANDS)


# The fifth damage, a file made unreadable (chmod 0), means nothing to root, which reads it anyway: those
# cells run as the user nobody, in one process per file, over a copy of the store that nobody owns.
AS_NOBODY = r'''
import json, os, shutil, sys
from typer.testing import CliRunner
from harness.cli import app

original, sweep, job, relative, commands, kind = json.loads(sys.argv[1])
cells = []
for name, command in commands.items():
    work = os.path.join(os.path.dirname(original), "as-nobody", kind, name)
    shutil.copytree(original, work)
    os.chmod(os.path.join(work, relative), 0)
    args = [a.replace("SWEEP", sweep).replace("JOB", job).replace("OUT", os.path.join(work, "out")) for a in command]
    result = CliRunner().invoke(app, [*args, "--store", os.path.join(work, "harness.duckdb")])
    cells.append([name, result.exit_code, result.output, result.stderr,
                  result.exception is None or isinstance(result.exception, SystemExit)])
print(json.dumps(cells))
'''
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="module")
def shared(base) -> Iterator[tuple[Path, Path, str]]:
    """The corpus's store and sweep file where the user nobody can read and write them (pytest's own
    temporary folders are root's alone)."""
    sweep, original, job = base
    folder = Path(tempfile.mkdtemp(prefix="harness-as-nobody-"))
    folder.chmod(0o755)
    try:
        yield from _as_nobody(folder, sweep, original, job)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(folder: Path, sweep: Path, original: Path, job: str):
    shutil.copytree(original, folder / "store")
    shutil.copy(sweep, folder / "tiny.toml")
    subprocess.run(["chown", "-R", "65534:65534", str(folder)], check=True)
    probes = {"import the harness": "import harness.cli",
              "start a spawned process": "import multiprocessing as mp; p = mp.get_context('spawn').Process("
                                         "target=print); p.start(); p.join(); assert p.exitcode == 0"}
    for what, code in probes.items():
        probe = subprocess.run([*NOBODY, sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if probe.returncode != 0:
            errors = [line for line in probe.stderr.splitlines() if line[:1].isalpha()] or [probe.stderr]
            pytest.skip(f"the user nobody cannot {what} with {sys.executable} here: {errors[0]} ... {errors[-1]}"
                        "; the folders above the interpreter and the checkout must be executable by others")
    yield folder / "tiny.toml", folder / "store", job


@pytest.mark.parametrize("kind", ["database", "shard", "evaluation", "manifest", "weights", "spec"])
def test_every_command_on_an_unreadable_store_file_gives_numbers_or_one_line(shared, kind):
    sweep, original, job = shared
    files = {"database": "harness.duckdb", "shard": f"jobs/{job}/result.json",
             "evaluation": f"jobs/{job}/eval/hoyer.json", "manifest": "sweeps/tiny.json",
             "weights": f"jobs/{job}/model.safetensors", "spec": f"jobs/{job}/spec.json"}
    ran = subprocess.run([*NOBODY, sys.executable, "-c", AS_NOBODY,
                          json.dumps([str(original), str(sweep), job, files[kind], COMMANDS, kind])],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    cells = json.loads(ran.stdout.splitlines()[-1])
    assert [c[0] for c in cells] == list(COMMANDS)
    for name, code, output, stderr, clean in cells:
        where = f"{kind} unreadable, {name}: exit {code}\n{output}{stderr}"
        assert clean and "Traceback" not in output + stderr, where
        if code != 0:
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert code in (1, 2) and len(errors) == 1, where
        if kind == "weights" and name in ("eval", "job"):  # an unreadable checkpoint never gives numbers
            assert code != 0, where
