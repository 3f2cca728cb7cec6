"""The fast paths of a pack: bfloat16 autocast (part of the spec), torch.compile and cuDNN's determinism switch
(RunOptions, not part of it), and the pack size chosen from memory."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.numerics import NUMERICS_VERSION
from harness.packing import MAX_PACK, choose_pack_size, one_step
from harness.schema import SpecError
from harness.spec import JobSpec, Pack, load_sweep, plan_packs
from harness.train import RunOptions, build_model, train_pack
from tests.test_pack import job, synthetic_images

SPARSITY = Path(__file__).resolve().parents[1] / "sweeps" / "sparsity.toml"
GiB = 2**30
TERMS = ("loss", "recon", "kl", "reg")


@pytest.fixture(scope="module")
def data():
    full = synthetic_images(40, 30)  # batch 20: two steps per epoch
    return full.__class__(**{**full.__dict__, "train_x": full.train_x.float(), "test_x": full.test_x.float()})


def tiny(alpha: float = 100.0, seed: int = 1, epochs: int = 2, **changes) -> JobSpec:
    return replace(job(alpha, 1.0, 0.8, seed, epochs=epochs, batch=20, dtype="float32"), **changes)


def strip(result) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_second")} for e in result.epochs]


# the spec


def test_autocast_none_is_left_out_so_every_existing_id_stays():
    spec = load_sweep(SPARSITY).jobs[0]
    assert spec.autocast == "none"
    assert (spec.id_at(3), spec.id_at(2), spec.id_at(1)) == ("85e3927267706f78", "df665e62926d90b7", "942a920b032a6870")
    assert spec.job_id == spec.id_at(NUMERICS_VERSION)
    assert replace(spec, autocast="none").job_id == spec.job_id
    assert "autocast" not in spec.canonical_json() and "autocast" not in spec.to_dict()
    assert {v: spec.id_at(v) for v in (1, 2, 3)} == {v: replace(spec, autocast="none").id_at(v) for v in (1, 2, 3)}
    assert JobSpec.from_dict(spec.to_dict()) == spec  # a dict from before the field


def test_bfloat16_is_part_of_the_spec_its_id_and_its_pack_key():
    spec = load_sweep(SPARSITY).jobs[0]
    low = replace(spec, autocast="bfloat16")
    assert low.job_id != spec.job_id and low.id_at(1) != spec.id_at(1)
    assert low.to_dict()["autocast"] == "bfloat16" and '"autocast":"bfloat16"' in low.canonical_json()
    assert JobSpec.from_dict(low.to_dict()) == low
    assert low.pack_key() != spec.pack_key()
    packs = plan_packs([spec, low, replace(spec, seed=9), replace(low, seed=9)], 8)
    assert [[j.autocast for j in p.jobs] for p in packs] == [["none", "none"], ["bfloat16", "bfloat16"]]


SWEEP = """
[base]
dataset = "fashion_mnist"
arch = "conv32"
latent_dim = 4
likelihood = "laplace"
prior = "sparse"
epochs = 1
batch_size = 10
lr = 1e-3
"""


def test_sweep_files_take_autocast_in_base_grid_and_jobs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP + 'autocast = "bfloat16"\n[grid]\nautocast = ["none", "bfloat16"]\n\n'
                    '[[jobs]]\nautocast = "none"\nalpha = 5\n')
    sweep = load_sweep(path)
    assert [(j.autocast, j.alpha) for j in sweep.jobs] == [("none", 0.0), ("bfloat16", 0.0), ("none", 5.0)]


@pytest.mark.parametrize(("body", "key"), [
    ('dtype = "float64"\nautocast = "bfloat16"\n', "base.autocast"),
    ('dtype = "float64"\n[grid]\nautocast = ["none", "bfloat16"]\n', "grid.autocast"),
    ('autocast = "float16"\n', "base.autocast"),
])
def test_autocast_is_refused_with_one_line_naming_file_key_and_allowed_values(tmp_path, body, key):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP + body)
    with pytest.raises(SpecError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key '{key}': ") and "\n" not in message
    assert "'none'" in message if "float64" in body else "one of none, bfloat16" in message


# bfloat16 autocast in training and evaluation


def test_bfloat16_runs_the_networks_in_bfloat16_and_hands_float32_on(data):
    model = build_model((tiny(autocast="bfloat16"),), data, torch.device("cpu"))
    seen = []
    model.decoder.body[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = data.train_x[:20].unsqueeze(0)
    enc = model(x, torch.randn(1, 20, 6))
    assert seen == [torch.bfloat16]
    assert {t.dtype for t in (enc.loc, enc.scale, enc.z, enc.out)} == {torch.float32}


def test_bfloat16_training_gives_finite_numbers_that_differ_from_float32(data):
    jobs = (tiny(0.0, 1, epochs=1), tiny(100.0, 2, epochs=1))  # two steps each
    full = train_pack(Pack(jobs), data, "cpu")
    low = train_pack(Pack(tuple(replace(j, autocast="bfloat16") for j in jobs)), data, "cpu")
    for a, b in zip(full, low, strict=True):
        assert a.status == b.status == "done", b.error
        for term in TERMS:
            assert torch.isfinite(torch.tensor(b.epochs[-1][term]))
        assert b.epochs[-1]["loss"] != a.epochs[-1]["loss"]
        assert b.epochs[-1]["loss"] == pytest.approx(a.epochs[-1]["loss"], rel=0.05)  # the same model, rounded
        test_a = {m["name"]: m["value"] for m in a.metrics if m["split"] == "test"}
        test_b = {m["name"]: m["value"] for m in b.metrics if m["split"] == "test"}
        assert test_b["elbo"] != test_a["elbo"] and test_b["elbo"] == pytest.approx(test_a["elbo"], rel=0.05)


# RunOptions


def test_deterministic_is_the_default_and_false_lets_cudnn_autotune(data):
    during = []

    def watch(event):
        if event.kind == "epoch":
            during.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))

    fast = train_pack(Pack((tiny(epochs=1),)), data, "cpu", watch, options=RunOptions(deterministic=False))
    assert fast[0].status == "done" and during == [(False, True)]
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    train_pack(Pack((tiny(epochs=1),)), data, "cpu", watch)
    assert during[1] == (True, False)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)


def test_a_failed_compilation_falls_back_to_eager_with_the_same_bits(data, monkeypatch, caplog):
    """The failing 'compiled' step runs the real forward pass first (moving batch norm's statistics) and
    then raises, as a compiler failing after its first graph would: the pack must end exactly as eager."""
    jobs = (tiny(0.0, 1), tiny(100.0, 2))
    eager = train_pack(Pack(jobs), data, "cpu")
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(1)
            fn(*args)
            raise RuntimeError("inductor: something went wrong\nwith a second line")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="harness.train"):
        fallen = train_pack(Pack(jobs), data, "cpu", options=RunOptions(compile=True))
    assert len(calls) == 1  # tried once, then eager
    assert [r.status for r in fallen] == ["done", "done"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "harness.train"]
    assert warnings == ["torch.compile failed, the pack trains eagerly: RuntimeError: inductor: something went wrong"]
    for a, b in zip(eager, fallen, strict=True):
        assert strip(a) == strip(b) and a.metrics == b.metrics


@pytest.mark.slow  # inductor compiles C++ for about a minute on two cores
def test_a_compiled_pack_agrees_with_eager_in_float32(data, caplog):
    from torch._dynamo.utils import counters

    jobs = (tiny(0.0, 1), tiny(100.0, 2))
    eager = train_pack(Pack(jobs), data, "cpu")
    counters.clear()
    with caplog.at_level(logging.WARNING, logger="harness.train"):
        compiled = train_pack(Pack(jobs), data, "cpu", options=RunOptions(compile=True))
    assert not [r for r in caplog.records if r.name == "harness.train"]  # no fallback
    assert counters["stats"]["unique_graphs"] > 0  # dynamo did capture the step
    for a, b in zip(eager, compiled, strict=True):
        assert b.status == "done", b.error
        # float32, 4 steps: inductor's fused kernels round differently (measured: 3e-4 relative at most)
        for x, y in zip(a.epochs, b.epochs, strict=True):
            for term in TERMS:
                assert y[term] == pytest.approx(x[term], rel=2e-3), term
        mine = {m["name"]: m["value"] for m in b.metrics if m["split"] == "test"}
        for m in a.metrics:
            if m["split"] == "test" and m["name"] in ("elbo", "recon", "kl"):
                assert mine[m["name"]] == pytest.approx(m["value"], rel=2e-3), m["name"]


# the pack size


def linear(base: float, per_member: float):
    asked = []

    def measure(groups: int) -> int:
        asked.append(groups)
        return int(base + groups * per_member)

    return measure, asked


def test_pack_size_is_the_most_members_that_fit_in_80_percent_of_free_memory(data):
    measure, asked = linear(1 * GiB, 2 * GiB)
    jobs = [tiny(seed=s) for s in range(100)]
    size, why = choose_pack_size(jobs, data, "cuda", free_bytes=51 * GiB, measure=measure)
    assert asked == [1, 2]
    assert size == 19  # 1 + 19 * 2 = 39 GiB <= 0.8 * 51 = 40.8 GiB < 1 + 20 * 2
    assert why == "pack size 19: 2.0 GiB per member, 1.0 GiB besides, 51.0 GiB free"


@pytest.mark.parametrize(("jobs", "free", "expected", "says"), [
    (10, 80 * GiB, 10, "all 10 jobs"),
    (500, 10_000 * GiB, MAX_PACK, f"at most {MAX_PACK}"),
    (100, 2 * GiB, 1, "even one member needs more than 80%"),
])
def test_pack_size_is_at_least_1_and_at_most_64_and_the_jobs(data, jobs, free, expected, says):
    measure, _ = linear(1 * GiB, 2 * GiB)
    size, why = choose_pack_size([tiny(seed=s) for s in range(jobs)], data, "cuda", free_bytes=free, measure=measure)
    assert size == expected and why.startswith(f"pack size {expected}: ") and says in why


def test_pack_size_measures_nothing_on_the_cpu_or_for_one_job(data):
    def never(groups: int) -> int:
        raise AssertionError("measured")

    assert choose_pack_size([tiny(), tiny(seed=2)], data, "cpu", measure=never) == (1, "pack size 1 on the CPU")
    assert choose_pack_size([tiny()], data, "cuda", free_bytes=GiB, measure=never)[0] == 1


def test_a_measured_step_runs_on_the_cpu_with_iwae(data):
    losses = one_step(tiny(iwae_k=3), data, torch.device("cpu"), 2)
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())
