"""`harness plugins`: the priors, divergences, metrics, datasets and architectures that installed
distributions add through entry points (harness.plugins), with their identity and options."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from harness.cli.common import console, plain


def _registries() -> dict[str, Any]:
    """group -> its registry (imported here: they bring in torch)."""
    from harness.datasets import DATASETS
    from harness.metrics.registry import METRICS
    from harness.models.divergences import DIVERGENCES
    from harness.models.nets import ARCHS
    from harness.models.priors import PRIORS

    return {"priors": PRIORS, "divergences": DIVERGENCES, "metrics": METRICS, "datasets": DATASETS, "archs": ARCHS}


def _describe(group: str, entry: Any) -> list[str]:
    """What a loaded entry offers, one line each: its options (with their help), or what it is."""
    if group == "priors":
        return [f"{name}: {param.describe()}" for name, param in entry.options.items()]
    if group == "datasets":
        return [entry.description] + [f"{name}: {param.describe()}" for name, param in entry.options.items()]
    if group == "metrics":
        return [f"version {entry.version}: {entry.help}"]
    if group == "archs":
        return [f"examples shaped {entry.shape or 'any'}"]
    doc = (entry.__doc__ or "").strip().splitlines()
    return doc[:1]


def plugins(show_builtins: Annotated[bool, typer.Option("--builtins", help="List the built-ins too, with their "
                                                        "options.")] = False) -> None:
    """List the installed plugins: group, name, distribution, version, source hash and options.

    Example: harness plugins

    A plugin is a distribution with entry points in the groups harness.priors, harness.divergences,
    harness.metrics, harness.datasets or harness.archs (docs/extending.md). Exits 1 where one cannot be used
    (it fails to import, or its name clashes): run it on a cluster node to check its environment.
    """
    registries = _registries()
    found = broken = 0
    for group, registry in registries.items():
        if show_builtins:
            for name, entry in registry.builtins.items():
                console.print(f"{group} {name} (built-in)", highlight=False)
                for line in _describe(group, entry):
                    console.print(f"    {plain(line)}", highlight=False)
        for key, plugin in registry.plugins().items():
            found += 1
            console.print(f"{group} {plugin.name} {plain(str(plugin.identity))} {plain(plugin.value)}",
                          highlight=False)
            try:
                if plugin.refused:
                    raise ValueError(plugin.refused)
                lines = _describe(group, registry[key])
            except Exception as exc:  # noqa: BLE001 - a plugin's import may raise anything: one line
                broken += 1
                lines = [f"cannot be used: {' '.join(str(exc).split())}"]
            for line in lines:
                console.print(f"    {plain(line)}", highlight=False)
    console.print(f"{found} plugin{'' if found == 1 else 's'} installed" + (f", {broken} cannot be used" if broken
                  else "") + " (entry point groups harness.priors, harness.divergences, harness.metrics, "
                  "harness.datasets, harness.archs: see docs/extending.md)", highlight=False)
    if broken:
        raise typer.Exit(1)
