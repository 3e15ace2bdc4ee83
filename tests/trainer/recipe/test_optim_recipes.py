"""The optimization toolkit as recipes select it: names, values, schedules, batch growth, trust-ratio metrics."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.plan import make_plan
from bigbatch.trainer.run.build import make_optimizer
from bigbatch.trainer.run.loop import Trainer


def records(run_dir, key="loss"):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if key in r]


@pytest.mark.parametrize("override,needle", [
    ("optim.name=adamw", "optim.name: expected one of 'sgd', 'lars', 'lamb', 'rmsproptf', got 'adamw'"),
    ("optim.schedule=exponential", "optim.schedule: expected one of"),
    ("optim.base_lr=-0.1", "optim.base_lr: expected a value >= 0.0"),
    ("optim.lars.trust_coefficient=0", "optim.lars.trust_coefficient: expected a value >= 1e-12"),
    ("optim.decay_factor=2", "optim.decay_factor: expected a value <= 1.0"),
    ("optim.schedule=multistep", "optim.decay_epochs: the multistep schedule needs a list of epochs"),
    ("optim.schedule=step", "optim.decay_every_epochs: the step schedule needs decay_every_epochs > 0"),
    ("optim.lamb.betas=[0.9]", "optim.lamb.betas: expected two values in [0, 1)"),
    ("train.batch_growth_epochs=[5]", "train.batch_growth_epochs: expected increasing epochs"),
    ("optim.lars.trust_coeficient=0.1", "optim.lars.trust_coeficient: unknown key (did you mean 'trust_coefficient'?)"),
])
def test_bad_optimizer_settings(tiny, override, needle):
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny, [override])
    assert needle in str(err.value)


@pytest.mark.parametrize("name,cls", [("sgd", "SGD"), ("lars", "LARS"), ("lamb", "LAMB")])
def test_recipe_selects_optimizer_with_excluded_group(tiny, name, cls):
    recipe = load_recipe(tiny, [f"optim.name={name}"])
    model = create_model("resnet_small", 10, 1, 8)
    opt = make_optimizer(recipe.optim, model, 0.1)
    assert type(opt).__name__ == cls
    assert [g["lars_adapt"] for g in opt.param_groups] == [True, False]
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_step_schedule_milestones_in_epochs(tiny):
    recipe = load_recipe(tiny, ["optim.schedule=step", "optim.decay_every_epochs=1", "train.epochs=3",
                                "optim.warmup_epochs=0"])
    plan = make_plan(recipe, train_examples=320)  # 10 steps per epoch at batch 32
    assert plan.schedule.milestones == (10, 20)
    assert plan.schedule(9) == pytest.approx(plan.scaled_lr) and plan.schedule(10) == pytest.approx(plan.scaled_lr * 0.1)


def test_batch_growth_plan_and_noise_scale(tiny):
    recipe = load_recipe(tiny, ["train.epochs=4", "train.batch_growth_epochs=[2]", "train.batch_growth_factor=2",
                                "optim.schedule=constant", "optim.warmup_epochs=0"])
    plan = make_plan(recipe, train_examples=640)
    assert plan.epoch_accumulation == (1, 1, 2, 2)
    assert plan.epoch_steps == (20, 20, 10, 10) and plan.schedule_steps == 60
    assert plan.locate(45) == (2, 5) and plan.locate(20) == (1, 0)
    lr, m = plan.scaled_lr, recipe.optim.momentum
    phases = plan.as_dict()["batch_phases"]
    assert [p["global_batch"] for p in phases] == [32, 64]
    assert phases[1]["noise_scale"] == pytest.approx(lr / (1 - m) * (640 / 64 - 1))
    assert plan.noise_scale == pytest.approx(lr / (1 - m) * (640 / 32 - 1))


def run(tiny, run_dir, overrides, resume=None):
    return Trainer(load_recipe(tiny, overrides), run_dir, LocalCollective(), resume=resume).fit()


def test_resume_in_the_middle_of_warmup_gives_the_same_lr_sequence(tiny, tmp_path):
    common = ["optim.warmup_epochs=1", "optim.reference_batch=16", "train.log_every_steps=1", "train.eval_every_epochs=0"]
    run(tiny, tmp_path / "a", [*common, "train.max_steps=30"])
    run(tiny, tmp_path / "b", [*common, "train.max_steps=15"])
    run(tiny, tmp_path / "b", [*common, "train.max_steps=30"], resume="auto")
    lrs = lambda d: [(r["step"], r["lr"]) for r in records(d)]  # noqa: E731
    assert lrs(tmp_path / "a") == lrs(tmp_path / "b")
    warm = [lr for _, lr in lrs(tmp_path / "a")][:44]
    assert warm == sorted(warm) and warm[0] < warm[-1]


def test_batch_growth_run_resumes_exactly_across_the_growth(tiny, tmp_path):
    common = ["model.name=mlp", "model.kwargs={}", "train.epochs=3", "train.batch_growth_epochs=[1]",
              "train.eval_every_epochs=0", "optim.schedule=constant"]
    a = run(tiny, tmp_path / "a", common)
    run(tiny, tmp_path / "b", [*common, "train.max_steps=40"])
    b = run(tiny, tmp_path / "b", common, resume="auto")
    assert a["step"] == b["step"] == 44 + 22 + 22
    assert a["images_per_s"] > 0
    ca = torch.load(tmp_path / "a" / "checkpoints" / "step_00000088.pt", weights_only=True)
    cb = torch.load(tmp_path / "b" / "checkpoints" / "step_00000088.pt", weights_only=True)
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k])
    mid = torch.load(tmp_path / "b" / "checkpoints" / "step_00000044.pt", weights_only=True)
    assert (mid["epoch"], mid["step_in_epoch"]) == (1, 0)
    # records carry the global batch of their own epoch: 32 before the growth at epoch 1, 64 after
    assert a["global_batch"] == ca["global_batch"] == 64
    batches = {r["step"]: r["global_batch"] for r in records(tmp_path / "a")}
    assert batches[44] == 32 and batches[46] == 64 and batches[88] == 64


def test_lars_run_logs_trust_ratio_summary(tiny, tmp_path):
    run(tiny, tmp_path / "l", ["optim.name=lars", "optim.base_lr=2.0", "train.max_steps=6"])
    recs = records(tmp_path / "l")
    assert recs and all(r["trust_ratio_min"] <= r["trust_ratio_median"] <= r["trust_ratio_max"] for r in recs)
    summary = json.loads((tmp_path / "l" / "summary.json").read_text())
    assert summary["step"] == 6


def test_zero_init_residual(tiny):
    model = create_model("resnet_small", 10, 1, 8, zero_init_residual=True)
    blocks = [m for m in model.modules() if hasattr(m, "zero_init_last")]
    assert blocks and all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)
    x = torch.randn(4, 16, 8, 8)
    block = blocks[0].eval()
    assert torch.equal(block(x), torch.relu(block.shortcut(x)))
    tv = create_model("torchvision:resnet18", 10, 3, 32, zero_init_residual=True)
    assert torch.count_nonzero(tv.layer1[0].bn2.weight) == 0
    with pytest.raises(RecipeError, match="model.zero_init_residual"):
        create_model("mlp", 10, 1, 8, zero_init_residual=True)
