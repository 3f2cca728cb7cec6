"""Sweep files and job specs: TOML loading, validation, expansion into jobs, hashing, packing.

A sweep file has four sections:
- [sweep]: name, description, seeds;
- [base]: the job fields;
- [grid], or several [[grid]] tables: lists of values, crossed within each table and merged over
  [base]. Dotted keys reach nested fields ("prior.gamma" = [0, 0.8]); a registry field may also
  list tables (prior = [{ name = "normal" }, { name = "student_t", df = 9 }]), each merged over
  [base] as a [[jobs]] entry would be;
- [[jobs]]: explicit settings merged over [base].
The jobs are the union of every grid's crossing and the [[jobs]], in file order, each once per seed;
a setting found twice is one job (job ids de-duplicate). A file with neither runs [base] alone.
Naming another registry entry (prior.name = "normal" over a sparse base) drops the base's options
of the old entry. Every error is a SpecError naming the file and the key ('grid.prior.gamma',
'grid[1].beta', 'jobs[2].alpha'), raised before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from harness.datasets import DATASETS, dataset_schemas
from harness.models.divergences import DIVERGENCES
from harness.models.likelihoods import likelihood_schemas
from harness.models.nets import ARCHS
from harness.models.priors import PRIORS, prior_schemas
from harness.numerics import NUMERICS_VERSION
from harness.plugins import PluginError
from harness.schema import (
    Options,
    Param,
    SpecError,
    non_negative,
    one_of,
    resolve_options,
    unknown_key,
    unknown_name,
)

SPEC_VERSION = 1

# Scalar job fields: name -> Param. Fields without a default are required.
REQUIRED = object()
MAX_LATENT = 4096
MAX_DATA_BYTES = 64 * 2**30  # a dataset is held in memory whole: refuse one larger than this
MAX_JOBS = 100_000  # a sweep larger than this is refused before it is expanded
SCALARS: dict[str, Param] = {
    "latent_dim": Param(int, REQUIRED, "number of latent dimensions L", lambda v: 1 <= v <= MAX_LATENT,
                        f"an integer in [1, {MAX_LATENT}]"),
    "alpha": non_negative(0.0, "weight of the divergence D(q(z), p(z))"),
    "beta": non_negative(1.0, "weight of KL(q(z|x) || p(z))"),
    "epochs": Param(int, REQUIRED, "passes over the training set", lambda v: 1 <= v <= 1_000_000,
                    "an integer in [1, 1000000]"),
    "batch_size": Param(int, REQUIRED, "minibatch size B", lambda v: 1 <= v <= 1_000_000,
                        "an integer in [1, 1000000]"),
    "lr": Param(float, REQUIRED, "Adam learning rate", lambda v: 0 < v < 1, "in (0, 1)"),
    "dtype": one_of("float32", ("float32", "float64"), "floating-point precision of training"),
    "autocast": one_of("none", ("none", "bfloat16"), "mixed precision of the forward pass on CUDA (bfloat16 "
                       "changes the numbers)"),
    "iwae_k": Param(int, 0, "importance samples for the IWAE estimate of log p(x) (0: skip)",
                    lambda v: 0 <= v <= 100_000, "an integer in [0, 100000]"),
}
NAMES: dict[str, tuple[str, Any, Any]] = {  # name-valued fields: (kind, choices, default)
    "arch": ("architecture", ARCHS, REQUIRED),
    "divergence": ("divergence", DIVERGENCES, "none"),
}


def _registries() -> dict[str, tuple[str, dict[str, dict[str, Param]]]]:
    """Fields that name a registry entry with options: field -> (kind, name -> schema)."""
    return {"dataset": ("dataset", dataset_schemas()), "likelihood": ("likelihood", likelihood_schemas()),
            "prior": ("prior", prior_schemas())}


JOB_FIELDS = ("dataset", "arch", "latent_dim", "likelihood", "prior", "divergence", "alpha", "beta", "epochs",
              "batch_size", "lr", "dtype", "autocast", "iwae_k")
# fields added after job ids were first published -> the default at which to_dict() leaves them out
LATER_FIELDS: dict[str, Any] = {"autocast": "none"}
SECTIONS = ("sweep", "base", "grid", "jobs")
SWEEP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
SWEEP_KEYS = {"name": Param(str, None), "description": Param(str, ""),
              "seeds": Param(tuple, (0,), check=lambda v: len(v) > 0, allowed="a non-empty list of integers")}


@dataclass(frozen=True)
class JobSpec:
    """Everything that determines a run's result. Where it ran is a fact about the run, not the spec."""

    dataset: Options
    arch: str
    latent_dim: int
    likelihood: Options
    prior: Options
    divergence: str
    alpha: float
    beta: float
    epochs: int
    batch_size: int
    lr: float
    seed: int
    dtype: str = "float32"
    iwae_k: int = 0
    autocast: str = "none"
    # the plugins the job uses: (field, record), record = {group, name, distribution, version, source}; not
    # part of to_dict() (the spec a user wrote) but of the id: new plugin code, new ids (harness.plugins)
    plugins: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def plugin_record(self) -> dict[str, dict[str, str]]:
        """field -> the identity of the plugin it names, for the plugins this job uses ({} for built-ins)."""
        return {name: dict(record) for name, record in self.plugins}

    def to_dict(self) -> dict[str, Any]:
        """Every field, less those added after the first release that hold their default (LATER_FIELDS):
        a spec that does not use a newer field hashes, packs and stores exactly as it did before it."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plugins"}
        for key, default in LATER_FIELDS.items():
            if out[key] == default:
                del out[key]
        for key in ("dataset", "likelihood", "prior"):
            out[key] = out[key].to_dict()
        return out

    def canonical_json(self, numerics: int = NUMERICS_VERSION) -> str:
        head: dict[str, Any] = {"spec_version": SPEC_VERSION}
        if numerics > 1:  # version 1 predates the key: its ids hashed no numerics version
            head["numerics"] = numerics
        if self.plugins:  # only jobs that use a plugin: every other id is as it was
            head["plugins"] = self.plugin_record()
        return json.dumps({**head, **self.to_dict()}, sort_keys=True, separators=(",", ":"))

    def id_at(self, numerics: int) -> str:
        """The id this spec has under numerics version `numerics` (older ones find stale results)."""
        return hashlib.sha256(self.canonical_json(numerics).encode()).hexdigest()[:16]

    @property
    def job_id(self) -> str:
        """A short hash of the canonical JSON and the numerics version: the same spec has the same id
        on every machine, and a change of the numbers gives it a new one."""
        return self.id_at(NUMERICS_VERSION)

    def older_ids(self) -> dict[int, str]:
        """numerics version -> the id this spec had under it, for every version before the current."""
        return {v: self.id_at(v) for v in range(1, NUMERICS_VERSION)}

    def pack_key(self) -> str:
        """Jobs with equal keys can train as one grouped network: alpha, beta, seed and the prior's
        parameters may differ, nothing else."""
        shared = self.to_dict()
        for key in ("alpha", "beta", "seed"):
            shared.pop(key)
        shared["prior"] = self.prior.name
        return json.dumps(shared, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Rebuild from to_dict() output (shards and checkpoints store that)."""
        data = dict(data)
        data.pop("spec_version", None)
        data.pop("numerics", None)
        return validate_job(data, seed=data.pop("seed"))


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    path: str
    seeds: tuple[int, ...]
    jobs: tuple[JobSpec, ...] = field(default_factory=tuple)
    text: str = ""  # the TOML it was read from, as the store registers it


def _set_path(target: dict, path: str, value: Any) -> None:
    """Assign `value` at dotted `path`, turning a registry name into a table where a sub-key is set."""
    head, _, rest = path.partition(".")
    if not rest:
        target[head] = copy.deepcopy(value)
        return
    current = target.get(head)
    if isinstance(current, str):
        current = {"name": current}
    if not isinstance(current, dict):
        current = {}
    target[head] = current
    _set_path(current, rest, value)


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{'prior': {'gamma': [..]}} -> {'prior.gamma': [..]} (TOML's unquoted dotted keys nest)."""
    flat = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def validate_job(raw: dict[str, Any], seed: int) -> JobSpec:
    """Check every field of one merged job and return its JobSpec; SpecError on the first problem."""
    registries = _registries()
    for key in raw:
        if key not in JOB_FIELDS:
            raise unknown_key(key, key, JOB_FIELDS)
    values: dict[str, Any] = {"seed": seed}
    for name, param in SCALARS.items():
        if name not in raw:
            if param.default is REQUIRED:
                raise SpecError(name, f"missing; {param.help} ({param.allowed})")
            values[name] = param.default
        else:
            values[name] = param.coerce(name, raw[name])
    for name, (kind, choices, default) in NAMES.items():
        value = raw.get(name, default)
        if value is REQUIRED:
            raise SpecError(name, f"missing; allowed: {', '.join(sorted(choices))}")
        if not isinstance(value, str) or value not in choices:
            raise unknown_name(name, value, kind, choices)
        values[name] = value
    for name, (kind, schemas) in registries.items():
        if name not in raw:
            raise SpecError(name, f"missing; a {kind} name or table, allowed names: {', '.join(sorted(schemas))}")
        try:
            values[name] = resolve_options(name, raw[name], kind, schemas)
        except PluginError as exc:  # a plugin that does not load refuses the sweeps that use it, no others
            raise SpecError(f"{name}.name", str(exc)) from None
    values["plugins"] = _plugins_used(values)
    _check_together(values)
    return JobSpec(**values)


def _plugins_used(values: dict[str, Any]) -> tuple:
    """(field, identity record) for each field of a job that names a plugin, loading it (so that a plugin
    that fails to import is a SpecError of the sweeps that name it)."""
    used = []
    for name, registry in (("dataset", DATASETS), ("arch", ARCHS), ("prior", PRIORS), ("divergence", DIVERGENCES)):
        value = values[name].name if isinstance(values[name], Options) else values[name]
        record = registry.record(value)
        if record is None:
            continue
        try:
            registry[value]
        except PluginError as exc:
            raise SpecError(f"{name}.name" if isinstance(values[name], Options) else name, str(exc)) from None
        used.append((name, tuple(sorted(record.items()))))
    return tuple(used)


def _check_together(values: dict[str, Any]) -> None:
    """What each field allows alone is not enough: refuse combinations that could only fail as jobs."""
    from harness.datasets import planned_sizes

    if values["autocast"] != "none" and values["dtype"] != "float32":
        raise SpecError("autocast", f"must be 'none' with dtype {values['dtype']} ({values['autocast']} autocast "
                        f"lowers float32 training), got {values['autocast']!r}")
    if values["prior"].name == "mixture" and values["latent_dim"] != 2:
        raise SpecError("latent_dim", f"must be 2 with the mixture prior (its components are 2-D), got "
                        f"{values['latent_dim']}")
    dataset = values["dataset"]
    train, test, shape = planned_sizes(dataset)
    if train is not None and values["batch_size"] > train:
        raise SpecError("batch_size", f"must be at most the training set's size ({train} examples of "
                        f"{dataset.name} with these options), got {values['batch_size']}")
    need = ((train or 0) + (test or 0)) * math.prod(shape) * (8 if values["dtype"] == "float64" else 4)
    if need > MAX_DATA_BYTES:
        hint = "a subset or a stride" + (", or float32" if values["dtype"] == "float64" else "")
        raise SpecError("dataset", f"needs {need / 2**30:.0f} GiB in memory as {values['dtype']} (at most "
                        f"{MAX_DATA_BYTES // 2**30} GiB): take {hint}")


def _read_text(path: Path) -> str:
    if path.exists() and not path.is_file():  # a folder, or a FIFO that would block the read for ever
        raise SpecError("-", "is not a regular file", str(path))
    try:
        return path.read_text()
    except FileNotFoundError:
        raise SpecError("-", "file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("-", f"cannot be read ({exc})", str(path)) from None


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("-", _syntax_message(str(exc), text), str(path)) from None


def _syntax_message(message: str, text: str) -> str:
    """'TOML syntax error at line L, column C: what' from tomllib's '<what> (at line L, column C)'."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        return f"TOML syntax error at line {match[1]}, column {match[2]}: {message[:match.start()]}"
    if message.endswith("(at end of document)"):
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        return f"TOML syntax error at the end of the file (line {lines}): {message[:-len(' (at end of document)')]}"
    return f"TOML syntax error: {message}"


def _sweep_header(doc: dict[str, Any], path: Path) -> tuple[str, str, tuple[int, ...]]:
    header = doc.get("sweep", {})
    if not isinstance(header, dict):
        raise SpecError("sweep", "must be a table")
    for key in header:
        if key not in SWEEP_KEYS:
            raise unknown_key(f"sweep.{key}", key, list(SWEEP_KEYS))
    name = header.get("name", path.stem)
    if not isinstance(name, str):
        raise SpecError("sweep.name", f"expected a string, got {type(name).__name__} {name!r}")
    if not SWEEP_NAME.fullmatch(name):
        # the name becomes a file name in the store (sweeps/<name>.json): nothing that could leave it
        raise SpecError("sweep.name", f"must be 1 to 64 letters, digits, '_', '.' or '-', not starting with '.' "
                        f"(it names a file in the store), got {name!r}")
    description = SWEEP_KEYS["description"].coerce("sweep.description", header.get("description", ""))
    seeds = SWEEP_KEYS["seeds"].coerce("sweep.seeds", header.get("seeds", [0]))
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SpecError(f"sweep.seeds[{i}]", f"must be an integer >= 0, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError("sweep.seeds", f"has repeated seeds {list(seeds)}")
    return name, description, tuple(seeds)


def _grids(doc: dict[str, Any]) -> list[tuple[str, dict[str, list]]]:
    """(label, flat key -> values) per grid: one [grid] table is labelled 'grid', [[grid]] tables 'grid[i]'."""
    grid = doc.get("grid", {})
    if isinstance(grid, dict):
        tables = [("grid", grid)]
    elif isinstance(grid, list) and grid:
        tables = [(f"grid[{i}]", table) for i, table in enumerate(grid)]
    else:
        raise SpecError("grid", f"must be a table of lists ([grid]) or an array of such tables ([[grid]]), "
                        f"got {grid!r}")
    grids = []
    for label, table in tables:
        if not isinstance(table, dict):
            raise SpecError(label, f"must be a table of lists, got {table!r}")
        if label != "grid" and not table:
            raise SpecError(label, "is empty; give it lists to cross (an empty [[jobs]] runs [base] alone)")
        flat = _flatten(table)
        for key, values in flat.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"{label}.{key}", f"must be a non-empty list of values, got {values!r}")
        grids.append((label, flat))
    return grids


def _expand(doc: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(merged job dict, leaf path -> section that set it: 'base', 'grid', 'grid[i]' or 'jobs[i]') per setting."""
    base = doc.get("base", {})
    if not isinstance(base, dict):
        raise SpecError("base", "must be a table of job fields")
    base_flat = _flatten(base)
    grids = _grids(doc)
    explicit = doc.get("jobs", [])
    if not isinstance(explicit, list) or not all(isinstance(j, dict) for j in explicit):
        raise SpecError("jobs", "must be an array of tables ([[jobs]])")

    def merged(overrides: dict[str, Any], label: str) -> tuple[dict, dict]:
        # naming another registry entry (e.g. prior.name = "normal" over a sparse base) drops the
        # base's options for the old entry: they belong to it, not to the new one
        renamed = {key.rsplit(".", 1)[0] for key, value in overrides.items()
                   if key.endswith(".name") and value != base_flat.get(key, base_flat.get(key.rsplit(".", 1)[0]))}
        job: dict[str, Any] = {}
        origin = {}
        for key, value in base_flat.items():
            if any(key == head or key.startswith(f"{head}.") for head in renamed):
                continue
            _set_path(job, key, value)
            origin[key] = "base"
        for key, value in overrides.items():
            _set_path(job, key, value)
            origin[key] = label
        return job, origin

    count = sum(math.prod(len(v) for v in flat.values()) for _, flat in grids if flat) + len(explicit)
    if count > MAX_JOBS:
        raise SpecError("grid", f"expands to {count:,} settings; at most {MAX_JOBS:,} per sweep file (split the "
                        "sweep, or cross fewer values)")
    settings = []
    for label, flat in grids:
        if not flat:  # an empty [grid] table, as before [[grid]]: [base] alone when there are no [[jobs]]
            continue
        keys = list(flat)
        for combo in itertools.product(*(flat[k] for k in keys)):
            # a table in a grid's list is a setting of its own, flattened like a [[jobs]] entry
            settings.append(merged(_flatten(dict(zip(keys, combo, strict=True))), label))
    for i, job in enumerate(explicit):
        settings.append(merged(_flatten(job), f"jobs[{i}]"))
    if not settings:
        settings.append(merged({}, "base"))
    return settings


def _located(error: SpecError, origin: dict[str, str]) -> SpecError:
    """Prefix the key with the section that set it: 'grid.prior.gamma', 'jobs[2].alpha', 'base.lr'."""
    key = error.key
    section = origin.get(key)
    parent = key
    while section is None and "." in parent:
        parent = parent.rsplit(".", 1)[0]
        section = origin.get(parent)
    if section is None:
        section = next((origin[k] for k in origin if k.startswith(key + ".")), "base")
    return SpecError(f"{section}.{key}", error.message)


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a sweep file. Raises SpecError naming the file and the key."""
    return parse_sweep(_read_text(Path(path)), path)


def parse_sweep(text: str, path: str | Path) -> Sweep:
    """Validate and expand the TOML text of a sweep file as if read from `path` (which errors name, and
    whose stem is the sweep's name where the text gives none): e.g. a sweep as the store registered it."""
    path = Path(path)
    source = str(path)
    try:
        doc = _parse_toml(text, path)
        for key in doc:
            if key not in SECTIONS:
                raise unknown_key(key, key, SECTIONS)
        name, description, seeds = _sweep_header(doc, path)
        jobs, seen = [], set()
        for raw, origin in _expand(doc):
            try:
                template = validate_job(raw, seed=seeds[0])
            except SpecError as error:
                raise _located(error, origin) from None
            for seed in seeds:
                job = replace(template, seed=seed)
                if job.job_id not in seen:
                    seen.add(job.job_id)
                    jobs.append(job)
    except SpecError as error:
        raise error.with_source(source) from None
    return Sweep(name, description, source, seeds, tuple(jobs), text)


@dataclass(frozen=True)
class Pack:
    """Jobs that train together as one grouped network."""

    jobs: tuple[JobSpec, ...]

    @property
    def pack_id(self) -> str:
        return hashlib.sha256(",".join(j.job_id for j in self.jobs).encode()).hexdigest()[:12]


def pack_groups(jobs: list[JobSpec] | tuple[JobSpec, ...]) -> list[list[JobSpec]]:
    """The jobs that may share a pack (equal pack_key), group by group, in sweep order."""
    groups: dict[str, list[JobSpec]] = {}
    for job in jobs:
        groups.setdefault(job.pack_key(), []).append(job)
    return list(groups.values())


def plan_packs(jobs: list[JobSpec] | tuple[JobSpec, ...], max_pack: int) -> list[Pack]:
    """Group compatible jobs (equal pack_key) into packs of at most `max_pack`, in sweep order."""
    packs = []
    for members in pack_groups(jobs):
        for start in range(0, len(members), max_pack):
            packs.append(Pack(tuple(members[start:start + max_pack])))
    return packs


def job_summary(job: JobSpec | dict[str, Any]) -> dict[str, Any]:
    """The swept parameters as flat values (for tables and the store's typed columns), from a JobSpec or
    from its to_dict() as a shard stores it. A stored spec is read as it is, never validated again: an
    old shard must ingest whatever today's registries and rules say."""
    spec = job.to_dict() if isinstance(job, JobSpec) else job

    def name(value) -> str:
        return value["name"] if isinstance(value, dict) else str(value)

    prior = spec["prior"] if isinstance(spec["prior"], dict) else {}
    return {"dataset": name(spec["dataset"]), "arch": spec["arch"], "prior": name(spec["prior"]),
            "gamma": prior.get("gamma"), "df": prior.get("df"), "alpha": spec["alpha"], "beta": spec["beta"],
            "latent_dim": spec["latent_dim"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
            "lr": spec["lr"], "seed": spec["seed"]}


