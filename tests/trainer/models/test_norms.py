"""model.norm: Batch Renormalization against Ioffe 2017's Algorithm 1, and the GroupNorm / LayerNorm swaps."""

import json

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.norms import BatchRenorm, renorm_limits, replace_batchnorm
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.recipe.schema import ModelConfig, RenormConfig
from bigbatch.trainer.run.loop import Trainer


def test_batch_renorm_follows_algorithm_1_in_training_and_inference():
    torch.manual_seed(0)
    brn = BatchRenorm(3, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        brn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        brn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        brn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0]))
        brn.running_std.copy_(torch.tensor([2.0, 0.5, 1.0]))
        brn.limits.copy_(torch.tensor([1.5, 0.4]))
    mu, sigma = brn.running_mean.clone(), brn.running_std.clone()
    x = (torch.randn(6, 3, 4, 4) * 3 + 1).requires_grad_()
    y = brn(x)

    # Algorithm 1, per channel c, over the batch and the spatial positions
    xs = x.detach().transpose(0, 1).reshape(3, -1)
    mu_b = xs.mean(1)
    sigma_b = torch.sqrt(((xs - mu_b[:, None]) ** 2).mean(1) + 1e-5)
    r = torch.clamp(sigma_b / sigma, 1 / 1.5, 1.5)
    d = torch.clamp((mu_b - mu) / sigma, -0.4, 0.4)
    assert (r == 1.5).any() or (r == 1 / 1.5).any() or (d.abs() == 0.4).any()  # the clipping is exercised

    def reference(inp: torch.Tensor) -> torch.Tensor:
        c = (1, 3, 1, 1)
        m = inp.mean((0, 2, 3))
        s = torch.sqrt(inp.var((0, 2, 3), unbiased=False) + 1e-5)
        x_hat = (inp - m.view(c)) / s.view(c) * r.view(c) + d.view(c)  # r, d: constants for the gradient
        return brn.weight.detach().view(c) * x_hat + brn.bias.detach().view(c)

    torch.testing.assert_close(y, reference(x.detach()))
    torch.testing.assert_close(brn.running_mean, mu + 0.1 * (mu_b - mu))
    torch.testing.assert_close(brn.running_std, sigma + 0.1 * (sigma_b - sigma))
    grad_out = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, grad_out)
    x_ref = x.detach().clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(reference(x_ref), x_ref, grad_out)
    torch.testing.assert_close(g, g_ref)

    brn.eval()  # inference: the moving statistics alone
    mean, std = brn.running_mean.view(1, 3, 1, 1), brn.running_std.view(1, 3, 1, 1)
    torch.testing.assert_close(brn(x.detach()), brn.weight.detach().view(1, 3, 1, 1) * (x.detach() - mean) / std
                               + brn.bias.detach().view(1, 3, 1, 1))


def test_with_r_max_1_and_d_max_0_batch_renorm_is_batchnorm_in_training():
    torch.manual_seed(1)
    x = torch.randn(8, 4, 5, 5)
    brn, bn = BatchRenorm(4), nn.BatchNorm2d(4)
    torch.testing.assert_close(brn(x), bn(x), rtol=1e-5, atol=1e-5)


def test_the_limits_follow_the_papers_schedule():
    cfg = RenormConfig(r_max=3.0, d_max=5.0, start_step=5000, r_max_step=40000, d_max_step=25000)
    assert renorm_limits(cfg, 0) == renorm_limits(cfg, 5000) == (1.0, 0.0)
    assert renorm_limits(cfg, 15000) == pytest.approx((1 + 2 * 10000 / 35000, 5 * 10000 / 20000))
    assert renorm_limits(cfg, 25000) == pytest.approx((1 + 2 * 20000 / 35000, 5.0))
    assert renorm_limits(cfg, 100000) == (3.0, 5.0)


def test_every_batchnorm_is_replaced_and_keeps_its_affine_parameters():
    model = create_model("resnet_small", 10, 1, 8, zero_init_residual=True)
    gammas = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm, kind in (("group", nn.GroupNorm), ("batch_renorm", BatchRenorm)):
        swapped = replace_batchnorm(create_model("resnet_small", 10, 1, 8, zero_init_residual=True),
                                    ModelConfig(name="resnet_small", norm=norm, norm_groups=32,
                                                renorm=RenormConfig()))
        assert not [m for m in swapped.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        new = [m for m in swapped.modules() if isinstance(m, kind)]
        assert len(new) == len(gammas) and all(torch.equal(m.weight, g) for m, g in zip(new, gammas, strict=True))
        if kind is nn.GroupNorm:  # Wu & He's 32 groups, or all the channels there are fewer than 32
            assert all(m.num_groups == min(32, m.num_channels) for m in new)
    with pytest.raises(RecipeError, match="model.norm: mlp has no BatchNorm"):
        replace_batchnorm(create_model("mlp", 10, 1, 8), ModelConfig(name="mlp", norm="group"))


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_group_and_layer_norm_make_each_output_independent_of_the_rest_of_the_batch(norm):
    torch.manual_seed(2)
    model = replace_batchnorm(create_model("resnet_small", 10, 1, 8), ModelConfig(name="resnet_small", norm=norm))
    model.train()
    x = torch.randn(6, 1, 8, 8)
    alone = model(x[:1])
    together = model(x)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)  # BatchNorm in training would differ


def test_a_batch_renorm_run_trains_and_sync_is_refused(tiny, tmp_path):
    recipe = load_recipe(tiny, ["model.norm=batch_renorm", "model.renorm.momentum=0.1", "model.renorm.start_step=5",
                                "model.renorm.r_max_step=20", "model.renorm.d_max_step=15", "train.max_steps=30"])
    summary = Trainer(recipe, tmp_path, LocalCollective()).fit()
    assert summary["top1"] > 0.5
    saved = torch.load(tmp_path / "checkpoints" / "step_00000030.pt", weights_only=True)["model"]
    limits = [v for k, v in saved.items() if k.endswith("limits")]
    assert limits and all(torch.equal(v, torch.tensor([3.0, 5.0])) for v in limits)  # step 29's: final values
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert all(loss == loss for loss in losses)
    with pytest.raises(RecipeError, match="bn.sync: cross-replica sync is for BatchNorm"):
        load_recipe(tiny, ["model.norm=group", "bn.sync=all"])
