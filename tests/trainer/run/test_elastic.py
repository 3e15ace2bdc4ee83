"""Elastic runs hold the global batch: the plan on every world size, and the same training on real processes
when the world shrinks mid-run."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.plan import elastic_sizes, elastic_table, make_plan
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo

ELASTIC = """
seed: 0
model: {name: mlp}
data: {name: digits, batch_size: 16}
train: {epochs: 1, log_every_steps: 1, eval_every_epochs: 0, progress_bar: false}
optim: {name: sgd, base_lr: 0.4, warmup_epochs: 0, schedule: cosine}
cluster: {workers: 2, min_workers: 1, backend: torch}
"""


def test_every_world_size_keeps_the_global_batch_and_the_schedule(write):
    recipe = load_recipe(write("e.yaml", ELASTIC), ["cluster.workers=4", "cluster.min_workers=1",
                                                     "data.batch_size=12", "train.accumulation_steps=2"])
    full = make_plan(recipe, 2000)
    assert full.global_batch == 4 * 12 * 2 and (full.per_worker_batch, full.accumulation_steps) == (12, 2)
    assert elastic_sizes(recipe) == [1, 2, 3, 4]
    for world in elastic_sizes(recipe):
        plan = make_plan(recipe, 2000, world)
        # W x b x k = G, the micro-batch never above the recipe's, in the fewest micro-steps that allow it
        assert plan.world_size * plan.per_worker_batch * plan.accumulation_steps == full.global_batch
        assert plan.per_worker_batch <= 12
        share = full.global_batch // world
        assert plan.accumulation_steps == min(k for k in range(1, share + 1) if share % k == 0 and share // k <= 12)
        assert (plan.steps_per_epoch, plan.scaled_lr, plan.warmup_steps, plan.schedule_steps) == \
            (full.steps_per_epoch, full.scaled_lr, full.warmup_steps, full.schedule_steps)
        assert [plan.schedule(s) for s in range(0, 10)] == [full.schedule(s) for s in range(0, 10)]


def test_every_elastic_size_is_admissible_for_packed_shards_too_and_horovod_stays_fixed(write):
    for data in ([], ["data.name=shards", "data.root=x"]):  # 3 workers take 22, 21, 21 of 64
        load_recipe(write("e.yaml", ELASTIC), ["cluster.workers=4", "cluster.min_workers=2", *data])
    with pytest.raises(RecipeError, match="data.batch_size: 1 leaves a rank an empty micro-batch when 3 workers "
                                          "share the global batch 4 unevenly; use 2 or more"):
        load_recipe(write("e.yaml", ELASTIC), ["cluster.workers=4", "cluster.min_workers=2", "data.batch_size=1"])
    with pytest.raises(RecipeError, match="cluster.min_workers: an elastic group needs cluster.backend: torch"):
        load_recipe(write("e.yaml", ELASTIC), ["cluster.backend=horovod"])


def _two_workers(rank: int, world: int, recipe_path: str, run_dir: str, steps: int) -> None:
    recipe = load_recipe(recipe_path, [f"train.max_steps={steps}"])
    Trainer(recipe, run_dir, TorchDistributedCollective("cpu")).fit()


def final_weights(run_dir, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_steps_on_two_workers_then_three_on_one_equal_six_on_two_and_one_process_with_the_batch(
        write, tmp_path):
    path = write("e.yaml", ELASTIC)  # mlp: no BatchNorm, so the split of a step cannot change its gradient
    spawn_gloo(_two_workers, 2, str(path), str(tmp_path / "two"), 6)
    spawn_gloo(_two_workers, 2, str(path), str(tmp_path / "shrunk"), 3)
    shrunk = Trainer(load_recipe(path, ["train.max_steps=6"]), tmp_path / "shrunk", LocalCollective(),
                     resume="auto")
    assert (shrunk.plan.world_size, shrunk.plan.per_worker_batch, shrunk.plan.accumulation_steps) == (1, 16, 2)
    shrunk.fit()
    single = load_recipe(path, ["train.max_steps=6", "cluster.workers=1", "cluster.min_workers=0",
                                "data.batch_size=32"])
    Trainer(single, tmp_path / "one", LocalCollective()).fit()
    reference = final_weights(tmp_path / "two", 6)
    for other in (final_weights(tmp_path / "shrunk", 6), final_weights(tmp_path / "one", 6)):
        for name, tensor in reference.items():
            torch.testing.assert_close(other[name], tensor, rtol=0, atol=1e-5)
    records = [json.loads(line) for line in (tmp_path / "shrunk" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [(r["step"], r["world_size"], r["accumulation_steps"], r["global_batch"]) for r in steps] == \
        [(1, 2, 1, 32), (2, 2, 1, 32), (3, 2, 1, 32), (4, 1, 2, 32), (5, 1, 2, 32), (6, 1, 2, 32)]
    [resize] = json.loads((tmp_path / "shrunk" / "summary.json").read_text())["resizes"]
    assert (resize["step"], resize["from"], resize["to"]) == (3, 2, 1) and "step_00000003.pt" in resize["why"]
    events = EventAccumulator(str(tmp_path / "shrunk" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()  # the dashboard shows the resize as an event at its step, with its cause
    [(step, text)] = [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors("events/resize/text_summary")]
    assert step == 3 and text.startswith("2 -> 1 workers") and "step_00000003.pt" in text
    assert [(e.step, e.value) for e in events.Scalars("events/resize")] == [(3, 1.0)]


def test_at_1024_workers_on_imagenet_any_elastic_size_keeps_the_global_batch(write):
    # ImageNet-1k's 1,281,167 training images, 1,024 workers x 32: G = 32,768 = 2^15; losing one 8-GPU node
    # leaves 1,016 workers, which do not divide it: 256 of them take 33 examples, 760 take 32
    imagenet = 1_281_167
    elastic = load_recipe(write("e.yaml", ELASTIC), ["cluster.workers=1024", "cluster.min_workers=1016",
                                                      "data.batch_size=32"])
    full, shrunk = make_plan(elastic, imagenet, 1024), make_plan(elastic, imagenet, 1016)
    assert (full.global_batch, full.steps_per_epoch, full.uneven) == (32_768, imagenet // 32_768, False)
    assert (shrunk.global_batch, shrunk.steps_per_epoch, shrunk.uneven) == (32_768, imagenet // 32_768, True)
    assert (shrunk.per_worker_batch, shrunk.accumulation_steps) == (17, 2)  # 33 = 17 + 16, within 32
    assert [shrunk.schedule(s) for s in range(0, 50, 7)] == [full.schedule(s) for s in range(0, 50, 7)]
    halved = make_plan(elastic, imagenet, 512)  # a resume on half the workers: same G, twice the micro-steps
    assert (halved.global_batch, halved.per_worker_batch, halved.accumulation_steps) == (32_768, 32, 2)
    assert elastic_table(elastic, imagenet) == [  # the ends of the range, not 9 rows
        {"world_size": 1016, "per_worker_batch": 17, "accumulation_steps": 2, "examples_per_worker": "32-33",
         "global_batch": 32_768},
        {"world_size": 1024, "per_worker_batch": 32, "accumulation_steps": 1, "examples_per_worker": 32,
         "global_batch": 32_768}]
