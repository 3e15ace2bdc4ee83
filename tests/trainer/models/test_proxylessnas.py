"""ProxylessNAS: the searched networks against the authors' published counts, their structure, a training step."""

from decimal import Decimal

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.complexity import count_macs, count_params
from bigbatch.trainer.models.proxylessnas import build_proxylessnas, proxylessnas_gpu, proxylessnas_mobile
from bigbatch.trainer.models.registry import create_model, get_entry

# mit-han-lab/proxylessnas logs/imagenet_mobile_log.txt and logs/imagenet_gpu_log.txt (the authors' release):
# "Total training params" and "Total FLOPs" (conv and linear multiply-adds), 224 px, 1000 classes.
PUBLISHED = {"proxylessnas_mobile": (4.08, 320.4), "proxylessnas_gpu": (7.12, 465.3)}
# The same networks in osmr/imgclsmob's transcription of the authors' configs (pytorchcv proxylessnas.py).
EXACT_PARAMS = {"proxylessnas_mobile": 4_080_512, "proxylessnas_gpu": 7_119_848}
BUILDERS = {"proxylessnas_mobile": proxylessnas_mobile, "proxylessnas_gpu": proxylessnas_gpu}


def tolerance(published: float, relative: float) -> float:
    """`relative` of the figure, but never tighter than its printed precision ("4.08M" is 4.075-4.085)."""
    return max(relative * published, 0.5 * 10 ** Decimal(str(published)).as_tuple().exponent)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counts_match_the_authors_published_figures(name):
    params_m, macs_m = PUBLISHED[name]
    with torch.device("meta"):
        model = BUILDERS[name]()
    params, macs = count_params(model), count_macs(model, 3, 224)
    assert abs(params / 1e6 - params_m) <= tolerance(params_m, 0.01)
    assert abs(macs / 1e6 - macs_m) <= tolerance(macs_m, 0.03)
    assert params == EXACT_PARAMS[name]
    published = get_entry(name).published
    assert (published.params_m, published.macs_m, published.resolution) == (params_m, macs_m, 224)
    assert get_entry(name).family == "nas"


@pytest.mark.parametrize("name, stem, head, blocks, first", [
    ("proxylessnas_mobile", 32, 1280, 20, 16), ("proxylessnas_gpu", 40, 1728, 14, 24)])
def test_structure_follows_the_configs(name, stem, head, blocks, first):
    with torch.device("meta"):
        model = BUILDERS[name]()
    assert model.conv_stem.out_channels == stem and model.conv_stem.stride == (2, 2)
    assert model.conv_head.out_channels == head and model.classifier.in_features == head
    assert sum(len(stage) for stage in model.blocks) == blocks  # zero blocks left out
    first_block = model.blocks[0][0]
    assert type(first_block).__name__ == "DepthwiseSeparableConv" and first_block.conv_pw.out_channels == first
    acts = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))}
    assert acts == {"ReLU6"}
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert strides.count(2) == 4  # with the stem's, 32x down: 224 px ends at 7x7


def test_dropout_defaults_to_the_authors_and_kwargs_pass_through():
    with torch.device("meta"):
        assert proxylessnas_mobile().drop_rate == 0.1 and proxylessnas_gpu().drop_rate == 0.3
        model = create_model("proxylessnas_gpu", 10, drop_rate=0.2, drop_path_rate=0.1)
    assert model.drop_rate == 0.2 and model.classifier.out_features == 10
    assert max(b.drop_path.drop_prob for stage in model.blocks for b in stage
               if hasattr(b.drop_path, "drop_prob")) > 0
    with pytest.raises(RecipeError, match="drop_rate"):
        proxylessnas_mobile(drop_rate=1.5)
    with pytest.raises(RecipeError, match="variant"):
        build_proxylessnas("cpu")


def test_small_images_use_the_stride_1_stem():
    with torch.device("meta"):
        assert proxylessnas_mobile(image_size=64).conv_stem.stride == (1, 1)
        assert proxylessnas_mobile(image_size=64, small_input=False).conv_stem.stride == (2, 2)
        assert proxylessnas_mobile(image_size=96).conv_stem.stride == (2, 2)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_a_training_step_on_a_small_batch(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=3, image_size=64)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    nn.functional.cross_entropy(out, torch.tensor([1, 3])).backward()
    grads = [p.grad for p in model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
