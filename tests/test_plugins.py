"""Plugins: the example package (examples/laplace-prior) and a few made-up ones are 'installed' by putting
their package and a .dist-info folder (METADATA, entry_points.txt) on the path, which is all that entry
point discovery reads. The unit tests run in this process; the end-to-end ones run the real CLI with
PYTHONPATH pointing at the folder, so that its worker processes see the plugin too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import pytest

from harness import plugins
from harness.models.priors import PRIORS
from harness.plugins import PluginError
from harness.schema import SpecError
from harness.spec import load_sweep, parse_sweep

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "laplace-prior"
HARNESS = [sys.executable, "-m", "harness.cli"]


def install(site: Path, distribution: str, package: str, files: dict[str, str], entry_points: dict[str, dict]) -> Path:
    """A distribution `distribution` with the modules `files` (name -> source) in package `package` and the
    entry points {group: {name: value}}, found on the path at `site`."""
    (site / package).mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (site / package / name).write_text(source)
    info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in points.items())
                                                   for group, points in entry_points.items()))
    return site / package


def install_example(site: Path) -> Path:
    """The example plugin as its pyproject declares it."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "harness_laplace", site / "harness_laplace", dirs_exist_ok=True)
    return install(site, project["name"], "harness_laplace", {}, project["entry-points"])


BROKEN = "raise ImportError('needs a library this machine lacks')\n"
RAISING = '''from harness.models.priors import PriorEntry
from harness.schema import positive


def build(members, latent, data=None):
    raise RuntimeError("this prior cannot be built")


PRIOR = PriorEntry({"scale": positive(1.0, "unused")}, build)
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on this process's path whose distributions the registries discover (caches reset)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def forget() -> None:  # what earlier tests imported from their own sites
        plugins.discovered.cache_clear()
        PRIORS._loaded.clear()
        for name in [m for m in sys.modules if m.startswith("harness_")]:
            del sys.modules[name]

    forget()
    yield folder
    forget()


def sweep_text(priors: str) -> str:
    """The example's sweep with its grid of priors replaced by `priors` (a TOML list of tables)."""
    text = (EXAMPLE / "sweep.toml").read_text()
    return text.replace('prior = [{ name = "laplace", scale = 0.5 }, { name = "normal" }]', f"prior = {priors}")


# -- the registry, in this process --------------------------------------------------------------------------


def test_a_plugin_is_listed_without_import_and_loads_on_use_with_its_identity(site):
    install_example(site)
    assert "laplace" in PRIORS and "laplace" not in PRIORS._loaded  # listed, not imported
    assert list(PRIORS)[:5] == ["sparse", "normal", "anisotropic", "student_t", "mixture"]
    identity = PRIORS.identity("laplace")
    assert (identity.distribution, identity.version, len(identity.source)) == ("harness-laplace", "0.1.0", 64)
    assert PRIORS.identity("normal") is None
    assert set(PRIORS["laplace"].options) == {"scale"}
    job = parse_sweep(sweep_text('[{ name = "laplace", scale = 0.5 }]'), "s.toml").jobs[0]
    assert job.plugin_record() == {"prior": {"group": "priors", "name": "laplace", "distribution": "harness-laplace",
                                             "version": "0.1.0", "source": identity.source}}
    assert '"plugins"' in job.canonical_json()


def test_a_builtin_job_keeps_its_id_whatever_plugins_are_installed(site):
    before = parse_sweep(sweep_text('[{ name = "normal" }]'), "s.toml").jobs
    install_example(site)
    install(site, "harness-other", "harness_other", {"__init__.py": RAISING}, {"harness.priors": {"other": "x:Y"}})
    plugins.discovered.cache_clear()
    after = parse_sweep(sweep_text('[{ name = "normal" }]'), "s.toml").jobs
    assert [j.job_id for j in after] == [j.job_id for j in before] and not after[0].plugins


def test_a_plugin_that_fails_to_import_refuses_only_the_sweeps_that_use_it(site):
    install(site, "harness-broken", "harness_broken", {"__init__.py": BROKEN},
            {"harness.priors": {"broken": "harness_broken:PRIOR"}})
    with pytest.raises(SpecError) as refused:
        parse_sweep(sweep_text('[{ name = "broken" }]'), "s.toml")
    message = str(refused.value)
    assert "key 'grid.prior.name'" in message and "harness-broken 0.1.0" in message
    assert "ImportError: needs a library this machine lacks" in message and "\n" not in message
    assert len(parse_sweep(sweep_text('[{ name = "normal" }]'), "s.toml").jobs) == 4  # others still run


def test_a_name_clash_is_refused_in_one_line_naming_both(site):
    install(site, "harness-shadow", "harness_shadow", {"__init__.py": RAISING},
            {"harness.priors": {"normal": "harness_shadow:PRIOR", "twin": "harness_shadow:PRIOR"}})
    install(site, "harness-twin", "harness_twin", {"__init__.py": RAISING},
            {"harness.priors": {"twin": "harness_twin:PRIOR"}})
    assert PRIORS["normal"] is PRIORS.builtins["normal"]  # a plugin never replaces a built-in
    refused = {p.name: p.refused for p in PRIORS.plugins().values() if p.refused}
    assert "has the name of a built-in prior" in refused["normal"] and "harness-shadow 0.1.0" in refused["normal"]
    assert "harness-shadow 0.1.0 and harness-twin 0.1.0" in refused["twin"]
    with pytest.raises(SpecError, match="declared by two plugins, harness-shadow 0.1.0 and harness-twin 0.1.0"):
        parse_sweep(sweep_text('[{ name = "twin" }]'), "s.toml")


def test_an_entry_point_that_loads_to_the_wrong_thing_is_refused(site):
    install(site, "harness-wrong", "harness_wrong", {"__init__.py": "PRIOR = 'not a prior'\n"},
            {"harness.priors": {"wrong": "harness_wrong:PRIOR"}})
    with pytest.raises(PluginError, match=r"prior plugin 'wrong' \(harness-wrong 0.1.0, harness_wrong:PRIOR\) "
                                          r"loads to str, not a prior entry"):
        PRIORS["wrong"]
    with pytest.raises(KeyError):
        PRIORS["no-such-prior"]


def test_a_broken_dataset_plugin_is_a_row_of_data_list_not_a_crash(site):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.datasets import DATASETS

    install(site, "harness-broken", "harness_broken", {"__init__.py": BROKEN},
            {"harness.datasets": {"broken_data": "harness_broken:DATA"}})
    DATASETS._loaded.clear()
    listed = CliRunner().invoke(app, ["data", "list"], terminal_width=400)
    assert listed.exit_code == 0 and "fashion_mnist" in listed.output, listed.output
    assert "broken_data" in listed.output and "cannot be imported" in listed.output
    fetched = CliRunner().invoke(app, ["data", "fetch", "broken_data"])
    assert fetched.exit_code == 2 and "harness-broken 0.1.0" in fetched.stderr and "Traceback" not in fetched.output


def test_is_current_tells_changed_or_missing_plugin_code(site):
    package = install_example(site)
    record = parse_sweep(sweep_text('[{ name = "laplace" }]'), "s.toml").jobs[0].plugin_record()
    assert plugins.is_current(record)
    (package / "__init__.py").write_text((package / "__init__.py").read_text() + "\n# edited\n")
    plugins.discovered.cache_clear()
    assert not plugins.is_current(record)
    assert not plugins.is_current({"prior": {**record["prior"], "distribution": "gone"}})


# -- end to end, through the CLI ----------------------------------------------------------------------------


def harness(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def stored(store: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.slow
def test_a_plugin_runs_beside_a_builtin_and_editing_it_makes_exactly_its_jobs_stale(tmp_path):
    site = tmp_path / "site"
    package = install_example(site)
    sweep, store = EXAMPLE / "sweep.toml", tmp_path / "store" / "harness.duckdb"
    listed = harness(site, "plugins")
    assert listed.returncode == 0 and "priors laplace harness-laplace 0.1.0" in listed.stdout, listed.stdout
    assert "scale: a number, default 0.7071, > 0 and finite: b, the scale" in listed.stdout
    first = harness(site, "sweep", "run", str(sweep), "--store", str(store))
    assert first.returncode == 0 and "8 done, 0 failed" in first.stdout, first.stdout + first.stderr
    rows = stored(store, "SELECT prior, plugins->>'$.prior.distribution', job_id FROM jobs ORDER BY ALL")
    assert [r[:2] for r in rows] == [("laplace", "harness-laplace")] * 4 + [("normal", None)] * 4
    normal_ids = {r[2] for r in rows if r[0] == "normal"}
    assert normal_ids == {j.job_id for j in parse_sweep(sweep_text('[{ name = "normal" }]'), "x").jobs}
    laplace_before = {r[2] for r in rows if r[0] == "laplace"}

    (package / "__init__.py").write_text((package / "__init__.py").read_text() + "\n# a comment changes the code\n")
    plan = harness(site, "sweep", "plan", str(sweep), "--store", str(store))
    assert "4 done, 0 failed, 0 diverged, 4 pending" in plan.stdout, plan.stdout
    assert "4 of the pending jobs are stale" in plan.stdout
    status = harness(site, "sweep", "status", "--store", str(store))
    row = next(line for line in status.stdout.splitlines() if "laplace_example" in line)
    assert [c.strip() for c in row.split("│")[3:10]] == ["8", "4", "0", "0", "0", "4", "4"], status.stdout
    export = tmp_path / "runs.csv"
    assert harness(site, "report", "export", "--out", str(export), "--store", str(store)).returncode == 0
    exported = export.read_text().splitlines()
    assert len(exported) == 1 + 4 and not any(job in line for job in laplace_before for line in exported)

    second = harness(site, "sweep", "run", str(sweep), "--store", str(store))
    assert "4 to run" in second.stdout and "4 done, 0 failed" in second.stdout, second.stdout + second.stderr
    rows = stored(store, "SELECT prior, job_id FROM jobs WHERE numerics IS NOT NULL ORDER BY ALL")
    assert {r[1] for r in rows if r[0] == "normal"} == normal_ids  # never retrained
    assert len({r[1] for r in rows if r[0] == "laplace"} - laplace_before) == 4
    assert harness(site, "report", "export", "--out", str(export), "--store", str(store)).returncode == 0
    assert len(export.read_text().splitlines()) == 1 + 8


@pytest.mark.slow
def test_a_plugin_whose_builder_raises_fails_its_jobs_not_the_sweep(tmp_path):
    site = tmp_path / "site"
    install(site, "harness-raising", "harness_raising", {"__init__.py": RAISING},
            {"harness.priors": {"raising": "harness_raising:PRIOR"}})
    sweep = tmp_path / "mixed.toml"
    sweep.write_text(sweep_text('[{ name = "raising" }, { name = "normal" }]').replace("epochs = 20", "epochs = 2"))
    store = tmp_path / "store" / "harness.duckdb"
    run = harness(site, "sweep", "run", str(sweep), "--store", str(store))
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert "4 done, 4 failed" in run.stdout and "RuntimeError: this prior cannot be built" in run.stdout
    broken = install(site, "harness-broken", "harness_broken", {"__init__.py": BROKEN},
                     {"harness.priors": {"broken": "harness_broken:PRIOR"}})
    listed = harness(site, "plugins")
    assert listed.returncode == 1 and "cannot be used" in listed.stdout and "harness-broken" in listed.stdout
    plan = harness(site, "sweep", "plan", str(sweep).replace("mixed", "mixed"), "--store", str(store))
    assert plan.returncode == 0, plan.stderr  # a broken plugin that the sweep does not use changes nothing
    uses = tmp_path / "uses.toml"
    uses.write_text(sweep_text('[{ name = "broken" }]'))
    refused = harness(site, "sweep", "plan", str(uses), "--store", str(store))
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1 and "harness-broken" in refused.stderr
    assert broken.exists()


METRIC = '''from harness.metrics.registry import Metric, MetricOutput


def spread(enc, gen):
    return MetricOutput({"spread": float(enc.loc.std())})


METRIC = Metric("spread", 1, "the posterior means' standard deviation", spread, columns=("spread",))
'''


@pytest.mark.slow
def test_a_plugin_metric_runs_through_eval_with_its_identity_and_again_when_its_code_changes(tmp_path):
    site = tmp_path / "site"
    package = install(site, "harness-spread", "harness_spread", {"__init__.py": METRIC},
                      {"harness.metrics": {"spread": "harness_spread:METRIC"}})
    sweep = tmp_path / "one.toml"
    sweep.write_text(sweep_text('[{ name = "normal" }]').replace("seeds = [1, 2]", "seeds = [1]")
                     .replace("alpha = [0, 5]", "alpha = [0]").replace("epochs = 20", "epochs = 2"))
    store = tmp_path / "store" / "harness.duckdb"
    assert harness(site, "sweep", "run", str(sweep), "--store", str(store)).returncode == 0
    assert stored(store, "SELECT count(*) FROM metrics WHERE metric = 'spread'") == [(0,)]  # never at training
    first = harness(site, "eval", "--metric", "spread", "--store", str(store))
    assert first.returncode == 0 and "1 to evaluate" in first.stdout, first.stdout + first.stderr
    rows = stored(store, "SELECT name, plugin->>'$.distribution', value FROM metrics WHERE metric = 'spread'")
    assert len(rows) == 1 and rows[0][:2] == ("spread", "harness-spread") and rows[0][2] > 0
    assert "0 to evaluate" in harness(site, "eval", "--metric", "spread", "--store", str(store)).stdout
    (package / "__init__.py").write_text(METRIC + "# changed\n")
    again = harness(site, "eval", "--metric", "spread", "--store", str(store))
    assert "1 to evaluate" in again.stdout, again.stdout + again.stderr
    columns = stored(store, "SELECT column_name FROM (DESCRIBE runs)")
    assert ("spread",) not in columns  # installing a metric never changes the runs view


KIT = '''import torch

from harness.datasets.base import Dataset, DatasetEntry
from harness.models.nets import ArchEntry, MlpDecoder, MlpEncoder
from harness.schema import positive_int


def blobs(options, root, device, dtype):
    gen = torch.Generator().manual_seed(0)
    n = options["n"]
    labels = torch.arange(2 * n) % 2
    points = torch.randn(2 * n, 2, generator=gen) * 0.3 + labels.unsqueeze(1) * 2.0
    half = n
    return Dataset("blobs", points[:half].to(device, dtype), labels[:half].to(device), points[half:].to(device, dtype),
                   labels[half:].to(device), ("left", "right"), source="procedural")


BLOBS = DatasetEntry("blobs", "two Gaussian blobs in 2-D", 100, 100, (2,), ("left", "right"), blobs,
                     lambda root: "procedural", lambda root: "procedural",
                     options={"n": positive_int(100, "points per split")})


class TinyEncoder(MlpEncoder):
    hidden_units = 16


class TinyDecoder(MlpDecoder):
    hidden_units = 16


TINY = ArchEntry(TinyEncoder, TinyDecoder, None)


def mean_gap(z, prior_z, q_loc=None, q_scale=None, prior=None):
    """The squared distance between the means of the posterior and prior samples, per member."""
    return ((z.mean(1) - prior_z.mean(1)) ** 2).sum(-1)
'''


def test_a_dataset_an_architecture_and_a_divergence_from_plugins_train_a_job(site, tmp_path):
    from harness.db.store import Store
    from harness.executors.worker import run_pack
    from harness.spec import Pack

    install(site, "harness-kit", "harness_kit", {"__init__.py": KIT},
            {"harness.datasets": {"blobs": "harness_kit:BLOBS"}, "harness.archs": {"tiny": "harness_kit:TINY"},
             "harness.divergences": {"mean_gap": "harness_kit:mean_gap"}})
    text = sweep_text('[{ name = "normal" }]').replace('dataset = { name = "pinwheel" }',
                                                     'dataset = { name = "blobs", n = 100 }')
    text = text.replace('arch = "mlp"', 'arch = "tiny"').replace('divergence = "kld_inc"', 'divergence = "mean_gap"')
    text = text.replace("batch_size = 400", "batch_size = 50").replace("epochs = 20", "epochs = 2")
    jobs = parse_sweep(text, "kit.toml").jobs
    assert set(jobs[0].plugin_record()) == {"dataset", "arch", "divergence"}
    with pytest.raises(SpecError, match=r"dataset.n': must be a positive integer, got 0"):  # like a built-in's
        parse_sweep(text.replace("n = 100", "n = 0"), "kit.toml")
    store = Store(tmp_path / "store" / "harness.duckdb")
    job = next(j for j in jobs if j.alpha == 5)
    run_pack(Pack((job,)), store, "kit", "cpu", None)
    shard = json.loads(store.shard_path(job.job_id).read_text())
    assert shard["status"] == "done", shard["error"]
    assert [e["reg"] > 0 for e in shard["epochs"]] == [True, True]  # the plugin divergence was computed
    assert {name: r["distribution"] for name, r in shard["plugins"].items()} == {
        "dataset": "harness-kit", "arch": "harness-kit", "divergence": "harness-kit"}


def test_a_node_without_the_plugin_code_fails_its_jobs_with_one_line(site, tmp_path):
    from harness.db.store import Store
    from harness.executors.worker import run_pack
    from harness.spec import Pack

    package = install_example(site)
    job = parse_sweep(sweep_text('[{ name = "laplace" }]'), "s.toml").jobs[0]
    (package / "__init__.py").write_text((package / "__init__.py").read_text() + "\n# another version\n")
    plugins.discovered.cache_clear()
    store = Store(tmp_path / "store" / "harness.duckdb")
    run_pack(Pack((job,)), store, "s", "cpu", None)
    shard = json.loads(store.shard_path(job.job_id).read_text())
    assert shard["status"] == "failed" and "is not what the job was planned with" in shard["error"]
    assert "harness-laplace 0.1.0" in shard["error"] and shard["plugins"]["prior"]["name"] == "laplace"


def test_the_example_sweep_needs_its_plugin():
    plugins.discovered.cache_clear()
    if "laplace" in PRIORS:  # CI installs the example for its own step; then there is nothing to refuse
        pytest.skip("the example plugin is installed in this environment")
    with pytest.raises(SpecError, match="unknown prior 'laplace'"):
        load_sweep(EXAMPLE / "sweep.toml")
