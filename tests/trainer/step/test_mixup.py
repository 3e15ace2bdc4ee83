"""Mixup and CutMix against their definitions (Zhang et al. 2018; Yun et al. 2019), and the same mixed batch at
every world size."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.schema import MixupConfig
from bigbatch.trainer.run.loop import Trainer
from bigbatch.trainer.step.mixup import Mix, draw, mix_batch


def soft(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """Smoothed one-hot: 1 - s + s/K on the label, s/K elsewhere (Szegedy et al. 2016)."""
    out = torch.full((len(labels), classes), smoothing / classes)
    out[torch.arange(len(labels)), labels] += 1 - smoothing
    return out


def test_mixup_mixes_each_example_with_its_neighbour_and_the_targets_alike():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, target = mix_batch(x, y, Mix(0.7), num_classes=5, smoothing=0.1)
    partner = [1, 0, 3, 2, 5, 4]  # pairs (0, 1), (2, 3), (4, 5)
    t = soft(y, 5, 0.1)
    for i, j in enumerate(partner):
        torch.testing.assert_close(mixed[i], 0.7 * x[i] + 0.3 * x[j])
        torch.testing.assert_close(target[i], 0.7 * t[i] + 0.3 * t[j])
    assert torch.allclose(target.sum(1), torch.ones(6))


def test_cutmix_pastes_the_partners_box_and_lambda_is_the_area_kept():
    cfg = MixupConfig(cutmix_alpha=1.0)
    x, y = torch.arange(4 * 1 * 10 * 10, dtype=torch.float32).view(4, 1, 10, 10), torch.tensor([0, 1, 2, 3])
    for step in range(50):
        mix = draw(cfg, seed=3, step=step, height=10, width=10)
        y1, y2, x1, x2 = mix.box
        assert 0 <= y1 <= y2 <= 10 and 0 <= x1 <= x2 <= 10
        assert mix.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 100)
        mixed, target = mix_batch(x, y, mix, num_classes=4, smoothing=0.0)
        inside = torch.zeros(10, 10, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        for i, j in enumerate([1, 0, 3, 2]):
            assert torch.equal(mixed[i, 0][inside], x[j, 0][inside])
            assert torch.equal(mixed[i, 0][~inside], x[i, 0][~inside])
            assert target[i, y[i]] == pytest.approx(mix.lam) and target[i, y[j]] == pytest.approx(1 - mix.lam)


def test_the_draw_is_a_function_of_seed_and_step_and_the_switch_and_prob_hold():
    both = MixupConfig(alpha=0.2, cutmix_alpha=1.0, switch_prob=0.5)
    assert draw(both, 0, 7, 32, 32) == draw(both, 0, 7, 32, 32) != draw(both, 0, 8, 32, 32)
    draws = [draw(both, 0, s, 32, 32) for s in range(2000)]
    cut = sum(d.box is not None for d in draws) / len(draws)
    assert 0.45 < cut < 0.55
    assert draw(MixupConfig(alpha=0.2, prob=0.0), 0, 1, 32, 32) == Mix(1.0)
    lams = [draw(MixupConfig(alpha=1.0), 0, s, 32, 32).lam for s in range(2000)]
    assert abs(sum(lams) / len(lams) - 0.5) < 0.03  # Beta(1, 1): mean 1/2, std of the mean 0.0065


@pytest.mark.parametrize("cfg", [MixupConfig(alpha=0.4), MixupConfig(cutmix_alpha=1.0)])
def test_the_steps_mixed_batch_is_the_same_at_every_world_size(cfg):
    torch.manual_seed(1)
    x, y = torch.randn(16, 2, 8, 8), torch.randint(0, 10, (16,))
    mix = draw(cfg, seed=0, step=5, height=8, width=8)
    whole = [mix_batch(x[i:i + 16], y[i:i + 16], mix, 10, 0.1) for i in range(0, 16, 16)]
    for micro in (8, 4, 2):  # 2, 4, 8 ranks (or micro-steps) share the step's 16 examples
        parts = [mix_batch(x[i:i + micro], y[i:i + micro], mix, 10, 0.1) for i in range(0, 16, micro)]
        for k in (0, 1):
            torch.testing.assert_close(torch.cat([p[k] for p in parts]), whole[0][k])


def test_a_mixed_run_trains_and_stops_mixing_at_the_off_epoch(tiny, tmp_path):
    recipe = load_recipe(tiny, ["train.epochs=2", "train.mixup.alpha=0.2", "train.mixup.cutmix_alpha=1.0",
                                "train.mixup.off_epoch=1", "train.label_smoothing=0.1", "train.log_every_steps=1"])
    summary = Trainer(recipe, tmp_path, LocalCollective()).fit()
    assert summary["top1"] > 0.5
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    # mixed targets keep the loss of the first epoch high; unmixed ones fall fast once mixing stops
    assert min(losses[:len(losses) // 2]) > min(losses[len(losses) // 2:])
