"""Every command has --help with an example, and the README's CLI tour mentions it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of a (Typer) command group, as its path of names."""
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if hasattr(command, "commands"):
            found += commands(command, path)
        else:
            found.append(path)
    return found


ALL = commands(typer.main.get_command(app))


def test_the_cli_has_the_commands_of_the_readme():
    names = {" ".join(c) for c in ALL}
    assert {"sweep plan", "sweep run", "sweep status", "db query", "db rebuild", "report figures",
            "data list", "data fetch", "data verify", "data info"} <= names


@pytest.mark.parametrize("path", ALL, ids=[" ".join(c) for c in ALL])
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"harness {' '.join(path)}" in result.output


@pytest.mark.parametrize("path", ALL, ids=[" ".join(c) for c in ALL])
def test_every_command_is_in_the_readme(path):
    assert f"harness {' '.join(path)}" in README.read_text()


@pytest.mark.parametrize("path", ALL, ids=[" ".join(c) for c in ALL])
def test_help_shows_no_raw_metavars(path):
    output = CliRunner().invoke(app, [*path, "--help"]).output
    assert "<bool>" not in output and "<path>" not in output and "{" not in output.split("\n", 3)[1], output
