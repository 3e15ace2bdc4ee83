"""The noise scale on the first step of a grown batch takes that step's batch (train.batch_growth_epochs): the
hook once asked the plan for the batch of the step before, and a run that grew from one micro-step (nothing to
measure) into two crashed there with "needs 0 < small batch < big batch, got 16 and 16"."""

import json

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


def test_the_first_step_of_a_grown_batch_measures_against_the_grown_batch(tiny, tmp_path):
    # 16 examples a step in epoch 0 (one micro-step, one worker: no small batch), 32 in 2 micro-steps in epoch 1;
    # 89 steps in epoch 0, so with a log every step the first step of epoch 1 is measured
    recipe = load_recipe(tiny, ["data.batch_size=16", "train.batch_growth_epochs=[1]", "train.log_every_steps=1",
                                "track.noise_scale=true", "train.eval_every_epochs=0", "train.max_steps=92"])
    summary = Trainer(recipe, tmp_path, LocalCollective("cpu")).fit()
    assert summary["step"] == 92
    steps = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    grown = [r for r in steps if r["global_batch"] == 32]
    assert [r["step"] for r in grown] == [90, 91, 92]  # step 90 (1-based) is the first of epoch 1
    assert all("grad_var_est" in r for r in grown) and not any("grad_var_est" in r for r in steps[:89])
