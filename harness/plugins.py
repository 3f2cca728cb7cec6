"""Plugins: priors, divergences, metrics, datasets and architectures that other distributions install, found
through Python entry points, in the same registries as the built-ins.

The interface, once for every group (docs/extending.md shows a worked example). A distribution declares
entry points in these groups; each entry point's name is the name a sweep file types, and it loads to:

- `harness.priors`: a `harness.models.priors.PriorEntry(options, build)`: `options` maps each option to a
  `harness.schema.Param` (type, default, range, help); `build(members, latent, data)` returns a
  `PriorModule` for a pack (members: the jobs' resolved `Options`; data: the training `Dataset`).
- `harness.divergences`: a function `(z, prior_z, q_loc, q_scale, prior) -> (G,)` tensor: the estimate
  of D(q(z), p(z)) for each of the G members of a pack (see harness.models.divergences).
- `harness.metrics`: a `harness.metrics.registry.Metric` (name, version, help, compute(encodings,
  generator) -> MetricOutput, ...). Plugin metrics run through `harness eval`, never at training.
- `harness.datasets`: a `harness.datasets.base.DatasetEntry` (sizes, shape, classes, load, options).
- `harness.archs`: a `harness.models.nets.ArchEntry(encoder, decoder, shape)` of PackedNet classes.

A registry lists a plugin by its entry point's name without importing it; the plugin is imported when
something uses that name, so a plugin that fails to import refuses only the sweeps that use it (one line
naming its distribution). A name that a built-in has, or that two plugins declare, is refused with one
line naming both. A plugin's identity (distribution, version and the sha256 of its source files) enters
the id of each job that uses it, so that editing the plugin makes its old results stale while every
other job keeps its id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

# registry -> entry point group
GROUPS = {"priors": "harness.priors", "divergences": "harness.divergences", "metrics": "harness.metrics",
          "datasets": "harness.datasets", "archs": "harness.archs"}


class PluginError(ValueError):
    """A plugin cannot be used (it fails to import, loads to the wrong thing, or clashes by name): one line."""


@dataclass(frozen=True)
class Identity:
    """Which code a plugin's results came from."""

    distribution: str
    version: str
    source: str  # sha256 of its source files

    def to_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "version": self.version, "source": self.source}

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (source {self.source[:12]})"


@dataclass(frozen=True)
class Plugin:
    """One entry point of a group, as `harness plugins` lists it."""

    group: str
    name: str
    value: str  # module:attribute
    identity: Identity
    refused: str = ""  # why the name cannot be used (a clash), else ""


def source_sha256(module: str) -> str:
    """The sha256 of the source files of `module`'s top-level package (every .py file under it, by path and
    bytes), or of the module's own file; found without importing it (an editable install hashes the checkout)."""
    top = module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        return ""
    if spec.submodule_search_locations:
        roots = [Path(p) for p in spec.submodule_search_locations]
        files = sorted((f.relative_to(root).as_posix(), f) for root in roots for f in root.rglob("*.py"))
    elif spec.origin and Path(spec.origin).is_file():
        files = [(Path(spec.origin).name, Path(spec.origin))]
    else:
        return ""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def discovered(group: str) -> tuple[Plugin, ...]:
    """Every installed entry point of the group's entry point group (GROUPS[group]), unloaded."""
    found = []
    for point in importlib.metadata.entry_points(group=GROUPS[group]):
        dist = point.dist
        name, version = (dist.metadata["Name"], dist.version) if dist is not None else ("?", "?")
        found.append(Plugin(group, point.name, point.value, Identity(name, version, source_sha256(point.module))))
    return tuple(sorted(found, key=lambda p: (p.name, p.identity.distribution)))


class Registry(Mapping[str, Any]):
    """Name -> entry for one group: the built-ins, then the installed plugins (imported on first use).

    `accepts(obj)` says whether a loaded entry point is what the group provides (`kind` names it in errors).
    Membership, iteration and len() never import a plugin; indexing imports the one it names."""

    def __init__(self, group: str, builtins: Mapping[str, Any], kind: str, accepts: Callable[[Any], bool]):
        self.group, self.builtins, self.kind, self.accepts = group, dict(builtins), kind, accepts
        self._loaded: dict[str, Any] = {}

    def plugins(self) -> dict[str, Plugin]:
        """name -> the plugin that declares it, with `refused` set where the name clashes."""
        out: dict[str, Plugin] = {}
        for plugin in discovered(self.group):
            where = f"{plugin.identity.distribution} {plugin.identity.version}"
            if plugin.name in self.builtins:
                why = (f"{self.kind} plugin '{plugin.name}' of {where} has the name of a built-in {self.kind}; "
                       "the built-in is kept: rename the entry point")
                out.setdefault(f"{plugin.name}@{plugin.identity.distribution}", replace(plugin, refused=why))
            elif plugin.name in out:
                first = out[plugin.name]
                why = (f"{self.kind} '{plugin.name}' is declared by two plugins, {first.identity.distribution} "
                       f"{first.identity.version} and {where}: uninstall or rename one")
                out[plugin.name] = replace(first, refused=why)
            else:
                out[plugin.name] = plugin
        return out

    def _usable(self) -> dict[str, Plugin]:
        return {name: p for name, p in self.plugins().items() if "@" not in name}

    def __contains__(self, name: object) -> bool:
        return name in self.builtins or name in self._usable()

    def __iter__(self) -> Iterator[str]:
        yield from self.builtins
        yield from (name for name in self._usable() if name not in self.builtins)

    def __len__(self) -> int:
        return len(self.builtins) + len(self._usable())

    def __getitem__(self, name: str) -> Any:
        if name in self.builtins:
            return self.builtins[name]
        if name in self._loaded:
            return self._loaded[name]
        plugin = self._usable().get(name)
        if plugin is None:
            raise KeyError(name)
        if plugin.refused:
            raise PluginError(plugin.refused)
        where = (f"{self.kind} plugin '{name}' ({plugin.identity.distribution} {plugin.identity.version}, "
                 f"{plugin.value})")
        try:
            entry = importlib.metadata.EntryPoint(name, plugin.value, GROUPS[self.group]).load()
        except Exception as exc:  # anything its import raises: one line, and only its users are refused
            raise PluginError(f"{where} cannot be imported: {type(exc).__name__}: {_line(exc)}") from exc
        if not self.accepts(entry):
            raise PluginError(f"{where} loads to {type(entry).__name__}, not a {self.kind} entry "
                              f"(see docs/extending.md)")
        self._loaded[name] = entry
        return entry

    def identity(self, name: str) -> Identity | None:
        """The identity of the plugin that provides `name`, or None for a built-in (or an unknown name)."""
        if name in self.builtins:
            return None
        plugin = self._usable().get(name)
        return None if plugin is None else plugin.identity

    def record(self, name: str) -> dict[str, str] | None:
        """What a result stores of the plugin that provides `name`: {group, name, distribution, version,
        source}; None for a built-in. is_current() reads it back."""
        identity = self.identity(name)
        return None if identity is None else {"group": self.group, "name": name, **identity.to_dict()}

    def view(self, pick: Callable[[Any], Any]) -> Mapping[str, Any]:
        """A read-only mapping name -> pick(entry), loading an entry only when its name is looked up (what
        the sweep validator needs: every name, and the schema of the names a file uses)."""
        return _View(self, pick)


class _View(Mapping[str, Any]):
    def __init__(self, registry: Registry, pick: Callable[[Any], Any]):
        self.registry, self.pick = registry, pick

    def __contains__(self, name: object) -> bool:
        return name in self.registry

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry)

    def __len__(self) -> int:
        return len(self.registry)

    def __getitem__(self, name: str) -> Any:
        return self.pick(self.registry[name])


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def is_current(record: dict[str, dict[str, str]]) -> bool:
    """Whether every plugin in a job's record (JobSpec.plugin_record: field -> group, name, distribution,
    version, source) is installed now with the same version and source; False where one is gone or changed."""
    for used in record.values():
        now = [p.identity for p in discovered(used.get("group", "")) if p.name == used.get("name")
               and p.identity.distribution == used.get("distribution")] if used.get("group") in GROUPS else []
        if not now or (now[0].version, now[0].source) != (used.get("version"), used.get("source")):
            return False
    return True
