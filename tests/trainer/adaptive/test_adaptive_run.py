"""The adaptive batch in a real run (one process, digits): it grows its batch under a step-time model whose fixed
part dominates, records why with the predicted goodputs, continues the epoch's order where it stood, and a
resume from a checkpoint between its changes is bitwise exact."""

import json
import math
import shutil

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer

# 16 x 2 micro-steps = G0 32: the micro-batch against the global batch gives the noise scale on one process.
# A step costs 0.1 s plus 0.6 ms per example (assumed): at the recipe's batch the fixed part dominates, as the
# all-reduce and launch overheads do on GPUs at small per-GPU batches; at 256 the examples do.
ADAPTIVE = ["data.batch_size=16", "train.accumulation_steps=2", "train.batch_policy=adaptive",
            "train.adaptive.max_batch=256", "train.adaptive.every_steps=4", "train.adaptive.min_readings=3",
            "train.adaptive.assume_step_s=0.1", "train.adaptive.assume_example_s=0.0006",
            "train.log_every_steps=2", "train.epochs=3", "train.eval_every_epochs=0",
            "optim.base_lr=0.1", "optim.reference_batch=32", "optim.warmup_epochs=0.5"]


def run(recipe_path, run_dir, overrides=(), resume=None) -> dict:
    recipe = load_recipe(recipe_path, list(overrides))
    return Trainer(recipe, run_dir, LocalCollective("cpu"), resume=resume).fit()


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def gain(noise_scale: float, batch: int, reference: int) -> float:
    """AdaScale's gain written from Johnson et al.: (sigma^2 + mu^2) / (sigma^2 / S + mu^2), sigma^2 = tr / G0."""
    trace, mu2 = noise_scale, 1.0  # B = tr(Sigma) / |G|^2: only the ratio matters
    sigma2 = trace / reference
    return (sigma2 + mu2) / (sigma2 / (batch / reference) + mu2)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """One adaptive run shared by the tests below (and the directory to resume from)."""
    from tests.conftest import TINY

    recipe = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    recipe.write_text(TINY)
    run_dir = tmp_path_factory.mktemp("runs") / "adaptive"
    summary = run(recipe, run_dir, [*ADAPTIVE, "train.checkpoint_every_steps=6", "train.keep_checkpoints=20"])
    return recipe, run_dir, summary


def test_the_batch_grows_for_the_goodput_the_records_show(grown):
    _, run_dir, summary = grown
    history = records(run_dir)
    changes = [r for r in history if r.get("event") == "batch_change"]
    assert changes and changes[0]["from"] == 32 and changes[0]["to"] > 32
    for change in changes:
        predicted = {int(b): v for b, v in change["predicted_goodput"].items()}
        model = change["step_time_model"]
        assert model["source"] == "assumed" and (model["fixed_s"], model["per_example_s"]) == (0.1, 0.0006)
        for batch, value in predicted.items():  # goodput = G0 x gain / step time, from the definitions
            step_s = 0.1 + 0.0006 * batch / 1
            assert value == pytest.approx(32 * gain(change["noise_scale_lower"], batch, 32) / step_s, rel=1e-9)
        assert predicted[change["to"]] == max(predicted.values())
        assert predicted[change["to"]] >= 1.05 * predicted[change["from"]]
        assert change["why"].startswith("goodput")
    steps = [r for r in history if "loss" in r]
    for record in steps:  # each step record says the batch it took, and the batch follows the changes
        before = [c["to"] for c in changes if c["step"] < record["step"]]
        assert record["global_batch"] == (before[-1] if before else 32)
    assert {"adascale_gain", "progress"} <= set(steps[-1])
    assert summary["step"] < 3 * (1437 // 32), "a larger batch worth more than one step of G0 ends sooner"


def test_progress_sums_the_gains_sets_the_lr_and_ends_at_the_budget(grown):
    _, run_dir, summary = grown
    history = records(run_dir)
    start = history[0]
    budget = 3 * (start["train_examples"] // 32)  # the recipe's steps at G0
    warmup = round(0.5 * (start["train_examples"] // 32))
    logged = [r for r in history if "adascale_gain" in r]
    for before, after in zip(logged, logged[1:], strict=False):  # the gain changes only at log steps: the steps
        steps = after["step"] - before["step"]                      # between two took the later one's
        assert after["progress"] - before["progress"] == pytest.approx(steps * after["adascale_gain"], rel=1e-12)
    for record in logged:  # lr = gain x the recipe's cosine schedule at the progress before the step
        tau = record["progress"] - record["adascale_gain"]
        lr_ref = 0.1 if tau < warmup else 0.1 * (1 + math.cos(math.pi * (tau - warmup) / (budget - warmup))) / 2
        assert record["lr"] == pytest.approx(record["adascale_gain"] * lr_ref, rel=1e-9)
    assert any(r["adascale_gain"] > 1.0 for r in logged)
    assert logged[-1]["step"] == summary["step"]
    assert logged[-1]["progress"] >= budget > logged[-1]["progress"] - logged[-1]["adascale_gain"]


def test_a_resume_between_two_changes_of_batch_is_bitwise_exact(grown, tmp_path):
    recipe, run_dir, summary = grown
    changes = [r["step"] for r in records(run_dir) if r.get("event") == "batch_change"]
    assert len(changes) >= 2, "the policy must change the batch before and after the resume"
    between = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")]
    resume_at = min(s for s in between if changes[0] < s < changes[-1])
    checkpoint = run_dir / "checkpoints" / f"step_{resume_at:08d}.pt"
    shutil.copytree(run_dir / "checkpoints", tmp_path / "again" / "checkpoints",
                    ignore=lambda _, names: [n for n in names if not n.startswith(checkpoint.name)])
    resumed = run(recipe, tmp_path / "again", [*ADAPTIVE, "train.checkpoint_every_steps=6"],
                  resume=str(tmp_path / "again" / "checkpoints" / checkpoint.name))
    assert resumed["step"] == summary["step"]
    later = [r for r in records(tmp_path / "again") if r.get("event") == "batch_change"]
    assert [c["step"] for c in later] == [s for s in changes if s > resume_at]
    a, b = (torch.load(d / "checkpoints" / f"step_{summary['step']:08d}.pt", weights_only=True)
            for d in (run_dir, tmp_path / "again"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["adaptive_batch"]["progress"] == b["adaptive_batch"]["progress"]


@pytest.mark.parametrize("optimizer", [
    ["optim.name=lars", "optim.base_lr=2.0", "optim.lars.trust_coefficient=0.02"],
    ["optim.name=sgd", "optim.momentum_correction=false"],
])
def test_lars_and_sgd_without_momentum_correction_take_the_gained_lr(tiny, tmp_path, optimizer):
    summary = run(tiny, tmp_path, [*ADAPTIVE, *optimizer, "train.epochs=2"])
    history = records(tmp_path)
    assert [r for r in history if r.get("event") == "batch_change"], "the batch grows with these optimizers too"
    logged = [r for r in history if "adascale_gain" in r]
    assert max(r["adascale_gain"] for r in logged) > 1.0 and all(math.isfinite(r["loss"]) for r in logged)
    assert summary["top1"] > 0.9
