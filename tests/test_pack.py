"""Packed training: a job's numbers do not depend on its pack; the same job twice gives the same bits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from harness.datasets.base import Dataset
from harness.schema import Options
from harness.spec import JobSpec, Pack
from harness.train import member_state, train_pack


def synthetic_images(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """Blurry random 32x32 images with 10 labels: enough structure for losses to move."""
    gen = torch.Generator().manual_seed(seed)

    def draw(n):
        low = torch.rand(n, 1, 8, 8, generator=gen, dtype=torch.float64)
        x = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
        return x.clamp(1e-6, 1 - 1e-6), torch.randint(0, 10, (n,), generator=gen)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, tuple(str(i) for i in range(10)))


def job(alpha: float, beta: float, gamma: float, seed: int, epochs: int = 20, batch: int = 10,
        dtype: str = "float64") -> JobSpec:
    return JobSpec(dataset=Options("synthetic"), arch="conv32", latent_dim=6,
                   likelihood=Options("laplace", (("scale", 0.1),)),
                   prior=Options("sparse", (("gamma", gamma), ("spike_scale", 0.05))),
                   divergence="mmd_dim", alpha=alpha, beta=beta, epochs=epochs, batch_size=batch, lr=5e-4,
                   seed=seed, dtype=dtype)


JOBS = (job(0.0, 1.0, 0.0, 1), job(100.0, 0.5, 0.8, 2), job(1000.0, 5.0, 0.8, 3))


@pytest.fixture(scope="module")
def data() -> Dataset:
    return synthetic_images(10, 30)  # batch = training set: one step per epoch, so epochs are steps


@pytest.fixture(scope="module")
def packed(data):
    return train_pack(Pack(JOBS), data, "cpu")


def test_members_of_a_pack_match_the_same_jobs_alone_over_20_steps(data, packed):
    for together, spec in zip(packed, JOBS, strict=True):
        alone = train_pack(Pack((spec,)), data, "cpu")[0]
        assert together.status == alone.status == "done"
        assert len(together.epochs) == len(alone.epochs) == 20
        for a, b in zip(together.epochs, alone.epochs, strict=True):
            for term in ("loss", "recon", "kl", "reg"):
                assert a[term] == pytest.approx(b[term], rel=1e-5, abs=1e-9), (spec.job_id, a["epoch"], term)
        mine = {m["name"]: m["value"] for m in together.metrics}
        theirs = {m["name"]: m["value"] for m in alone.metrics}
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert mine[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-9), name


def test_losses_move_and_members_differ(packed):
    first, last = packed[0].epochs[0]["loss"], packed[0].epochs[-1]["loss"]
    assert last < first  # training does something
    assert len({round(r.epochs[-1]["loss"], 6) for r in packed}) == 3


def test_same_job_twice_gives_bit_identical_numbers(data):
    spec = replace(JOBS[1], dtype="float32", epochs=3)
    one = train_pack(Pack((spec,)), data.__class__(**{**data.__dict__, "train_x": data.train_x.float(),
                                                     "test_x": data.test_x.float()}), "cpu")[0]
    two = train_pack(Pack((spec,)), data.__class__(**{**data.__dict__, "train_x": data.train_x.float(),
                                                     "test_x": data.test_x.float()}), "cpu")[0]
    assert one.status == "done"
    strip = [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_second")} for e in one.epochs]
    assert strip == [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_second")} for e in two.epochs]
    assert one.metrics == two.metrics
    assert one.dim_stats == two.dim_stats


def test_member_checkpoint_loads_into_a_one_member_model(data, tmp_path):
    from safetensors.torch import load_file

    from harness.train import build_model

    jobs = tuple(replace(j, epochs=1) for j in JOBS[:2])  # what a checkpoint holds does not need training
    results = train_pack(Pack(jobs), data, "cpu", checkpoint_dir=lambda job_id: tmp_path / job_id)
    weights = [a["path"] for a in results[1].artifacts if a["kind"] == "weights"][0]
    state = load_file(weights)
    single = build_model((jobs[1],), data, torch.device("cpu"))
    single.load_state_dict(state)  # same keys and shapes as a one-member model
    assert (tmp_path / jobs[1].job_id / "spec.json").read_text().strip() == jobs[1].canonical_json()
    assert set(member_state(single, 0)) == set(state)


def test_a_diverging_member_is_recorded_and_the_others_are_untouched(data, packed):
    bad = replace(JOBS[0], alpha=float("inf"), seed=9)  # the loss is inf from the first step (validation
    results = train_pack(Pack((JOBS[1], bad)), data, "cpu")  # refuses this in sweep files; here it is a probe)
    assert results[1].status == "diverged" and results[1].failed_epoch == 1
    assert "loss became inf" in results[1].error
    assert results[0].status == "done"
    for a, b in zip(results[0].epochs, packed[1].epochs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_an_exception_fails_the_pack_without_raising(data):
    too_big = replace(JOBS[0], batch_size=1000)
    [result] = train_pack(Pack((too_big,)), data, "cpu")
    assert result.status == "failed" and "larger than the training set" in result.error


def test_recorded_loss_is_the_objective_per_datapoint(packed):
    """loss = -recon + beta * KL + alpha * D_hat per datapoint, for every epoch and on the test set
    (the batch loss alpha * B * D_hat, divided by B)."""
    for result, spec in zip(packed, JOBS, strict=True):
        test = {m["name"]: m["value"] for m in result.metrics if m["split"] == "test"}
        for record in [*result.epochs, test]:
            expected = -record["recon"] + spec.beta * record["kl"] + spec.alpha * record["reg"]
            assert record["loss"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert test["elbo"] == pytest.approx(test["recon"] - test["kl"], rel=1e-12)


PRIORS = {"sparse": Options("sparse", (("gamma", 0.8), ("spike_scale", 0.05))),
          "normal": Options("normal", (("scale", 1.0),)),
          "anisotropic": Options("anisotropic", (("learn", True), ("scale", 1.0))),
          "student_t": Options("student_t", (("df", 9.0),)),
          "mixture": Options("mixture", (("variance", 0.03),))}


@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("size", [1, 3, 8])
def test_every_member_checkpoint_of_every_prior_equals_the_job_alone(prior, size, tmp_path):
    """What a member's checkpoint holds is its own job, whatever the pack: per-member rows, and whole
    what the prior shares (the mixture's centres), for every prior and pack size."""
    from safetensors.torch import load_file

    from harness.datasets import load_dataset

    data = load_dataset(Options("pinwheel", (("n_test", 40),)), None, "cpu", "float64")
    jobs = tuple(JobSpec(dataset=Options("pinwheel", (("n_test", 40),)), arch="mlp", latent_dim=2,
                         likelihood=Options("normal"), prior=PRIORS[prior], divergence="none", alpha=0.0,
                         beta=1.0 + g / 4, epochs=2, batch_size=100, lr=1e-3, seed=10 + g, dtype="float64")
                 for g in range(size))
    results = train_pack(Pack(jobs), data, "cpu", checkpoint_dir=lambda job_id: tmp_path / "pack" / job_id)
    assert [r.status for r in results] == ["done"] * size, [r.error for r in results]
    for g in sorted({0, size - 1}):
        alone = train_pack(Pack((jobs[g],)), data, "cpu", checkpoint_dir=lambda job_id: tmp_path / "alone" / job_id)
        assert alone[0].status == "done"
        packed = load_file(str(tmp_path / "pack" / jobs[g].job_id / "model.safetensors"))
        single = load_file(str(tmp_path / "alone" / jobs[g].job_id / "model.safetensors"))
        assert packed.keys() == single.keys()
        for key in single:
            assert packed[key].shape == single[key].shape, key
            assert torch.allclose(packed[key], single[key], rtol=1e-6, atol=1e-9), key


def test_a_pack_killed_mid_run_resumes_to_the_same_bits(data, tmp_path):
    """Stopped after epoch 5 (its last saved state: epoch 4), the pack resumes from epoch 4 and ends with
    exactly the numbers of an uninterrupted run; the resume folder is gone afterwards."""
    jobs = tuple(replace(j, epochs=7) for j in JOBS)
    whole = train_pack(Pack(jobs), data, "cpu")

    def stop_at_epoch_5(event):
        if event.kind == "epoch" and event.epoch == 5:
            raise KeyboardInterrupt  # like a kill: not an Exception, so nothing records a failure

    folder = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        train_pack(Pack(jobs), data, "cpu", stop_at_epoch_5, resume_dir=folder, save_every=2)
    assert json.loads((folder / "state.json").read_text())["epoch"] == 4
    resumed_from = []
    again = train_pack(Pack(jobs), data, "cpu",
                       lambda e: resumed_from.append(e.epoch) if e.kind == "epoch" else None,
                       resume_dir=folder, save_every=2)
    assert min(resumed_from) == 5  # epochs 1 to 4 were not trained again
    strip = ("seconds", "samples_per_second")
    for a, b in zip(whole, again, strict=True):
        assert b.status == "done"
        kept_a = [{k: v for k, v in e.items() if k not in strip} for e in a.epochs]
        assert kept_a == [{k: v for k, v in e.items() if k not in strip} for e in b.epochs]
        assert a.metrics == b.metrics and a.dim_stats == b.dim_stats
    assert not folder.exists()
