"""`harness data`: list, fetch, verify and look at the datasets.

A thin layer over harness.datasets: the library raises DataUnavailable or DataCorrupt with a message
that says what to do; this module prints that message as one `error: ...` line and exits 1 (2 for a
dataset name it does not know).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import DataRootOption, console, fail
from harness.datasets import DATASETS, DataCorrupt, DatasetEntry, DataUnavailable, sources
from harness.plugins import PluginError
from harness.schema import SpecError, closest

app = typer.Typer(help="Find, fetch, check and look at the datasets.", no_args_is_help=True)


class _Fail(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@contextmanager
def _reported() -> Iterator[None]:
    """Turn the library's errors into one `error:` line and an exit code."""
    try:
        yield
    except _Fail as exc:
        fail(str(exc), exc.code)
    except (DataUnavailable, DataCorrupt, SpecError, OSError) as exc:
        fail(str(exc), 1)


def _root(data_root: Path | None) -> Path | None:
    """The data root, refused (DataUnavailable) when it names a file."""
    return sources.data_root(data_root)


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise _Fail(f"unknown dataset '{name}'{closest(name, list(DATASETS))}; known: {', '.join(DATASETS)}", 2)
    try:
        return DATASETS[name]
    except PluginError as exc:
        raise _Fail(str(exc), 2) from None


def _entries() -> Iterator[tuple[str, DatasetEntry | None, str]]:
    """(name, entry, '') for every dataset, or (name, None, why) for a plugin one that cannot be used: one
    broken plugin never hides the others."""
    for name in DATASETS:
        try:
            yield name, DATASETS[name], ""
        except PluginError as exc:
            yield name, None, str(exc)


def _factors(entry: DatasetEntry) -> str:
    return ", ".join(f"{name} ({size})" for name, size in entry.factors) or "-"


def _where(entry: DatasetEntry, root: Path | None) -> str | None:
    try:
        return entry.locate(root)
    except (DataUnavailable, DataCorrupt, OSError) as exc:
        return f"error: {exc}"


@app.command("list")
def list_(data_root: DataRootOption = None) -> None:
    """List every dataset: what it is, its sizes and factors, and whether and where it is present.

    Example: harness data list --data-root ~/data
    """
    with _reported():
        root = _root(data_root)
        table = Table(title="datasets")
        table.add_column("name", no_wrap=True)
        for column in ("what it is", "train / test", "example", "factors", "present", "where"):
            table.add_column(column)
        for name, entry, why in _entries():
            if entry is None:
                table.add_row(name, escape(why), "-", "-", "-", "no", "-")
                continue
            where = _where(entry, root)
            table.add_row(name, escape(entry.description), f"{entry.train_size:,} / {entry.test_size:,}",
                          "x".join(map(str, entry.example_shape)), _factors(entry),
                          "yes" if where else "no", escape(where or "-"))
        console.print(table)


@app.command()
def fetch(name: Annotated[str, typer.Argument(help="Dataset name, as in `harness data list`.")],
          data_root: DataRootOption = None) -> None:
    """Get a dataset from the first source that works, and say which one.

    Example: harness data fetch mnist --data-root ~/data
    """
    with _reported():
        entry, root = _entry(name), _root(data_root)
        console.print(f"{name}: {escape(entry.fetch(root))}")


@app.command()
def verify(name: Annotated[str | None, typer.Argument(help="Dataset name; all present ones if left out.")] = None,
           data_root: DataRootOption = None) -> None:
    """Check the files of a dataset (or of every present one) against their published checksums.

    Example: harness data verify fashion_mnist --data-root ~/data
    """
    with _reported():
        root = _root(data_root)
        if name is not None:
            check = _entry(name).verify
            line = f"ok: {check(root)}" if check is not None else "unchecked: no checksum known for this dataset"
            console.print(f"{name}: {escape(line)}")
            return
        failed = []
        table = Table(title="verify")
        for column in ("name", "result", "detail"):
            table.add_column(column)
        for dataset, entry, why in _entries():
            result, detail = _verify_one(dataset, entry, root) if entry is not None else ("FAILED", why)
            table.add_row(dataset, result, escape(detail))
            failed += [dataset] if result == "FAILED" else []
        console.print(table)
        if failed:
            raise DataCorrupt(f"{len(failed)} dataset(s) failed verification: {', '.join(failed)}")


def _verify_one(name: str, entry: DatasetEntry, root: Path | None) -> tuple[str, str]:
    """('ok' | 'absent' | 'FAILED' | 'unchecked', detail) for one dataset."""
    if _where(entry, root) is None:
        return "absent", "-"
    check = entry.verify
    if check is None:
        return "unchecked", "no checksum known for this dataset"
    try:
        return "ok", check(root)
    except DataUnavailable as exc:
        return "absent", str(exc)
    except DataCorrupt as exc:
        return "FAILED", str(exc)


@app.command()
def info(name: Annotated[str, typer.Argument(help="Dataset name, as in `harness data list`.")],
         out: Annotated[Path | None, typer.Option(help="PNG to write the sample grid to "
                                                          "(default: reports/data_NAME.png)")] = None,
         data_root: DataRootOption = None) -> None:
    """Show a dataset's classes and factors, and draw a grid of samples (a scatter plot for 2-D points).

    Example: harness data info shapes2d --out reports/shapes2d.png
    """
    from harness.report.samples import sample, write_sample_png

    with _reported():
        entry, root = _entry(name), _root(data_root)
        dataset = sample(entry, root)
        path = out if out is not None else Path("reports") / f"data_{name}.png"
        write_sample_png(dataset, path)
        console.print(f"[bold]{name}[/bold]: {escape(entry.description)}")
        console.print(escape(f"source: {dataset.source}" + (f" ({dataset.note})" if dataset.note else "")))
        console.print(f"sizes: {entry.train_size:,} train / {entry.test_size:,} test; "
                      f"example shape {'x'.join(map(str, dataset.example_shape))}")
        console.print(escape(f"classes ({len(dataset.class_names)}): {', '.join(dataset.class_names)}"))
        factors = (zip(dataset.factor_names, dataset.factor_sizes, strict=True) if dataset.factor_names
                   else entry.factors)
        console.print("factors: " + (", ".join(f"{f} ({n})" for f, n in factors) or "-"))
        console.print(escape(f"wrote {path}"))
