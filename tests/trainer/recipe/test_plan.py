"""Derived values: global batch, scaled lr, steps."""

from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.plan import make_plan


def test_plan_from_world_size_and_accumulation(tiny):
    r = load_recipe(tiny, ["train.accumulation_steps=2", "cluster.backend=torch", "cluster.workers=4",
                           "optim.warmup_epochs=1", "train.epochs=3", "train.max_steps=4"])
    plan = make_plan(r, train_examples=1000)
    assert plan.global_batch == 4 * 32 * 2
    assert plan.steps_per_epoch == 1000 // 256
    assert plan.scaled_lr == 0.2 * 256 / 256
    assert plan.warmup_steps == plan.steps_per_epoch
    assert plan.schedule_steps == 3 * plan.steps_per_epoch
    assert plan.total_steps == 4


def test_global_batch_larger_than_data_is_bad_input(tiny):
    import pytest

    from bigbatch.trainer.errors import RecipeError

    with pytest.raises(RecipeError, match="data.batch_size: global batch 64 .* exceeds the 50 training examples"):
        make_plan(load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=2"]), train_examples=50)
