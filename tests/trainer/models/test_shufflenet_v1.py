"""ShuffleNet v1: complexity against the published figures, channel shuffle, forward/backward, bad options."""

import pytest
import torch
import torch.nn as nn

import bigbatch.trainer.models.shufflenet_v1 as sn
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.complexity import count_macs, count_params
from bigbatch.trainer.models.registry import create_model, get_entry
from tests.model_checks import assert_trains

# Multiply-adds at 224 px, 1x, from the paper's Table 2 (Zhang et al. 2017; its "MFLOPs" are multiply-adds).
PAPER_MACS_M = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}
# Parameters at 1x, 1000 classes: osmr/imgclsmob gluon/README.md (ShuffleNet x1.0 rows); the authors'
# megvii-model/ShuffleNet-Series README rounds g=3 and g=8 to 1.9M and 2.4M.
PUBLISHED_PARAMS = {1: 1_531_936, 2: 1_733_848, 3: 1_865_728, 4: 1_968_344, 8: 2_434_768}
GROUPS = sorted(PAPER_MACS_M)


def _meta(groups: int, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return getattr(sn, f"shufflenet_v1_g{groups}")(**kwargs)


@pytest.mark.parametrize("groups", GROUPS)
def test_complexity_matches_paper(groups: int) -> None:
    model = _meta(groups)
    macs_m = count_macs(model, resolution=224) / 1e6
    params = count_params(model)
    assert macs_m == pytest.approx(PAPER_MACS_M[groups], rel=0.03)
    assert params == pytest.approx(PUBLISHED_PARAMS[groups], rel=0.01)


@pytest.mark.parametrize("groups", GROUPS)
def test_table1_channels_and_registry_entry(groups: int) -> None:
    stage2 = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[groups]
    assert sn.shufflenet_v1_channels(groups, 1.0) == (24, stage2, 2 * stage2, 4 * stage2)
    published = get_entry(f"shufflenet_v1_g{groups}").published
    assert published is not None and published.macs_m == PAPER_MACS_M[groups]
    assert published.params_m == pytest.approx(PUBLISHED_PARAMS[groups] / 1e6, abs=1e-3)


def test_stage2_first_conv_is_dense_and_others_grouped() -> None:
    model = _meta(3)
    units = list(model.stages)
    assert units[0].branch.conv1.groups == 1  # 24 input channels: not grouped (paper section 3.3)
    assert units[0].branch.conv3.out_channels == 240 - 24  # concatenated with the 24 pooled channels
    assert all(u.branch.conv1.groups == 3 and u.branch.conv3.groups == 3 for u in units[1:])
    assert units[0].branch.shuffle_groups == 1 and all(u.branch.shuffle_groups == 3 for u in units[1:])
    assert [type(u).__name__ for u in units].count("ShuffleDownUnit") == 3
    assert len(units) == 4 + 8 + 4


@pytest.mark.parametrize(("groups", "width", "macs_m"),
                         [(3, 0.5, 38), (8, 0.5, 40), (3, 2.0, 524), (8, 2.0, 522)])
def test_other_widths_match_megvii_readme(groups: int, width: float, macs_m: float) -> None:
    """The authors' ShuffleNet-Series README FLOPs (multiply-adds) for 0.5x and 2x: checks the width rule."""
    assert count_macs(_meta(groups, width=width)) / 1e6 == pytest.approx(macs_m, rel=0.03)


def test_channel_shuffle_matches_definition() -> None:
    # 6 channels, g=2: reshape to (2, 3) = [[0,1,2],[3,4,5]], transpose, flatten -> 0,3,1,4,2,5.
    # g=3: (3, 2) = [[0,1],[2,3],[4,5]] -> 0,2,4,1,3,5.
    x = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).view(2, 6, 2, 2)
    for groups, order in ((2, [0, 3, 1, 4, 2, 5]), (3, [0, 2, 4, 1, 3, 5]), (1, [0, 1, 2, 3, 4, 5])):
        assert torch.equal(sn.channel_shuffle(x, groups), x[:, order])


def test_forward_backward_paper_stem_64px() -> None:
    torch.manual_seed(0)
    model = sn.shufflenet_v1_g3(num_classes=7, image_size=64, small_input=False)
    assert model.stem[0].stride == (2, 2) and isinstance(model.pool, nn.MaxPool2d)
    assert_trains(model, torch.randn(2, 3, 64, 64), 7)


@pytest.mark.parametrize("groups", GROUPS)
def test_forward_backward_small_input_32px(groups: int) -> None:
    torch.manual_seed(0)
    model = create_model(f"shufflenet_v1_g{groups}", num_classes=10, in_chans=1, image_size=32, width=0.5)
    assert model.stem[0].stride == (1, 1) and isinstance(model.pool, nn.Identity)
    assert_trains(model, torch.randn(2, 1, 32, 32), 10)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"width": 0.05}, "too small for groups=8"),
    ({"width": 0}, "positive number"),
    ({"width": "wide"}, "positive number"),
])
def test_impossible_width_raises_recipe_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        create_model("shufflenet_v1_g8", num_classes=10, image_size=32, **kwargs)
    message = str(info.value)
    assert message.startswith("model.kwargs: shufflenet_v1_g8: width=") and needle in message
    assert "\n" not in message


def test_zero_init_last_makes_residual_units_identity() -> None:
    torch.manual_seed(0)
    model = create_model("shufflenet_v1_g3", num_classes=10, image_size=32, width=0.25,
                         zero_init_residual=True)
    residual = [m for m in model.modules() if isinstance(m, sn.ShuffleUnit)]
    assert len(residual) == 3 + 7 + 3
    assert not any(hasattr(m, "zero_init_last") for m in model.modules() if isinstance(m, sn.ShuffleDownUnit))
    for unit in residual:
        assert torch.count_nonzero(unit.branch.bn3.weight) == 0
    unit = residual[0]
    x = torch.rand(2, unit.branch.conv1.in_channels, 8, 8)  # unit inputs follow a ReLU: non-negative
    for train in (True, False):
        unit.train(train)
        assert torch.equal(unit(x), x)
