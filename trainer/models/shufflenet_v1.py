"""ShuffleNet v1 (Zhang et al. 2017, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
Mobile Devices", arXiv:1707.01083), written from the paper: it is in neither torchvision nor timm.

Architecture (paper Table 1 and Fig. 2):

- stem: 3x3 conv, stride 2, 24 channels (BN, ReLU), then 3x3 max-pool, stride 2;
- Stage2/3/4 with 4/8/4 units; the first unit of each stage has stride 2 (Fig. 2c): the 3x3 depthwise conv
  has stride 2, the shortcut is a 3x3 average pool (stride 2) and the two are concatenated, so the branch
  makes `out - in` channels; the other units (Fig. 2b) add the identity shortcut;
- each unit: 1x1 group conv (BN, ReLU) -> channel shuffle -> 3x3 depthwise conv (BN, no ReLU, as the paper
  says after Xception) -> 1x1 group conv (BN) -> add or concatenate -> ReLU;
- bottleneck width = 1/4 of the unit's output channels (paper section 3.3);
- the first 1x1 conv of Stage2 is not grouped: its input has only 24 channels (paper section 3.3). As that
  conv is dense, the channel shuffle after it would only permute channels, so it is skipped there;
- global average pool, then a fully connected layer (with bias, the usual classifier).

Width multiplier ("ShuffleNet s x", paper section 3.3) scales every layer's channels. The paper does not say
how it rounds, so we do this: Stage2 gets `base * s` rounded to the nearest multiple of 4 x groups (so that
the bottleneck, a quarter of it, divides into the groups; never more than 10% below the exact value),
Stage3 and Stage4 double it as in Table 1 (where every stage doubles), and the stem gets `24 * s` rounded
to a multiple of the groups (so that a stride-2 unit's branch, `out - in` channels, divides into the
groups). At 1x every count is exactly the paper's; at 0.5x and 2x (g=3, g=8) the multiply-adds are within
3% of the authors' released models (megvii-model/ShuffleNet-Series), which keep a 24-channel stem at 1.5x
where this rule gives 36. A width that leaves Stage2 fewer than 4 x groups channels (the bottleneck would
have fewer channels than groups) raises RecipeError.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.registry import Published, register
from bigbatch.trainer.models.stochastic_depth import depth_rates, drop_path_module

# Paper Table 1: output channels of Stage2 at 1x for each number of groups (Stage3, Stage4 double it).
STAGE2_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
STAGE_REPEATS = (4, 8, 4)
STEM_CHANNELS = 24
SMALL_INPUT_MAX = 64  # image_size at or below which the small-input stem is used


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Paper section 3.1: reshape channels to (groups, n), transpose to (n, groups), flatten, so the next
    group conv sees channels from every group of the previous one."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class _Branch(nn.Module):
    """The residual branch shared by both unit kinds: 1x1 GConv -> shuffle -> 3x3 DWConv -> 1x1 GConv."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, groups: int, stride: int, group_first: bool):
        super().__init__()
        first_groups = groups if group_first else 1
        self.shuffle_groups = first_groups  # a dense first conv needs no shuffle (1 = none)
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride, 1, groups=mid_ch, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.shuffle_groups > 1:
            x = channel_shuffle(x, self.shuffle_groups)
        x = self.bn2(self.conv2(x))
        return self.bn3(self.conv3(x))


class ShuffleUnit(nn.Module):
    """Fig. 2b: stride 1, identity shortcut added, then ReLU."""

    def __init__(self, channels: int, groups: int, drop_prob: float = 0.0):
        super().__init__()
        self.branch = _Branch(channels, channels // 4, channels, groups, stride=1, group_first=True)
        self.drop_path = drop_path_module(drop_prob)

    def zero_init_last(self) -> None:
        """Zero the branch's last BN gamma so that the unit starts as ReLU(x) = x (inputs are post-ReLU)."""
        nn.init.zeros_(self.branch.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.drop_path(self.branch(x)))


class ShuffleDownUnit(nn.Module):
    """Fig. 2c: stride 2, 3x3 avg-pool shortcut concatenated with the branch (which makes `out - in`
    channels), then ReLU. No residual add, hence no `zero_init_last`: zeroing it would zero those channels."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, group_first: bool):
        super().__init__()
        self.branch = _Branch(in_ch, out_ch // 4, out_ch - in_ch, groups, stride=2, group_first=group_first)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat((self.shortcut(x), self.branch(x)), 1))


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 with `groups` groups; `channels` = (stem, Stage2, Stage3, Stage4) output channels."""

    def __init__(self, num_classes: int, in_chans: int, groups: int, channels: tuple[int, int, int, int],
                 small_input: bool = False, drop_path_rate: float = 0.0):
        super().__init__()
        stem_ch = channels[0]
        residual_units = sum(STAGE_REPEATS) - len(STAGE_REPEATS)
        rates = iter(depth_rates(drop_path_rate, residual_units))
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_ch, 3, 1 if small_input else 2, 1, bias=False),
                                  nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True))
        self.pool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        units: list[nn.Module] = []
        in_ch = stem_ch
        for stage, (out_ch, repeats) in enumerate(zip(channels[1:], STAGE_REPEATS, strict=True)):
            units.append(ShuffleDownUnit(in_ch, out_ch, groups, group_first=stage > 0))
            units.extend(ShuffleUnit(out_ch, groups, next(rates)) for _ in range(repeats - 1))
            in_ch = out_ch
        self.stages = nn.Sequential(*units)
        self.head = nn.Linear(in_ch, num_classes)
        for m in self.modules():  # He init (fan_out) for convs, as torchvision's mobile networks do
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.pool(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _round_to(value: float, divisor: int) -> int:
    """Nearest multiple of `divisor` (at least `divisor`), bumped up if that falls more than 10% below."""
    rounded = max(divisor, int(value / divisor + 0.5) * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def shufflenet_v1_channels(groups: int, width: float = 1.0,
                           name: str = "shufflenet_v1") -> tuple[int, int, int, int]:
    """(stem, Stage2, Stage3, Stage4) channels for `groups` at width `width`; RecipeError where none fit."""
    if groups not in STAGE2_CHANNELS:
        raise RecipeError(f"model.kwargs: {name}: groups={groups} is not one of the paper's "
                          f"{sorted(STAGE2_CHANNELS)}")
    number = isinstance(width, (int, float)) and not isinstance(width, bool)
    if not number or not math.isfinite(width) or width <= 0:
        raise RecipeError(f"model.kwargs: {name}: width={width!r} must be a positive number "
                          "(1.0 = the paper's 1x)")
    exact = STAGE2_CHANNELS[groups] * width
    if exact < 4 * groups:
        raise RecipeError(f"model.kwargs: {name}: width={width} is too small for groups={groups}: Stage2 "
                          f"would get {exact:g} channels, fewer than the {4 * groups} (4 x groups) that a "
                          "grouped bottleneck of a quarter of them needs")
    stage2 = _round_to(exact, 4 * groups)
    stem = _round_to(STEM_CHANNELS * width, groups)
    if stem >= stage2:  # cannot happen with Table 1's ratios; kept so a bad edit fails loudly
        raise RecipeError(f"model.kwargs: {name}: width={width} gives a stem of {stem} channels, not fewer "
                          f"than Stage2's {stage2}")
    return stem, stage2, 2 * stage2, 4 * stage2


def _build(groups: int, num_classes: int, in_chans: int, image_size: int, width: float,
           small_input: bool | None, drop_path_rate: float = 0.0) -> ShuffleNetV1:
    name = f"shufflenet_v1_g{groups}"
    channels = shufflenet_v1_channels(groups, width, name)
    if small_input is None:
        small_input = image_size <= SMALL_INPUT_MAX
    return ShuffleNetV1(num_classes, in_chans, groups, channels, small_input=bool(small_input),
                        drop_path_rate=drop_path_rate)


def _published(groups: int, macs_m: float, params: int) -> Published:
    """Paper Table 2 multiply-adds (1x, 224 px; its "MFLOPs" count multiply-adds) and a published parameter
    count. The paper gives no parameter counts: osmr/imgclsmob (gluon/README.md, the pytorchcv model zoo)
    lists all five exactly; megvii-model/ShuffleNet-Series (ShuffleNetV1/README.md, the authors' code) gives
    1.9M (g=3) and 2.4M (g=8), rounded to 0.1M, and open-mmlab/mmpretrain 1.87M (g=3): both agree."""
    extra = {3: "; megvii-model/ShuffleNet-Series README 1.9M, mmpretrain metafile 1.87M",
             8: "; megvii-model/ShuffleNet-Series README 2.4M"}.get(groups, "")
    return Published(params_m=round(params / 1e6, 3), macs_m=macs_m, resolution=224,
                     source=f"macs: Zhang et al. 2017, Table 2 (1x); params: osmr/imgclsmob gluon/README.md "
                            f"(ShuffleNet x1.0 g={groups}: {params:,}){extra}")


# Every builder: ShuffleNet v1 with that many groups at width `width` (1.0 = the paper's 1x). With
# `image_size` <= 64 (or `small_input=True`) the stem conv has stride 1 and the max-pool is dropped, so
# 28-32 px inputs still reach Stage4 at 4x4 instead of 1x1; `small_input=False` forces the paper's stem.


@register("shufflenet_v1_g1", "efficient", "ShuffleNet v1 1x, 1 group (Zhang et al. 2017)",
          published=_published(1, 143, 1_531_936))
def shufflenet_v1_g1(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, width: float = 1.0,
                     small_input: bool | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """ShuffleNet v1, 1 group (no channel shuffle); image_size <= 64 selects the small-input stem."""
    return _build(1, num_classes, in_chans, image_size, width, small_input, drop_path_rate)


@register("shufflenet_v1_g2", "efficient", "ShuffleNet v1 1x, 2 groups (Zhang et al. 2017)",
          published=_published(2, 140, 1_733_848))
def shufflenet_v1_g2(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, width: float = 1.0,
                     small_input: bool | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """ShuffleNet v1, 2 groups; image_size <= 64 selects the stride-1 small-input stem."""
    return _build(2, num_classes, in_chans, image_size, width, small_input, drop_path_rate)


@register("shufflenet_v1_g3", "efficient", "ShuffleNet v1 1x, 3 groups (Zhang et al. 2017)",
          published=_published(3, 137, 1_865_728))
def shufflenet_v1_g3(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, width: float = 1.0,
                     small_input: bool | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """ShuffleNet v1, 3 groups (the paper's default); image_size <= 64 selects the small-input stem."""
    return _build(3, num_classes, in_chans, image_size, width, small_input, drop_path_rate)


@register("shufflenet_v1_g4", "efficient", "ShuffleNet v1 1x, 4 groups (Zhang et al. 2017)",
          published=_published(4, 133, 1_968_344))
def shufflenet_v1_g4(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, width: float = 1.0,
                     small_input: bool | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """ShuffleNet v1, 4 groups; image_size <= 64 selects the stride-1 small-input stem."""
    return _build(4, num_classes, in_chans, image_size, width, small_input, drop_path_rate)


@register("shufflenet_v1_g8", "efficient", "ShuffleNet v1 1x, 8 groups (Zhang et al. 2017)",
          published=_published(8, 137, 2_434_768))
def shufflenet_v1_g8(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, width: float = 1.0,
                     small_input: bool | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """ShuffleNet v1, 8 groups; image_size <= 64 selects the stride-1 small-input stem."""
    return _build(8, num_classes, in_chans, image_size, width, small_input, drop_path_rate)
