"""Typed, range-checked parameters for the things a sweep file can name.

Registries (datasets, priors, likelihoods, architectures) describe their options with `Param`, so
that validation messages, CLI help and defaults all come from one place.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A sweep file or job field is invalid; `key` is the dotted path of the offending field."""

    def __init__(self, key: str, message: str, source: str = ""):
        self.key = key
        self.message = message
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if self.key == "-":  # about the whole file (unreadable, not TOML)
            return f"{where}{self.message}"
        return f"{where}key '{self.key}': {self.message}"

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.key, self.message, source)


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_key(key: str, name: str, allowed: list[str] | tuple[str, ...]) -> SpecError:
    listed = ", ".join(sorted(allowed)) or "none"
    return SpecError(key, f"unknown key '{name}'{closest(name, allowed)}; allowed: {listed}")


def unknown_name(key: str, value: str, kind: str, allowed) -> SpecError:
    listed = ", ".join(sorted(allowed))
    return SpecError(key, f"unknown {kind} '{value}'{closest(str(value), list(allowed))}; allowed: {listed}")


@dataclass(frozen=True)
class Param:
    """One option: its type, default, a range check and the words that say what is allowed."""

    kind: type | tuple[type, ...]
    default: Any
    help: str = ""
    check: Callable[[Any], bool] | None = None
    allowed: str = ""  # e.g. ">= 0", "in [0, 1)"

    def coerce(self, key: str, value: Any) -> Any:
        """Return `value` as this parameter's type, or raise SpecError naming `key`."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise SpecError(key, f"expected {_type_words(kinds)}, got boolean {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tuple in kinds and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, kinds):
            raise SpecError(key, f"expected {_type_words(kinds)}, got {type(value).__name__} {value!r}")
        if self.check is not None and not self.check(value):
            raise SpecError(key, f"must be {self.allowed}, got {value!r}")
        return value

    def describe(self) -> str:
        """One line for listings and help: type, default, what is allowed, then the help text."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        default = self.default if not isinstance(self.default, float) else f"{self.default:.4g}"
        words = ", ".join(w for w in (_type_words(kinds), f"default {default}", self.allowed) if w)
        return f"{words}: {self.help}" if self.help else words


def _type_words(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             tuple: "a list", type(None): "nothing"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def positive_int(default: int, help: str = "") -> Param:
    return Param(int, default, help, lambda v: v > 0, "a positive integer")


def non_negative(default: float, help: str = "") -> Param:
    return Param(float, default, help, lambda v: 0 <= v < math.inf, ">= 0 and finite")


def positive(default: float, help: str = "") -> Param:
    return Param(float, default, help, lambda v: 0 < v < math.inf, "> 0 and finite")


def unit_interval_open(default: float, help: str = "") -> Param:
    return Param(float, default, help, lambda v: 0 <= v < 1, "in [0, 1)")


def one_of(default: str, choices: tuple[str, ...], help: str = "") -> Param:
    return Param(str, default, help, lambda v: v in choices, "one of " + ", ".join(choices))


@dataclass(frozen=True)
class Options:
    """A registry entry's name plus its resolved, typed options (hashable, canonical)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, key: str) -> Any:
        return dict(self.params)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params}}


def resolve_options(key: str, raw: Any, kind: str, registry: dict[str, dict[str, Param]]) -> Options:
    """Turn a TOML value (a name, or a table with `name` and options) into Options with defaults.

    `registry` maps each allowed name to its parameter schema.
    """
    if isinstance(raw, str):
        raw = {"name": raw}
    if isinstance(raw, Options):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise SpecError(key, f"expected a {kind} name or a table with 'name', got {raw!r}")
    if "name" not in raw:
        raise SpecError(f"{key}.name", f"missing; allowed: {', '.join(sorted(registry))}")
    name = raw["name"]
    if not isinstance(name, str) or name not in registry:
        raise unknown_name(f"{key}.name", name, kind, registry)
    schema = registry[name]
    resolved = {}
    for option, value in raw.items():
        if option == "name":
            continue
        if option not in schema:
            raise SpecError(f"{key}.{option}", f"not an option of {kind} '{name}'{closest(option, list(schema))}; "
                            f"allowed: {', '.join(sorted(schema)) or 'none'}")
        resolved[option] = schema[option].coerce(f"{key}.{option}", value)
    for option, param in schema.items():
        resolved.setdefault(option, param.default)
    return Options(name, tuple(sorted(resolved.items())))
