"""User text reaches the terminal as text: rich markup in a description or a name prints as typed (no crash),
control characters are escaped, and ids and sweep names are checked before use, each with one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.db import sweeps
from harness.db.store import Store
from tests.test_cli_data import assert_one_line_error

DESCRIPTION = "oops [/] and [bold]x, esc \x1b[31m and nul \x00"
SWEEP = """[sweep]
name = "oops"
description = "oops [/] and [bold]x, esc \\u001b[31m and nul \\u0000"
[base]
dataset = { name = "pinwheel" }
arch = "mlp"
latent_dim = 2
likelihood = { name = "normal" }
prior = { name = "mixture", variance = 0.03 }
divergence = "kld_inc"
epochs = 1
batch_size = 400
lr = 1e-3
"""


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "h.duckdb")
    sweeps.register(store, "oops", str(tmp_path / "s.toml"), DESCRIPTION, SWEEP, [])
    return store


def test_markup_and_control_characters_in_a_description_print_as_text(store, tmp_path):
    (tmp_path / "s.toml").write_text(SWEEP)
    for result in (invoke("sweep", "plan", str(tmp_path / "s.toml"), "--store", str(store.path)),
                   invoke("sweep", "status", "--store", str(store.path))):
        assert result.exit_code == 0, result.output + result.stderr
        assert "oops [/] and [bold]x, esc \\x1b[31m and nul \\x00" in result.output
        assert "\x1b" not in result.output and "\x00" not in result.output


def test_cancel_of_an_unknown_sweep_is_bad_input(store):
    assert_one_line_error(invoke("sweep", "cancel", "[/]", "--store", str(store.path)), 2, "no sweep '[/]'")
    result = invoke("sweep", "cancel", "oops", "--store", str(store.path))
    assert result.exit_code == 0 and "no Slurm tasks" in result.output


@pytest.mark.parametrize("job_id", ["abc", "../../etc/passwd", "", "[/]"])
def test_report_job_checks_the_id_before_using_it(store, job_id):
    assert_one_line_error(invoke("report", "job", job_id, "--store", str(store.path)), 2, "16 hex digits")


@pytest.mark.parametrize("command", [["report", "figures"], ["report", "timings"],
                                     ["report", "job", "0123456789abcdef"]])
def test_an_out_folder_that_cannot_be_written_is_one_line(store, tmp_path, command):
    (tmp_path / "file").write_text("")
    assert_one_line_error(invoke(*command, "--store", str(store.path), "--out", str(tmp_path / "file")), 2,
                          "is a file, not a folder")
    assert_one_line_error(invoke(*command, "--store", str(store.path), "--out", str(tmp_path / "file" / "sub")), 2,
                          "cannot be written to")


def test_report_job_with_an_unreadable_spec_is_one_line(store):
    folder = store.job_dir("0123456789abcdef")
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text('{"alpha": 0.0, "ar')
    (folder / "model.safetensors").write_bytes(b"")
    assert_one_line_error(invoke("report", "job", "0123456789abcdef", "--store", str(store.path)), 1,
                          "spec.json cannot be read")


def test_a_truncated_sweep_manifest_does_not_make_its_own_file_a_conflict(tmp_path):
    """The database's record decides where the manifest cannot be read, and the manifest is written again."""
    (tmp_path / "s.toml").write_text(SWEEP)
    store = Store(tmp_path / "h.duckdb")
    from harness.spec import load_sweep

    jobs = [j.job_id for j in load_sweep(tmp_path / "s.toml").jobs]
    sweeps.register(store, "oops", str(tmp_path / "s.toml"), DESCRIPTION, SWEEP, jobs)
    manifest = store.sweep_manifest("oops")
    manifest.write_text(manifest.read_text()[:40])
    assert sweeps.register(store, "oops", str(tmp_path / "s.toml"), DESCRIPTION, SWEEP, jobs) == 0
    result = invoke("sweep", "plan", str(tmp_path / "s.toml"), "--store", str(store.path))
    assert result.exit_code == 0 and "already used" not in result.output + result.stderr
    assert json.loads(manifest.read_text())["job_ids"] == jobs


def test_a_database_held_at_the_end_of_a_run_is_no_traceback(tmp_path, monkeypatch):
    """Another process holds the database when the run sums up: the summary comes from the shards."""
    from harness import driver
    from harness.db import jobs
    from harness.db.store import StoreLocked

    (tmp_path / "s.toml").write_text(SWEEP)

    def held(*args, **kwargs):
        raise StoreLocked(f"{tmp_path / 'h.duckdb'} is in use by another process; try again in a moment")

    monkeypatch.setattr(driver.jobs, "errors", held)
    result = invoke("sweep", "run", str(tmp_path / "s.toml"), "--store", str(tmp_path / "h.duckdb"))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output + result.stderr
    assert "1 done" in result.output and jobs.statuses(Store(tmp_path / "h.duckdb"), []) == {}
