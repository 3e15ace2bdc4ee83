"""model.head: bilinear - bilinear pooling (Lin et al. 2015) and iSQRT-COV (Li et al. 2018) on any backbone."""

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.bilinear import bilinear_pool, isqrt_cov, with_bilinear_head


def test_isqrt_cov_converges_to_the_square_root_of_the_covariance():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 80, dtype=torch.float64)
    centred = x - x.mean(-1, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / 80  # S = X (I - 11^T/M) X^T / M
    values, vectors = torch.linalg.eigh(cov)
    root = vectors @ torch.diag_embed(values.sqrt()) @ vectors.transpose(1, 2)  # the matrix square root
    approx = isqrt_cov(x, 30)
    torch.testing.assert_close(approx @ approx, cov, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(approx, root, rtol=1e-6, atol=1e-9)
    five = isqrt_cov(x, 5)  # the paper's 5 iterations: an approximation, closer with each one
    assert (isqrt_cov(x, 3) - root).norm() > (five - root).norm() > (approx - root).norm()


def test_bilinear_pooling_is_the_mean_outer_product_of_the_positions_features():
    x = torch.randn(3, 4, 10)
    expected = torch.stack([sum(torch.outer(x[b, :, m], x[b, :, m]) for m in range(10)) / 10 for b in range(3)])
    torch.testing.assert_close(bilinear_pool(x), expected)


@pytest.mark.parametrize("iters", [0, 5])
def test_any_backbone_gets_the_head_on_its_last_feature_map_and_every_parameter_learns(iters):
    torch.manual_seed(0)
    for name, size in (("resnet_small", 32), ("timm:resnet18", 64)):
        model = with_bilinear_head(create_model(name, 10, 3, size), name, 10, 3, size, channels=8, isqrt_iters=iters)
        assert model.head.fc.in_features == 8 * 9 // 2 and model.head.fc.out_features == 10
        width = model.head.reduce[0].in_channels
        assert width == (16 * 4 if name == "resnet_small" else 512) or width > 8
        out = model(torch.randn(4, 3, size, size))
        assert out.shape == (4, 10)
        out.square().sum().backward()
        assert all(p.grad is not None for p in model.parameters()), name  # none unused (DDP needs that)
    with pytest.raises(RecipeError, match=r"model.head: timm:resnet18 at 32 px has no feature map of 512 channels "
                                          r"larger than 1x1"):
        with_bilinear_head(create_model("timm:resnet18", 10, 3, 32), "timm:resnet18", 10, 3, 32, 8, 0)
    with pytest.raises(RecipeError, match="model.head: mlp has no final nn.Linear classifier|has no feature map"):
        with_bilinear_head(create_model("mlp", 10, 3, 32), "mlp", 10, 3, 32, 8, 0)


def test_a_run_with_a_bilinear_head_trains(tiny, tmp_path):
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    recipe = load_recipe(tiny, ["model.head=bilinear", "model.head_channels=8", "model.head_isqrt_iters=5",
                                "data.image_size=16", "train.max_steps=40", "optim.warmup_epochs=0"])
    summary = Trainer(recipe, tmp_path, LocalCollective()).fit()
    assert summary["top1"] > 0.3
    saved = torch.load(tmp_path / "checkpoints" / "step_00000040.pt", weights_only=True)["model"]
    assert "head.fc.weight" in saved and not any(isinstance(v, nn.Module) for v in saved.values())
