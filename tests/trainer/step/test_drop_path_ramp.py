"""model.drop_path_rate and model.drop_path_ramp: stochastic depth (Huang et al. 2016) as each family defines it."""

import pytest
import torch

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.darts import drop_path
from bigbatch.trainer.step.drop_path_ramp import DropPathRamp


def test_drop_path_zeroes_whole_samples_with_probability_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    p, x = 0.3, torch.ones(20000, 2, 3, 3)
    out = drop_path(x, p)
    dropped = (out.flatten(1) == 0).all(1)
    assert abs(dropped.float().mean().item() - p) < 0.02  # std of the fraction: 0.0032
    assert torch.allclose(out[~dropped], torch.full_like(out[~dropped], 1 / (1 - p)))  # kept: scaled by 1/(1-p)
    assert abs(out.mean().item() - 1.0) < 0.03  # E[drop_path(x)] = x


def test_the_rate_reaches_each_familys_own_setting():
    darts = create_model("darts_v2_cifar", 10, 3, 32, drop_path_rate=0.2)
    assert darts.drop_path_prob == 0.2
    timm_model = create_model("timm:resnet18", 10, 3, 32, drop_path_rate=0.1)
    probs = [m.drop_prob for m in timm_model.modules() if type(m).__name__ == "DropPath"]
    # timm: the rate grows linearly with the block index, reaching drop_path_rate at the last block
    assert probs == sorted(probs) and probs[-1] == pytest.approx(0.1)
    vision = create_model("torchvision:efficientnet_b0", 10, 3, 32, drop_path_rate=0.25)
    depths = [m.p for m in vision.modules() if type(m).__name__ == "StochasticDepth"]
    assert depths and max(depths) < 0.25 and depths == sorted(depths)  # torchvision: p x block / blocks
    with pytest.raises(RecipeError, match=r"model.drop_path_rate: resnet_small has no stochastic depth; models "
                                          r"that do: .*darts_v2_cifar"):
        create_model("resnet_small", 10, 3, 32, drop_path_rate=0.1)
    with pytest.raises(RecipeError, match="set it or model.kwargs.drop_path, not both"):
        create_model("darts_v2_cifar", 10, 3, 32, drop_path_rate=0.1, drop_path=0.1)


def test_shufflenet_v1_and_spos_drop_their_residual_branches_at_rates_growing_with_depth():
    for name, residual in (("shufflenet_v1_g3", "ShuffleUnit"), ("spos_published", "ChoiceBlock")):
        model = create_model(name, 10, 3, 32, drop_path_rate=0.2)
        units = [m for m in model.modules() if type(m).__name__ == residual]
        probs = [u.drop_path.drop_prob for u in units if type(u.drop_path).__name__ == "DropPath"]
        assert probs == sorted(probs) and max(probs) == pytest.approx(0.2), name  # timm's linear rule
        if name == "spos_published":  # a downsampling unit has no identity path: never dropped
            assert all(type(u.drop_path).__name__ == "Identity" for u in units if u.stride == 2)
            assert len(probs) == sum(u.stride == 1 for u in units)


def test_the_ramp_rises_linearly_from_zero_over_the_epochs():
    model = create_model("timm:resnet18", 10, 3, 32, drop_path_rate=0.1)
    ends = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    ramp = DropPathRamp(model)
    for epoch in (0, 3, 9):
        ramp.set_epoch(epoch, 10)
        now = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
        assert now == pytest.approx([end * epoch / 10 for end in ends])
    darts = create_model("darts_v2_cifar", 10, 3, 32, drop_path_rate=0.2)
    DropPathRamp(darts).set_epoch(5, 20)
    assert darts.drop_path_prob == pytest.approx(0.2 * 5 / 20)  # DARTS' train.py: drop_path_prob x epoch / epochs
    with pytest.raises(RecipeError, match="model.drop_path_ramp: the model has no drop-path probability"):
        DropPathRamp(create_model("resnet_small", 10, 3, 32))


def test_a_run_ramps_the_rate_at_each_epoch(tiny, tmp_path):
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    recipe = load_recipe(tiny, ["model.name=timm:resnet18", "model.kwargs={}", "model.drop_path_rate=0.1",
                                "model.drop_path_ramp=true", "data.batch_size=256", "train.epochs=4",
                                "train.max_steps=6", "train.eval_every_epochs=0"])  # 5 steps per epoch
    trainer = Trainer(recipe, tmp_path, LocalCollective())
    ends = [m.drop_prob for m in trainer.model.modules() if type(m).__name__ == "DropPath"]
    trainer.fit()  # stops in epoch 1 of 4
    now = [m.drop_prob for m in trainer.model.modules() if type(m).__name__ == "DropPath"]
    assert now == pytest.approx([end * 1 / 4 for end in ends])
