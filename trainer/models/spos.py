"""Single-Path One-Shot (Guo et al. 2019, "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", arXiv:1904.00420): the ShuffleNet v2-based block search space, with the architecture as data.

Written from the paper (its ShuffleNet v2 choice blocks; ShuffleNet v2 is Ma et al. 2018), no code copied:

- stem: 3x3 conv, 16 channels, stride 2 (BN, ReLU);
- 20 choice blocks in 4 stages of 4, 4, 8, 4 blocks, 64 / 160 / 320 / 640 channels; the first block of each
  stage has stride 2;
- every block is one of four choices: 0 `shufflenet_3x3`, 1 `shufflenet_5x5`, 2 `shufflenet_7x7` (a
  ShuffleNet v2 unit whose depthwise convs have that kernel) or 3 `xception` (the branch is three 3x3
  depthwise-separable convs, as in Xception);
- a stride-1 block splits its channels in two halves, passes one through unchanged and the other through the
  branch (1x1 conv, BN, ReLU -> kxk depthwise, BN -> 1x1 conv, BN, ReLU), concatenates and shuffles the
  channels (2 groups), as ShuffleNet v2 (Fig. 3c). A stride-2 block feeds its whole input to both the branch
  and a second branch (kxk depthwise stride 2, BN -> 1x1 conv, BN, ReLU) that keeps the input's width;
  the main branch makes the rest (`out - in` channels), so the stage can widen by any amount (Fig. 3d);
- the branch's bottleneck width is half the block's output channels (the authors' code, channel scale 1.0),
  times the block's `channel_scales` entry when the channels were searched too (truncated, as the authors);
- 1x1 conv to 1024 channels (BN, ReLU), global average pool, dropout 0.1 (the authors' evaluation network),
  fully connected layer.

`spos_published` is the block-search choice list of the authors' code release (megvii-model/
SinglePathOneShot README, "Evaluation": (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3), "323M"
FLOPs (multiply-adds), "3.5M" parameters, 25.6% top-1 error): built here it has 322.9M multiply-adds and
3,559,464 parameters (3,530,312 without BatchNorm's affine parameters). The paper's own block-search model
(319M) is not given as a list; the block choices of the authors' block & channel search model
(megvii-model/ShuffleNet-Series OneShot: CHANNEL_SEARCH_CHOICES) have 318.7M at channel scale 1.0, and with
CHANNEL_SEARCH_SCALES 327.9M and 3.43M parameters (its README: 328M, 3.4M).

Small images: with `image_size` <= 64 (or `small_input=True`) the stem has stride 1, so a 32-64 px input
reaches the last stage at 2x2 to 4x4 instead of 1x1 to 2x2.
"""

import functools

import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.registry import Published, register
from bigbatch.trainer.models.stochastic_depth import depth_rates, drop_path_module

CHOICE_NAMES = ("shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception")
STAGE_REPEATS = (4, 4, 8, 4)
STAGE_CHANNELS = (64, 160, 320, 640)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1024
SMALL_INPUT_MAX = 64  # image_size at or below which the stem has stride 1
# megvii-model/SinglePathOneShot README, "Evaluation" table: the searched block-search architecture.
PUBLISHED_CHOICES = (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3)
# megvii-model/ShuffleNet-Series OneShot/network.py: the block & channel search model (328M, 3.4M in its
# README): these choices, and each block's bottleneck scaled by scale_list[scale_id].
CHANNEL_SEARCH_CHOICES = (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)
CHANNEL_SEARCH_SCALES = tuple((0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)[i]
                              for i in (6, 5, 3, 5, 2, 6, 3, 4, 2, 5, 7, 5, 4, 6, 7, 4, 4, 5, 4, 3))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: view channels as (groups, n), transpose to (n, groups), flatten, so that the
    halves a block concatenated are interleaved and the next block's split mixes both."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def conv_bn_layers(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
             relu: bool = True, affine: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2,
                                         groups=in_ch if depthwise else 1, bias=False),
                               nn.BatchNorm2d(out_ch, affine=affine)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class ChoiceBlock(nn.Module):
    """One SPOS choice block: a ShuffleNet v2 unit with a kxk depthwise kernel, or its Xception-like variant."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, choice: int, scale: float = 1.0,
                 drop_prob: float = 0.0, affine: bool = True):
        super().__init__()
        conv_bn = functools.partial(conv_bn_layers, affine=affine)  # the supernet's BatchNorm has no affine (authors)
        # stochastic depth on a stride-1 unit's branch: its half of the channels, per sample (the other half is
        # the identity); a downsampling unit has no identity path and is never dropped
        self.drop_path = drop_path_module(drop_prob if stride == 1 else 0.0)
        self.stride, self.choice = stride, choice
        branch_in = in_ch if stride == 2 else in_ch // 2
        branch_out = out_ch - branch_in
        mid = int(out_ch // 2 * scale)  # the authors' rounding (truncation) of a scaled bottleneck
        kernel = 3 if CHOICE_NAMES[choice] == "xception" else (3, 5, 7)[choice]
        if CHOICE_NAMES[choice] == "xception":
            layers = (conv_bn(branch_in, branch_in, 3, stride, depthwise=True, relu=False)
                      + conv_bn(branch_in, mid)
                      + conv_bn(mid, mid, 3, depthwise=True, relu=False) + conv_bn(mid, mid)
                      + conv_bn(mid, mid, 3, depthwise=True, relu=False) + conv_bn(mid, branch_out))
        else:
            layers = (conv_bn(branch_in, mid) + conv_bn(mid, mid, kernel, stride, depthwise=True, relu=False)
                      + conv_bn(mid, branch_out))
        self.branch = nn.Sequential(*layers)
        self.proj = None
        if stride == 2:  # the downsampling unit's second branch keeps the input's width
            self.proj = nn.Sequential(*conv_bn(in_ch, in_ch, kernel, stride, depthwise=True, relu=False),
                                      *conv_bn(in_ch, in_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            keep, x = x.chunk(2, dim=1)
            out = torch.cat((keep, self.drop_path(self.branch(x))), dim=1)
        else:
            out = torch.cat((self.proj(x), self.branch(x)), dim=1)
        return channel_shuffle(out, 2)


def block_layout(stage_channels: tuple[int, ...], stage_repeats: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(input channels, output channels, stride) of every choice block: each stage starts with stride 2."""
    layout, in_ch = [], STEM_CHANNELS
    for out_ch, repeats in zip(stage_channels, stage_repeats, strict=True):
        for j in range(repeats):
            layout.append((in_ch, out_ch, 2 if j == 0 else 1))
            in_ch = out_ch
    return layout


class SPOSNet(nn.Module):
    """The single path through the SPOS supernet that a choice list picks, as a stand-alone network."""

    def __init__(self, choices: list[int], num_classes: int = 1000, in_chans: int = 3,
                 stage_channels: tuple[int, ...] = STAGE_CHANNELS, stage_repeats: tuple[int, ...] = STAGE_REPEATS,
                 small_input: bool = False, drop_rate: float = 0.1, channel_scales: list[float] | None = None,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.choices = list(choices)
        rates = depth_rates(drop_path_rate, len(self.choices))
        scales = channel_scales or [1.0] * len(self.choices)
        self.stem = nn.Sequential(*conv_bn_layers(in_chans, STEM_CHANNELS, 3, 1 if small_input else 2))
        layout = block_layout(stage_channels, stage_repeats)
        self.blocks = nn.Sequential(*(ChoiceBlock(in_ch, out_ch, stride, choice, scale, rate) for
                                      (in_ch, out_ch, stride), choice, scale, rate in
                                      zip(layout, self.choices, scales, rates, strict=True)))
        self.head = nn.Sequential(*conv_bn_layers(stage_channels[-1], HEAD_CHANNELS))
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


def parse_choices(choices: object, length: int, key: str = "model.kwargs.choices") -> list[int]:
    """Check a choice list (ints 0-3 or names, mixed freely); RecipeError naming the first bad position."""
    expected = ", ".join(f"{i} or {n}" for i, n in enumerate(CHOICE_NAMES))
    if not isinstance(choices, (list, tuple)):
        raise RecipeError(f"{key}: expected a list of {length} block choices ({expected}), got {choices!r}")
    if len(choices) != length:
        raise RecipeError(f"{key}: expected {length} block choices (one per block: stage_repeats sum to "
                          f"{length}), got {len(choices)}")
    out = []
    for i, choice in enumerate(choices):
        if isinstance(choice, str) and choice in CHOICE_NAMES:
            out.append(CHOICE_NAMES.index(choice))
        elif isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < len(CHOICE_NAMES):
            out.append(choice)
        else:
            what = "unknown choice name" if isinstance(choice, str) else "choice out of range" \
                if isinstance(choice, int) and not isinstance(choice, bool) else "bad choice"
            raise RecipeError(f"{key}[{i}]: {what} {choice!r} at position {i} (expected {expected})")
    return out


def _int_list(value: object, key: str, length: int | None = None) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value)):
        raise RecipeError(f"{key}: expected a non-empty list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise RecipeError(f"{key}: expected {length} entries (one per stage), got {len(value)}")
    return tuple(value)


def _scales(value: object, length: int) -> list[float] | None:
    """Channel-search scales: one bottleneck multiplier per block (the paper searches 0.2-1.6)."""
    if value is None:
        return None
    key = "model.kwargs.channel_scales"
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise RecipeError(f"{key}: expected a list of {length} numbers (one per block), got {value!r}")
    for i, scale in enumerate(value):
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 4:
            raise RecipeError(f"{key}[{i}]: bad scale {scale!r} at position {i} (expected a number > 0 and "
                              "<= 4; the paper searches 0.2-1.6)")
    return [float(v) for v in value]


def check_stages(stage_channels: object, stage_repeats: object, drop_rate: object) -> tuple[tuple[int, ...],
                                                                                            tuple[int, ...]]:
    """The stage widths and block counts of a network (or supernet) of this space, checked."""
    repeats = _int_list(stage_repeats, "model.kwargs.stage_repeats")
    channels = _int_list(stage_channels, "model.kwargs.stage_channels", len(repeats))
    previous = STEM_CHANNELS
    for i, ch in enumerate(channels):
        if ch % 4 or ch <= previous:  # halves split evenly, the bottleneck (ch / 2) too; a stride-2 unit widens
            raise RecipeError(f"model.kwargs.stage_channels[{i}]: {ch} must be a multiple of 4 and more than "
                              f"the {previous} channels before it")
        previous = ch
    if not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
        raise RecipeError(f"model.kwargs.drop_rate: expected a number >= 0 and < 1, got {drop_rate!r}")
    return channels, repeats


def build_spos(choices: object, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
               stage_channels: object = STAGE_CHANNELS, stage_repeats: object = STAGE_REPEATS,
               small_input: bool | None = None, drop_rate: float = 0.1,
               channel_scales: object = None, drop_path_rate: float = 0.0) -> SPOSNet:
    """Check the architecture data, then build it (see the module docstring)."""
    channels, repeats = check_stages(stage_channels, stage_repeats, drop_rate)
    picked = parse_choices(choices, sum(repeats))
    scales = _scales(channel_scales, len(picked))
    if scales:
        widths = [ch for ch, n in zip(channels, repeats, strict=True) for _ in range(n)]
        for i, (ch, scale) in enumerate(zip(widths, scales, strict=True)):
            if int(ch // 2 * scale) < 1:
                raise RecipeError(f"model.kwargs.channel_scales[{i}]: scale {scale} at position {i} leaves the "
                                  f"bottleneck of a {ch}-channel block with no channels")
    if small_input is None:
        small_input = image_size <= SMALL_INPUT_MAX
    return SPOSNet(picked, num_classes, in_chans, channels, repeats, bool(small_input), float(drop_rate), scales,
                   float(drop_path_rate))


@register("spos", "nas", "Single-Path One-Shot ShuffleNet v2 space; kwargs: choices (20 x 0-3), channel_scales")
def spos(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, choices: list | None = None,
         stage_channels: list[int] | None = None, stage_repeats: list[int] | None = None,
         small_input: bool | None = None, drop_rate: float = 0.1, channel_scales: list[float] | None = None,
         drop_path_rate: float = 0.0) -> nn.Module:
    """Any architecture of the SPOS space as data: `choices` gives one choice per block (0-3 or
    shufflenet_3x3 / shufflenet_5x5 / shufflenet_7x7 / xception); `channel_scales` (optional, one per block)
    scales each bottleneck, the paper's channel search; image_size <= 64 selects the stride-1 stem. Without
    `choices`, the published block-search choices (so the entry builds with no kwargs, as catalogue entries do)."""
    return build_spos(list(PUBLISHED_CHOICES) if choices is None else choices, num_classes, in_chans, image_size,
                      STAGE_CHANNELS if stage_channels is None else stage_channels,
                      STAGE_REPEATS if stage_repeats is None else stage_repeats, small_input, drop_rate,
                      channel_scales, drop_path_rate)


@register("spos_published", "nas", "SPOS block-search model (Guo et al. 2019; authors' released choices)",
          published=Published(params_m=3.5, macs_m=323, resolution=224, source=(
              "Guo et al. 2019 (arXiv:1904.00420), the authors' release megvii-model/SinglePathOneShot README, "
              "Evaluation table: choices (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3), "
              "323M FLOPs (multiply-adds), 3.5M params (built: 3.56M, 3.53M without BatchNorm affine)")))
def spos_published(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                   small_input: bool | None = None, drop_rate: float = 0.1,
                   drop_path_rate: float = 0.0) -> nn.Module:
    """The searched architecture the authors released; image_size <= 64 selects the stride-1 stem."""
    return build_spos(list(PUBLISHED_CHOICES), num_classes, in_chans, image_size, small_input=small_input,
                      drop_rate=drop_rate, drop_path_rate=drop_path_rate)
