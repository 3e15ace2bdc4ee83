"""Training procedures of timm / torchvision recipes, each against its definition: EMA of the weights, gradient
clipping by global norm and AGC."""

import json

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from bigbatch.trainer.step.clipping import clip_gradients, clipped_parameters

NO_BN = ["model.name=mlp", "model.kwargs={}", "train.eval_every_epochs=0"]


def checkpoint(run_dir, step) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)


@pytest.mark.parametrize("warmup", [False, True])
def test_the_weight_average_follows_its_definition_step_by_step(tiny, tmp_path, warmup):
    decay, every, steps = 0.6, 2, 8
    recipe = load_recipe(tiny, [*NO_BN, f"train.max_steps={steps}", "train.checkpoint_every_steps=1",
                                f"train.keep_checkpoints={steps}", f"train.ema.decay={decay}",
                                f"train.ema.warmup={str(warmup).lower()}", f"train.ema.every_steps={every}"])
    Trainer(recipe, tmp_path, LocalCollective()).fit()
    # e <- d_n e + (1 - d_n) w after every `every` steps, n = 1, 2, ...: d_1 = 0 (a copy of the weights), then
    # d_n = decay, or with warmup min(decay, 1 - n^(-2/3))
    average = None
    for step in range(1, steps + 1):
        weights = checkpoint(tmp_path, step)["model"]
        if step % every == 0:
            n = step // every
            d = 0.0 if n == 1 else min(decay, 1 - n ** (-2 / 3)) if warmup else decay
            average = {k: d * average[k] + (1 - d) * w if average else w.clone() for k, w in weights.items()}
        saved = checkpoint(tmp_path, step)["ema"]
        if average is None:  # before the first update: the initial weights
            continue
        for key, value in average.items():
            torch.testing.assert_close(saved[key], value, rtol=1e-6, atol=1e-7, msg=f"step {step} {key}")


def test_evaluations_score_the_average_beside_the_weights_and_best_pt_follows_the_choice(tiny, tmp_path):
    recipe = load_recipe(tiny, ["train.max_steps=0", "train.epochs=2", "train.ema.decay=0.9",
                                "train.ema.best=ema"])
    summary = Trainer(recipe, tmp_path, LocalCollective()).fit()
    evals = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "top1" in r
             and "event" not in r]
    assert len(evals) == 2 and all({"top1_ema", "top5_ema", "val_loss_ema"} <= set(r) for r in evals)
    assert summary["best_top1"] == max(r["top1_ema"] for r in evals) and summary["top1_ema"] == evals[-1]["top1_ema"]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] == max(evals, key=lambda r: r["top1_ema"])["step"] and "ema" in best


def test_choosing_best_by_an_average_that_is_off_is_a_recipe_error(tiny):
    with pytest.raises(RecipeError, match=r"train.ema.best: 'ema' needs an average"):
        load_recipe(tiny, ["train.ema.best=ema"])


def test_a_clipped_step_of_plain_sgd_moves_the_weights_by_lr_times_the_bound(tiny, tmp_path):
    bound = 1e-3
    recipe = load_recipe(tiny, [*NO_BN, "train.max_steps=1", "train.checkpoint_every_steps=1",
                                "optim.momentum=0", "optim.weight_decay=0", f"train.clip_grad={bound}",
                                "train.log_every_steps=1"])
    trainer = Trainer(recipe, tmp_path, LocalCollective())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = checkpoint(tmp_path, 1)["model"]
    record = next(r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r)
    moved = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert record["grad_norm"] > bound  # the logged norm is the one before clipping
    torch.testing.assert_close(moved.item(), record["lr"] * bound, rtol=1e-4, atol=0)


def test_clipping_by_global_norm_and_agc_follow_their_definitions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 10
    grads = [p.grad.clone() for p in model.parameters()]

    clip_gradients(clipped_parameters(model, "norm"), 2.0, "norm")
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g * 2.0 / total)

    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    factor, eps = 0.01, 1e-3
    clip_gradients(clipped_parameters(model, "agc"), factor, "agc")
    conv = model[0]
    # AGC, Brock et al. 2021 eq. 3, unit-wise: each output unit's gradient norm is capped at factor x max(|w|, eps);
    # a unit is an output row of a weight, and a whole vector for a bias (the NFNets reference's unitwise_norm)
    for p, g in ((conv.weight, grads[0]), (conv.bias, grads[1])):
        dims = tuple(range(1, g.dim())) or None
        g_norm = torch.linalg.vector_norm(g, dim=dims, keepdim=True)
        w_norm = torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=True).clamp(min=eps)
        limit = factor * w_norm
        expected = torch.where(g_norm > limit, g * limit / g_norm, g)
        torch.testing.assert_close(p.grad, expected)
    assert torch.equal(model[2].weight.grad, grads[2]) and torch.equal(model[2].bias.grad, grads[3])  # the head


def test_flip_test_time_augmentation_scores_the_mean_probability_of_an_image_and_its_mirror():
    from bigbatch.trainer.data.base import InMemoryDataset
    from bigbatch.trainer.run.evaluate import evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 7))
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 7, (40,))
    result = evaluate(model, InMemoryDataset(x, y), LocalCollective(), batch_size=16, flip=True)
    with torch.no_grad():
        p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    assert result["top1"] == pytest.approx((p.argmax(1) == y).float().mean().item())
    assert result["val_loss"] == pytest.approx(-p[torch.arange(40), y].log().mean().item(), rel=1e-5)
    plain = evaluate(model, InMemoryDataset(x, y), LocalCollective(), batch_size=16)
    with torch.no_grad():
        assert plain["val_loss"] == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-5)


def test_evaluation_has_its_own_size_and_crop(tiny, tmp_path):
    from tests.images import write_jpeg_folder

    root = write_jpeg_folder(tmp_path / "data")
    recipe = load_recipe(tiny, ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                                "model.name=resnet_small", "train.epochs=1", "data.eval_image_size=48",
                                "data.eval_crop_pct=1.0", "train.eval_flip=true"])
    trainer = Trainer(recipe, tmp_path / "run", LocalCollective())
    assert trainer.parts.data.train[(0, 0)][0].shape[-2:] == (32, 32)
    assert trainer.parts.data.val[0][0].shape[-2:] == (48, 48) and trainer.parts.data.val.crop_pct == 1.0
    assert trainer.fit()["top1"] is not None  # a global-pool CNN scores the larger crops
    with pytest.raises(RecipeError, match="data.eval_image_size: works on decoded images"):
        load_recipe(tiny, ["data.eval_image_size=48"])


def test_progressive_resizing_follows_ffcvs_ramp_and_a_run_trains_through_it(tiny, tmp_path):
    from bigbatch.trainer.data.sizes import SizeSchedule
    from tests.images import write_jpeg_folder

    ramp = SizeSchedule(start=160, end=192, start_epoch=10, end_epoch=20)
    # FFCV's get_resolution: start up to start_epoch, linear, rounded to a multiple of 32, end from end_epoch
    expected = {e: 160 if e <= 10 else 192 if e >= 20 else int(round((160 + 32 * (e - 10) / 10) / 32)) * 32
                for e in range(25)}
    assert {e: ramp.at(e) for e in range(25)} == expected
    assert ramp.at(14) == 160 and ramp.at(16) == 192  # 172.8 -> 160, 179.2 -> 192

    root = write_jpeg_folder(tmp_path / "data")
    recipe = load_recipe(tiny, ["data.name=folder", f"data.root={root}", "data.image_size=64", "data.batch_size=4",
                                "model.name=resnet_small", "train.epochs=3", "train.eval_every_epochs=0",
                                "data.image_size_schedule={start: 32, end: 64, start_epoch: 0, end_epoch: 2, "
                                "multiple: 16}"])
    trainer = Trainer(recipe, tmp_path / "run", LocalCollective())
    train = trainer.parts.data.train
    assert [train[(e, 0)][0].shape[-1] for e in range(3)] == [32, 48, 64]
    assert trainer.parts.data.val[0][0].shape[-1] == 64  # evaluation: data.image_size
    assert trainer.fit()["step"] == 9
    from bigbatch.trainer.data.shards import load_shard_splits, pack_folder
    from bigbatch.trainer.data.sizes import size_schedule

    pack_folder(root, tmp_path / "packed", shard_size_bytes=40_000)
    shards = load_shard_splits(str(tmp_path / "packed"), 0, 64, 4, 10, 1, 0,
                               sizes=size_schedule(recipe.data.image_size_schedule, 64))
    for epoch, size in ((0, 32), (1, 48), (2, 64)):
        shards.train.set_epoch(epoch)
        image, _ = next(iter(shards.train))[0]  # a training stream yields whole micro-batches
        assert image.shape[-1] == size
    with pytest.raises(RecipeError, match="data.image_size_schedule: expected start and end sizes"):
        load_recipe(tiny, ["data.name=folder", "data.root=x", "data.image_size_schedule={start: 32, end: 64, "
                           "start_epoch: 2, end_epoch: 1}"])


def test_with_every_procedure_on_a_resumed_run_is_bitwise_the_uninterrupted_one(tiny, tmp_path):
    """Issue 19's exactness rule: every random choice (augmentation ops and repeats, erasing boxes, mixup lambda and
    boxes, drop-path masks) is drawn from (seed, epoch, example or step, rank), so N straight = N/2 + resume + N/2."""
    from tests.images import write_jpeg_folder

    root = write_jpeg_folder(tmp_path / "data")  # 13 training images: 3 steps of 4 per epoch
    everything = ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                  "model.name=shufflenet_v1_g3", "model.kwargs={}", "model.drop_path_rate=0.2",
                  "model.drop_path_ramp=true", "train.epochs=3", "train.eval_every_epochs=0",
                  "data.augment=trivialaugment", "data.random_erasing=0.5", "data.aug_repeats=2", "train.mixup.alpha=0.2",
                  "train.mixup.cutmix_alpha=1.0", "train.label_smoothing=0.1", "train.ema.decay=0.9",
                  "train.clip_grad=0.05", "train.clip_mode=agc", "optim.name=rmsproptf", "optim.base_lr=0.016",
                  "data.image_size_schedule={start: 24, end: 32, start_epoch: 0, end_epoch: 2, multiple: 8}"]
    Trainer(load_recipe(tiny, [*everything, "train.max_steps=8"]), tmp_path / "a", LocalCollective()).fit()
    Trainer(load_recipe(tiny, [*everything, "train.max_steps=4"]), tmp_path / "b", LocalCollective()).fit()
    Trainer(load_recipe(tiny, [*everything, "train.max_steps=8"]), tmp_path / "b", LocalCollective(),
            resume="auto").fit()
    a, b = checkpoint(tmp_path / "a", 8), checkpoint(tmp_path / "b", 8)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
