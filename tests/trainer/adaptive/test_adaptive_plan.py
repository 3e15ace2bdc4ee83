"""The plan of a run whose batch changes part-way through epochs (recipe/plan.py adaptive_plan): at the users'
scale (W = 1,024 on an ImageNet-sized index) and through the indexed order that reads it (data/order.py)."""

import torch

from bigbatch.trainer.data.order import TrainOrder, epoch_permutation
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.plan import adaptive_plan, make_plan

IMAGENET = 1_281_167


def imagenet_recipe(tiny, workers: int):
    return load_recipe(tiny, ["cluster.backend=torch", f"cluster.workers={workers}", "data.batch_size=32",
                              "train.epochs=90", "train.batch_policy=adaptive", "optim.warmup_epochs=5"])


def test_at_1024_workers_every_epoch_is_read_in_order_once_across_the_changes(tiny):
    recipe = imagenet_recipe(tiny, 1024)  # G0 = 32,768
    base = make_plan(recipe, IMAGENET)
    changes = [(0, 32_768), (50, 65_536), (61, 131_072), (300, 262_144)]  # 50 and 61 are inside epoch 1
    plan = adaptive_plan(recipe, base, changes, epochs=200)
    for epoch in range(200):
        parts = [s for s in plan.stretches if s.epoch == epoch]
        assert parts[0].offset == 0
        for before, after in zip(parts, parts[1:], strict=False):  # contiguous in the epoch's order, no overlap
            assert after.offset == before.offset + before.steps * before.global_batch
            assert after.first_step == before.end_step
        last = parts[-1]
        assert last.offset + last.steps * last.global_batch <= IMAGENET < last.offset + (last.steps + 1) * last.global_batch
    for step in (0, 38, 39, 49, 50, 60, 61, 62, 299, 300, 301, 900):  # the batch each step takes
        expected = max(b for s, b in changes if s <= step)
        assert plan.stretch_at(step).global_batch == expected
        epoch, offset = plan.position(step)
        assert plan.step_of(epoch, offset) == step  # what a checkpoint keeps maps back to the step
    # 1,024 workers: the per-worker batch grows by micro-steps of at most data.batch_size
    assert [(s.micro_batch, s.accumulation) for s in (plan.stretch_at(0), plan.stretch_at(300))] == [(32, 1), (32, 8)]
    assert plan.schedule_steps == base.schedule_steps == 90 * (IMAGENET // 32_768)


def test_at_1016_workers_the_batches_are_shared_unevenly(tiny):
    recipe = load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=1024", "cluster.min_workers=1016",
                                "data.batch_size=32", "train.epochs=90", "train.batch_policy=adaptive"])
    plan = adaptive_plan(recipe, make_plan(recipe, IMAGENET, 1016), [(0, 32_768), (10, 65_536)], epochs=3)
    early, late = plan.stretch_at(0), plan.stretch_at(10)
    # 32 or 33 a rank: 33 > data.batch_size, so 2 micro-steps of at most 17; then 64 or 65: 3 of at most 22
    assert early.uneven and early.uneven_batch == 32_768 and (early.micro_batch, early.accumulation) == (17, 2)
    assert late.uneven and late.uneven_batch == 65_536 and (late.micro_batch, late.accumulation) == (22, 3)


def test_the_order_continues_after_a_change_each_example_once(tiny):
    """Four ranks read an epoch of 1,000 examples: 7 steps of 40, then 64 a step: together they read the epoch's
    permutation from its start, each example once, up to the last whole step."""
    seed, n, world = 3, 1_000, 4
    first = [TrainOrder(seed, n, batch_size=10, world_size=world, rank=r) for r in range(world)]
    read = [i for r in range(world) for k, i in enumerate(first[r].micro_batches(0)) if k < 7]
    second = [TrainOrder(seed, n, batch_size=16, world_size=world, rank=r, offset=7 * 40) for r in range(world)]
    read += [i for r in range(world) for i in second[r].micro_batches(0)]
    taken = torch.cat(read)
    assert second[0].steps_per_epoch == (n - 280) // 64 == 11
    assert len(taken) == 280 + 11 * 64 and len(set(taken.tolist())) == len(taken)
    assert set(taken.tolist()) == set(epoch_permutation(seed, 0, n)[:280 + 11 * 64].tolist())
