"""Sweep files: validation (a corpus of broken files), expansion, hashing and packing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.numerics import NUMERICS_VERSION
from harness.schema import SpecError
from harness.spec import load_sweep, plan_packs

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((Path(__file__).parent / "bad_sweeps").glob("*.toml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_broken_sweep_is_refused_with_its_message(path):
    with pytest.raises(SpecError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert _expected(path) in message
    assert "\n" not in message


def test_corpus_covers_every_kind_of_mistake():
    names = {p.stem for p in BAD}
    for needed in ("unknown_key", "negative_alpha", "gamma_out_of_range", "epochs_wrong_type", "zero_batch",
                   "negative_lr", "unknown_dataset", "unknown_prior", "unknown_arch", "unknown_divergence",
                   "syntax_error"):
        assert needed in names


@pytest.mark.parametrize("path", BAD[:6], ids=[p.stem for p in BAD[:6]])
def test_cli_refuses_bad_sweep_with_exit_2_and_leaves_the_store_alone(path, tmp_path):
    store = tmp_path / "store" / "h.duckdb"
    result = CliRunner().invoke(app, ["sweep", "run", str(path), "--store", str(store)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and _expected(path) in lines[0]
    assert not store.parent.exists()


def test_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["sweep", "plan", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_paper_grid_expands_to_90_distinct_jobs_in_a_stable_order():
    first = load_sweep(ROOT / "sweeps" / "sparsity.toml")
    second = load_sweep(ROOT / "sweeps" / "sparsity.toml")
    assert len(first.jobs) == 90
    assert [j.job_id for j in first.jobs] == [j.job_id for j in second.jobs]
    assert len({j.job_id for j in first.jobs}) == 90
    assert {j.alpha for j in first.jobs} == {0, 10, 100, 500, 1000}
    assert {j.beta for j in first.jobs} == {0.1, 1, 5}
    assert {j.prior["gamma"] for j in first.jobs} == {0, 0.8}
    assert {j.seed for j in first.jobs} == {1, 2, 3}
    assert all(j.epochs == 80 and j.batch_size == 500 and j.latent_dim == 50 and j.lr == 5e-4 for j in first.jobs)


def test_job_id_is_a_pure_function_of_the_spec():
    job = load_sweep(ROOT / "sweeps" / "sparsity.toml").jobs[0]
    # pinned: the same spec has this id on every machine; a change here must bump SPEC_VERSION
    assert job.canonical_json().startswith('{"alpha":0.0,"arch":"conv32"')
    assert job.id_at(3) == "85e3927267706f78" and job.job_id == "f3698bac744eecf8"  # numerics 3 and 4
    assert job.id_at(2) == "df665e62926d90b7"  # numerics 2's id of the same spec
    # the id the first release (numerics 1, no version in the hash) gave it, as its stores hold it
    assert job.id_at(1) == "942a920b032a6870"
    assert job.older_ids() == {v: job.id_at(v) for v in range(1, NUMERICS_VERSION)}
    assert len({job.id_at(v) for v in range(1, NUMERICS_VERSION + 1)}) == NUMERICS_VERSION
    assert replace(job, alpha=10.0).job_id != job.job_id
    assert replace(job, seed=2).job_id != job.job_id


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


BASE = """
[base]
dataset = "fashion_mnist"
arch = "conv32"
latent_dim = 4
likelihood = "laplace"
prior = {prior}
epochs = 1
batch_size = 10
lr = 1e-3
"""


def test_defaults_are_filled_so_equivalent_files_hash_alike(tmp_path):
    short = load_sweep(_write(tmp_path, BASE.format(prior='"sparse"'))).jobs[0]
    spelled = load_sweep(_write(tmp_path, BASE.format(
        prior='{ name = "sparse", gamma = 0, spike_scale = 0.05 }') + 'alpha = 0\nbeta = 1\n')).jobs[0]
    assert short.job_id == spelled.job_id


def test_quoted_and_nested_dotted_grid_keys_agree(tmp_path):
    quoted = load_sweep(_write(tmp_path, BASE.format(prior='"sparse"') + '[grid]\n"prior.gamma" = [0, 0.5]\n'))
    nested = load_sweep(_write(tmp_path, BASE.format(prior='"sparse"') + "[grid]\nprior.gamma = [0, 0.5]\n"))
    assert [j.job_id for j in quoted.jobs] == [j.job_id for j in nested.jobs]
    assert [j.prior["gamma"] for j in quoted.jobs] == [0.0, 0.5]


def test_grid_and_explicit_jobs_are_a_union_times_seeds(tmp_path):
    body = BASE.format(prior='"sparse"') + """
[grid]
alpha = [0, 10]

[[jobs]]
alpha = 1000
"prior.gamma" = 0.8

[[jobs]]
alpha = 10
"""
    sweep = load_sweep(_write(tmp_path, "[sweep]\nseeds = [1, 2]\n" + body))
    settings = sorted({(j.alpha, j.prior["gamma"]) for j in sweep.jobs})
    assert settings == [(0.0, 0.0), (10.0, 0.0), (1000.0, 0.8)]
    assert len(sweep.jobs) == 6  # the repeated alpha = 10 setting is one job per seed, not two


def test_packs_group_compatible_jobs_only():
    jobs = list(load_sweep(ROOT / "sweeps" / "sparsity.toml").jobs)
    packs = plan_packs(jobs, 8)
    assert sum(len(p.jobs) for p in packs) == 90 and all(len(p.jobs) <= 8 for p in packs)
    assert len(packs) == 12  # all 90 are compatible: alpha, beta, gamma and seed may differ
    other = replace(jobs[0], lr=1e-3)
    mixed = plan_packs([jobs[0], other, jobs[1]], 8)
    assert sorted(len(p.jobs) for p in mixed) == [1, 2]


def test_naming_another_entry_in_a_job_drops_the_base_entrys_options(tmp_path):
    body = BASE.format(prior='{ name = "sparse", gamma = 0.8 }') + """
[[jobs]]
alpha = 1

[[jobs]]
prior = { name = "student_t", df = 5 }

[[jobs]]
"prior.name" = "normal"
"""
    jobs = load_sweep(_write(tmp_path, body)).jobs
    assert [j.prior.to_dict() for j in jobs] == [
        {"name": "sparse", "gamma": 0.8, "spike_scale": 0.05},
        {"name": "student_t", "df": 5.0},
        {"name": "normal", "scale": 1.0},
    ]


def test_every_sweep_file_loads():
    paths = sorted((ROOT / "sweeps").glob("*.toml"))
    assert paths
    for path in paths:
        sweep = load_sweep(path)
        assert sweep.jobs and len({j.job_id for j in sweep.jobs}) == len(sweep.jobs), path


def test_a_single_grid_table_keeps_its_jobs_and_their_order(tmp_path):
    jobs = load_sweep(ROOT / "sweeps" / "quickstart.toml").jobs
    # pinned: [grid] crosses its lists in file order, the last key fastest (alpha, then prior.gamma)
    assert [(j.alpha, j.prior["gamma"]) for j in jobs] == [(0, 0), (0, 0.8), (100, 0), (100, 0.8), (1000, 0),
                                                           (1000, 0.8)]
    assert jobs[0].id_at(3) == "baae0d293fb7e8f3" and jobs[0].job_id == "5c500ea8dd796a98"  # numerics 3 and 4
    table = load_sweep(_write(tmp_path, BASE.format(prior='"sparse"') + "[grid]\nalpha = [0, 10]\nbeta = [1, 2]\n"))
    array = load_sweep(_write(tmp_path, BASE.format(prior='"sparse"') + "[[grid]]\nalpha = [0, 10]\nbeta = [1, 2]\n"))
    assert [j.job_id for j in table.jobs] == [j.job_id for j in array.jobs]


def test_grids_are_a_union_each_crossed_within_itself(tmp_path):
    body = BASE.format(prior='"sparse"') + """
[[grid]]
alpha = [0, 10]
"prior.gamma" = [0, 0.5]

[[grid]]   # (10, 0.5) is also in the first grid
alpha = [10, 1000]
"prior.gamma" = [0.5]
beta = [1]

[[jobs]]   # and in the [[jobs]]
alpha = 10
"prior.gamma" = 0.5
"""
    sweep = load_sweep(_write(tmp_path, "[sweep]\nseeds = [1, 2]\n" + body))
    settings = [(j.alpha, j.prior["gamma"]) for j in sweep.jobs if j.seed == 1]
    # grids in file order, each crossed on its own: no (1000, 0.0), which a product of the grids would give
    assert settings == [(0, 0), (0, 0.5), (10, 0), (10, 0.5), (1000, 0.5)]
    assert len(sweep.jobs) == 10 and len({j.job_id for j in sweep.jobs}) == 10


def test_naming_another_entry_in_a_grid_drops_the_base_entrys_options(tmp_path):
    body = BASE.format(prior='{ name = "sparse", gamma = 0.8, spike_scale = 0.1 }') + """
[[grid]]
"prior.name" = ["normal"]

[[grid]]
"prior.name" = ["student_t"]
"prior.df" = [3, 9]
"""
    jobs = load_sweep(_write(tmp_path, body)).jobs
    assert [j.prior.to_dict() for j in jobs] == [
        {"name": "normal", "scale": 1.0},
        {"name": "student_t", "df": 3.0},
        {"name": "student_t", "df": 9.0},
    ]


def test_a_grid_may_list_whole_registry_tables_merged_like_jobs(tmp_path):
    base = BASE.format(prior='{ name = "sparse", gamma = 0.8, spike_scale = 0.1 }')
    listed = base + """
[grid]
prior = [{ name = "sparse", gamma = 0.5 }, { name = "student_t", df = 9 }]
beta = [1, 2]
"""
    spelled = base + """
[[grid]]
"prior.gamma" = [0.5]
beta = [1, 2]

[[grid]]
"prior.name" = ["student_t"]
"prior.df" = [9]
beta = [1, 2]
"""
    jobs = load_sweep(_write(tmp_path, listed)).jobs
    assert [(j.prior.to_dict(), j.beta) for j in jobs] == [
        ({"name": "sparse", "gamma": 0.5, "spike_scale": 0.1}, 1),  # the same entry keeps the base's other options
        ({"name": "sparse", "gamma": 0.5, "spike_scale": 0.1}, 2),
        ({"name": "student_t", "df": 9.0}, 1),  # another entry drops them
        ({"name": "student_t", "df": 9.0}, 2),
    ]
    assert [j.job_id for j in jobs] == [j.job_id for j in load_sweep(_write(tmp_path, spelled)).jobs]


FIRST = "[[grid]]\nalpha = [0]\n\n"  # a good grid before the bad one: errors name the bad one's index


@pytest.mark.parametrize("grids, expected", [
    (FIRST + "[[grid]]\nalpha = 5\n", "key 'grid[1].alpha': must be a non-empty list of values, got 5"),
    (FIRST + "[[grid]]\nbeta = []\n", "key 'grid[1].beta': must be a non-empty list of values, got []"),
    (FIRST + "[[grid]]\n", "key 'grid[1]': is empty"),
    (FIRST + "[[grid]]\nbeta = [1, -2]\n", "key 'grid[1].beta': must be >= 0 and finite, got -2.0"),
    (FIRST + '[[grid]]\nprior = [{ name = "sparse", df = 3 }]\n', "key 'grid[1].prior.df': not an option of prior"),
    ("grid = 5\n", "key 'grid': must be a table of lists ([grid]) or an array of such tables ([[grid]]), got 5"),
    ("grid = []\n", "key 'grid': must be a table of lists ([grid]) or an array of such tables ([[grid]]), got []"),
    ("grid = [[0, 10]]\n", "key 'grid[0]': must be a table of lists, got [0, 10]"),
])
def test_a_bad_grid_is_refused_naming_its_key(tmp_path, grids, expected):
    path = _write(tmp_path, grids + BASE.format(prior='"sparse"'))
    with pytest.raises(SpecError) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("name", ["../jobs/0123456789abcdef/result", "/tmp/evil", "a/b", "line\nbreak", "nul\0x",
                                  "x" * 300, ".hidden", "", "space name"])
def test_a_sweep_name_never_leaves_the_store(tmp_path, name):
    from harness.db.store import Store

    path = tmp_path / "s.toml"
    path.write_text(f"[sweep]\nname = {json.dumps(name)}\n" + BASE.format(prior='"sparse"'))
    with pytest.raises(SpecError) as error:
        load_sweep(path)
    assert error.value.key == "sweep.name" and "names a file in the store" in error.value.message
    with pytest.raises(ValueError):
        Store(tmp_path / "h.duckdb").sweep_manifest(name)
    with pytest.raises(ValueError):
        Store(tmp_path / "h.duckdb").job_dir(name)


def test_a_good_sweep_name_is_kept():
    path = ROOT / "sweeps" / "demo" / "clustering.toml"
    assert load_sweep(path).name == "clustering_demo"


def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path):
    values = ", ".join(str(v) for v in range(100))
    path = tmp_path / "huge.toml"
    path.write_text(BASE.format(prior='"sparse"') + f"\n[grid]\nalpha = [{values}]\nbeta = [{values}]\n"
                    f"lr = [{', '.join(str(1e-4 * (i + 1)) for i in range(100))}]\n")
    with pytest.raises(SpecError) as error:  # counted, not expanded: 10^5 expanded settings took 108 s
        load_sweep(path)
    assert error.value.key == "grid" and "1,000,000 settings" in error.value.message


def test_a_fifo_is_refused_not_read(tmp_path):
    import os

    fifo = tmp_path / "sweep.toml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="is not a regular file"):
        load_sweep(fifo)
