"""The catalogue builds the published networks: counts against the published figures, forward/backward on all."""

import warnings
from decimal import Decimal

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model, entries
from bigbatch.trainer.models.complexity import count_macs, count_params, measure

PUBLISHED = [e for e in entries() if e.published is not None]


def tolerance(published: float, relative: float) -> float:
    """`relative` of the figure, but never tighter than its printed precision (a published "2.5M" is 2.45-2.55)."""
    half_unit = 0.5 * 10 ** Decimal(str(published)).as_tuple().exponent
    return max(relative * published, float(half_unit))


def test_the_counter_counts_multiply_adds_by_their_definition():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5))
    conv = 16 * 16 * 8 * (3 * 3 * 3)  # output positions x output channels x (kernel x input channels)
    depthwise = 8 * 8 * 8 * (3 * 3 * 1)  # stride 2 -> 8x8 outputs; groups=8 -> one input channel each
    linear = 8 * 5
    assert count_macs(model, 3, 16) == conv + depthwise + linear
    assert count_params(model) == 3 * 8 * 9 + 2 * 8 + (8 * 9 + 8) + (8 * 5 + 5)


def test_exact_counts_of_two_well_known_builds():
    with torch.device("meta"):
        resnet50 = create_model("resnet50", 1000)
        mobilenet_v2 = create_model("mobilenet_v2", 1000)
    assert count_params(resnet50) == 25_557_032 and count_params(mobilenet_v2) == 3_504_872


# Published figures our faithful builds do not reproduce, and why (each checked against the authors' code).
KNOWN_GAPS = {
    ("darts_v2_imagenet", "macs"): "the authors' own model.py gives the same 530M multiply-adds, 7.7% under the "
                                   "paper's 574M (quark0/darts issue 46); parameters match",
    ("condensenet_74_c8_g8", "macs"): "conv/linear only: 261.5M; the authors' counter also counts ReLU, pooling "
                                      "and bias ops (12.7M) -> 274.2M; G=C=4 is within 3% either way",
    ("spos_published", "params"): "3.559M with BatchNorm; the authors' '3.5M' matches the 3.530M of conv and "
                                  "linear weights alone (their README seems to leave BatchNorm out)",
}


def _cases(kind: str) -> list:
    """Entries with a published figure of `kind`; a documented gap is an expected (strict) failure."""
    return [pytest.param(e, id=e.name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[e.name, kind])]
                         if (e.name, kind) in KNOWN_GAPS else [])
            for e in PUBLISHED if kind == "params" or e.published.macs_m is not None]


def _counted(entry) -> tuple[float, float]:
    p = entry.published
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, macs = measure(entry.builder, p.classes, 3, p.resolution)
    return params / 1e6, macs / 1e6


@pytest.mark.parametrize("entry", _cases("params"))
def test_parameters_match_the_published_figures(entry):
    params, _ = _counted(entry)
    assert abs(params - entry.published.params_m) <= tolerance(entry.published.params_m, 0.01), entry.published


@pytest.mark.parametrize("entry", _cases("macs"))
def test_multiply_adds_match_the_published_figures(entry):
    _, macs = _counted(entry)
    assert abs(macs - entry.published.macs_m) <= tolerance(entry.published.macs_m, 0.03), entry.published


SMALL_RESOLUTION = {"inception_v3": 75, "inception_v4": 75, "xception": 71}


@pytest.mark.slow
@pytest.mark.parametrize("entry", entries(), ids=[e.name for e in entries()])
def test_every_entry_trains_a_step_on_a_small_batch(entry):
    size = SMALL_RESOLUTION.get(entry.name, 32 if entry.family in ("resnet", "mlp", "small") else 64)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(entry.name, num_classes=7, in_chans=3, image_size=size)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    nn.functional.cross_entropy(out, torch.tensor([1, 5])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_an_unknown_name_lists_close_matches():
    with pytest.raises(RecipeError, match=r"unknown model 'resnet05'.*close matches: .*resnet50"):
        create_model("resnet05", 10)


@pytest.mark.parametrize("name, imagenet", [("mobilenet_v2_small", "mobilenet_v2"),
                                            ("shufflenet_v2_small", "shufflenet_v2_x1_0")])
def test_small_image_variants_keep_the_blocks_and_end_at_4x4_on_32_px(name, imagenet):
    small, full = create_model(name, 10, 3, 32), create_model(imagenet, 10, 3, 224)
    assert count_params(small) == count_params(full)
    features = {}
    last = [m for m in small.modules() if isinstance(m, nn.Conv2d)][-1]
    last.register_forward_hook(lambda module, args, out: features.update(shape=out.shape))
    small(torch.randn(2, 3, 32, 32))
    assert features["shape"][-2:] == (4, 4)
