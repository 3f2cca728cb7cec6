"""Every command has --help with an example and a line in the README; no page (the README and docs/) shows a
command, an option, a make target or a link that does not exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
CLI = typer.main.get_command(app)


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


ALL = commands(CLI)


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


# --- the pages -----------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
TARGET = re.compile(r"^([A-Za-z][\w-]*):", re.M)


def every_option(group) -> set[str]:
    """Every option name of every command, groups included (--help, --version, --store, -p, ...)."""
    ctx = typer.main.get_command(app).make_context("harness", [], resilient_parsing=True)
    names = {name for p in group.get_params(ctx) for name in (*p.opts, *p.secondary_opts) if name.startswith("-")}
    for command in getattr(group, "commands", {}).values():
        names |= every_option(command)
    return names


OPTIONS = every_option(CLI)
MAKE_TARGETS = set(TARGET.findall((ROOT / "Makefile").read_text()))


def check_invocation(line: str, whole: bool) -> str | None:
    """Why the CLI would refuse `harness ...` (None if it would not). A bare command name in prose
    (`harness sweep plan`) names a command; with arguments or options (`whole`: a `$ harness` line of a
    code block, or a span with more than names) it must parse as it stands: options, choices, arity."""
    words = shlex.split(line, comments=True)[1:]
    command, path = CLI, ["harness"]
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in command.commands:
            return f"{line}: there is no command `{' '.join(path)} {name}`"
        command = command.commands[name]
        path.append(name)
    if "--help" in words or not (whole or words):
        return None
    if hasattr(command, "commands"):
        return f"{line}: `{' '.join(path)}` is a group; it needs a command"
    try:
        command.make_context(" ".join(path), words)
    except Exception as error:  # click's UsageError (typer vendors click, so no one class to name)
        if not hasattr(error, "format_message"):
            raise
        return f"{line}: {error.format_message()}"
    return None


def problems(text: str, page: Path = README) -> list[str]:
    """What a page shows that does not exist: commands, options, arguments the CLI refuses, make targets,
    local links and images."""
    found = []
    blocks = FENCE.findall(text)
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ harness "):
                found.append(check_invocation(line[2:], whole=True))
            elif line.startswith(("$ make ", "make ")):
                target = line.removeprefix("$ ").split()[1]
                found.append(None if target in MAKE_TARGETS else f"{line}: no make target `{target}`")
    prose = FENCE.sub("", text)
    for span in SPAN.findall(prose):
        words = span.split()
        if words[0] == "harness":
            found.append(check_invocation(span, whole=False))
        elif words[0] in CLI.commands and hasattr(CLI.commands[words[0]], "commands") and len(words) > 1:
            found.append(check_invocation(f"harness {span}", whole=False))  # `sweep run`, `db rebuild`
        elif re.match(r"--?[A-Za-z]", words[0]) and words[0] not in OPTIONS:
            found.append(f"`{span}`: no command has the option {words[0]}")
        elif words[0] == "make" and len(words) > 1 and words[1] not in MAKE_TARGETS:
            found.append(f"`{span}`: no make target `{words[1]}`")
    for target in LINK.findall(prose):
        if not re.match(r"[a-z]+:|#", target) and not (page.parent / target.split("#")[0]).exists():
            found.append(f"link to {target}: no such file beside {page.name}")
    return [p for p in found if p]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_page_shows_a_command_option_or_link_that_does_not_exist(page):
    assert problems(page.read_text(), page) == []


@pytest.mark.parametrize("text, culprit", [
    ("```\n$ harness sweep run sweeps/quickstart.toml --turbo\n```", "--turbo"),
    ("```\n$ harness sweep launch sweeps/quickstart.toml\n```", "sweep launch"),
    ("```\n$ harness db query 'SELECT 1' --format xml\n```", "xml"),
    ("```\n$ harness report job\n```", "JOB_ID"),
    ("Use `harness sweep plan sweeps/quickstart.toml --turbo` first.", "--turbo"),
    ("Then `sweep launch` picks them up.", "sweep launch"),
    ("`--turbo` makes it faster.", "--turbo"),
    ("Run `make deploy`.", "deploy"),
    ("![a figure](docs/img/no_such_figure.png)", "no_such_figure"),
])
def test_the_page_check_finds_what_does_not_exist(text, culprit):
    """The check above can fail: an invented option, command, choice, missing argument, target or image."""
    found = problems(text)
    assert len(found) == 1 and culprit in found[0], found


def test_the_readme_is_a_front_door():
    """At most 8 KB, and its first commands are the two that set up and test: `make demo`, then `make test`."""
    text = README.read_text()
    assert len(text.encode()) <= 8 * 1024
    first = FENCE.findall(text)[0].splitlines()
    assert first[1].startswith("make demo") and first[2].startswith("make test")
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
