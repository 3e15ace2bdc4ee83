"""CondenseNet (Huang, Liu, van der Maaten and Weinberger 2018, "CondenseNet: An Efficient DenseNet using
Learned Group Convolutions", CVPR 2018, arXiv:1711.09224), written in-house: in neither torchvision nor timm.

What is built is the *testing-time* (condensed) network of the paper's Figure 1 (right) and Section 3: the
network after the learned group convolutions have been pruned and converted, as in the authors' released
converted models (ShichenLiu/CondenseNet, models/condensenet_converted.py and layers.py, read for the
configuration; this code is our own):

- stem: one 3x3 conv, stride 2, 2 x growth[0] = 16 channels, no BN/ReLU (the network is pre-activation);
- five dense blocks of 4, 6, 8, 10, 8 layers with growth rates 8, 16, 32, 64, 128 (paper Section 5.2,
  "exponentially increasing growth rate"; the authors' ImageNet command `--stages 4-6-8-10-8 --growth
  8-16-32-64-128`), fully densely connected: every layer sees all earlier features of all blocks; the
  transitions are 2x2 average pools with no 1x1 conv, so every feature map reaches the end (2064 channels);
- each dense layer (growth k, `in` input channels): index-select G x (in / C) channels (each of the G
  groups reads in / C of them) -> BN -> ReLU -> 1x1 group conv (G groups, 4k outputs) -> channel shuffle
  (G) -> BN -> ReLU -> 3x3 group conv (G groups, k outputs); the k outputs are appended to the input;
- after the last block BN -> ReLU -> global average pool -> a condensed classifier: index-select half the
  2064 features, then Linear(1032, classes). The authors prune the FC layer too (layers.py
  `CondensingLinear(drop_rate=0.5)`) and the published parameter counts are of that pruned classifier:
  Table 5's 4.8M (G=C=4) and 2.9M (G=C=8) come out only with it (osmr/imgclsmob's port of the converted
  models counts 4,773,944 and 2,935,416, both with the 1032-input classifier); a dense 2064-input FC adds
  1.03M. `condense_fc=False` builds the dense FC instead.

Training from scratch. In the paper the channels each group reads are *learned*: a dense 1x1 conv is trained
with group lasso and pruned over C - 1 condensing stages, then converted. This module does NOT do that: it
trains the condensed architecture directly, with the index selections fixed at construction. They come from
`random.Random(index_seed)` (default 0; independent of torch's global RNG, so a seed always builds the same
network): for each 1x1 layer in order, a random permutation of its input channels is cut into G slices of
in / C channels (further permutations are drawn when G > C), each slice sorted. Each group thus reads exactly
in / C distinct channels; where G <= C no channel is read by two groups, and where G = C every channel is read
exactly once. The classifier keeps a sorted random half of the features. The paper's learned selection may
read a channel from several groups and skip others; the fixed random one is our choice for training without
the pruning schedule.

Options: `groups` (G, for both the 1x1 and the 3x3 group convs, as in the paper's G=C models) and
`condense_factor` (C); `small_input`, `condense_fc`, `index_seed` as described here. Every layer's input
channel count must be a multiple of C, and k (hence 4k) a multiple of G for every growth rate k: with the
ImageNet growth rates G and C must divide 8 (the stem has 16 channels, layer 2 of block 1 gets 24); anything
else raises RecipeError.

Small inputs (`image_size` <= 64, or `small_input=True`): the stem conv has stride 1 and the first transition
(after block 1) is dropped, so a 32-pixel input runs blocks 1-5 at 32, 32, 16, 8, 4 pixels (ending at 4x4, as
the 224-pixel network ends at 7x7) instead of 16, 8, 4, 2, 1; `small_input=False` forces the paper's layout.

Complexity at 224 px, 1000 classes, as trainer.models.complexity counts it (conv and linear multiply-adds):
G=C=4: 4,773,944 parameters, 516.6M multiply-adds (paper Table 5: 4.8M, 529M; -2.3%);
G=C=8: 2,935,416 parameters, 261.5M multiply-adds (paper Table 5: 2.9M, 274M; -4.5%).
The parameters are exact (equal to osmr/imgclsmob's counts of the authors' converted models). The gap in
multiply-adds is the counting convention, not the network: the authors' counter (utils.py `measure_model`)
also counts one op per ReLU input element, one per element entering an average pool and one per FC bias,
12.7M here for either G; adding them gives 529.3M and 274.2M, the paper's 529M and 274M (tests check this).
"""

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.registry import Published, register
from bigbatch.trainer.models.shufflenet_v1 import channel_shuffle

# CondenseNet-74 for ImageNet: layers per dense block and growth rate of each block (paper Section 5.2; the
# authors' README command `--stages 4-6-8-10-8 --growth 8-16-32-64-128`). 74 = 2 x 36 layers + stem + FC.
STAGES = (4, 6, 8, 10, 8)
GROWTH = (8, 16, 32, 64, 128)
BOTTLENECK = 4  # the 1x1 conv makes 4k channels (the authors' `--bottleneck 4`)
FC_KEEP = 0.5  # fraction of the final features the condensed classifier reads (layers.py CondensingLinear)
SMALL_INPUT_MAX = 64  # image_size at or below which the small-input layout is used


def group_index(in_channels: int, groups: int, condense_factor: int, rng: random.Random) -> list[int]:
    """Input channels each of `groups` groups reads, concatenated group by group: `in_channels //
    condense_factor` distinct channels per group, sorted within the group, cut from random permutations."""
    per_group = in_channels // condense_factor
    pool: list[int] = []
    index: list[int] = []
    for _ in range(groups):
        if len(pool) < per_group:
            pool = list(range(in_channels))
            rng.shuffle(pool)
        index.extend(sorted(pool[:per_group]))
        pool = pool[per_group:]
    return index


class CondenseConv1x1(nn.Module):
    """Condensed learned group convolution (paper Fig. 1 right): index select -> BN -> ReLU -> 1x1 group conv
    -> channel shuffle. `index` is a buffer: group g's inputs are index[g * n:(g + 1) * n], n = in / C."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, condense_factor: int,
                 rng: random.Random):
        super().__init__()
        self.groups = groups
        index = group_index(in_channels, groups, condense_factor, rng)
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        self.norm = nn.BatchNorm2d(len(index))
        self.conv = nn.Conv2d(len(index), out_channels, 1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(x.index_select(1, self.index)))
        return channel_shuffle(self.conv(x), self.groups)


class DenseLayer(nn.Module):
    """One CondenseNet layer: condensed 1x1 (in -> 4k) then BN -> ReLU -> 3x3 group conv (4k -> k); the k new
    channels are appended to the input (dense connectivity, no residual add)."""

    def __init__(self, in_channels: int, growth: int, groups: int, condense_factor: int, rng: random.Random):
        super().__init__()
        mid = BOTTLENECK * growth
        self.conv1 = CondenseConv1x1(in_channels, mid, groups, condense_factor, rng)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.norm2(self.conv1(x))))
        return torch.cat((x, y), 1)


class CondenseLinear(nn.Module):
    """Condensed classifier: index-select `len(index)` of the features, then a linear layer."""

    def __init__(self, in_features: int, num_classes: int, keep: float, rng: random.Random):
        super().__init__()
        order = list(range(in_features))
        rng.shuffle(order)
        index = sorted(order[:int(in_features * keep)])
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        self.linear = nn.Linear(len(index), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.index_select(1, self.index))


class CondenseNet(nn.Module):
    """Condensed (testing-time) CondenseNet: stem, dense blocks joined by 2x2 average pools, BN-ReLU, global
    pool, condensed (or dense) classifier."""

    def __init__(self, num_classes: int, in_chans: int, groups: int, condense_factor: int,
                 stages: tuple[int, ...] = STAGES, growth: tuple[int, ...] = GROWTH,
                 small_input: bool = False, condense_fc: bool = True, index_seed: int = 0):
        super().__init__()
        rng = random.Random(index_seed)
        channels = 2 * growth[0]
        self.stem = nn.Conv2d(in_chans, channels, 3, 1 if small_input else 2, 1, bias=False)
        blocks: list[nn.Module] = []
        for i, (layers, k) in enumerate(zip(stages, growth, strict=True)):
            if i > 0:
                blocks.append(nn.Identity() if small_input and i == 1 else nn.AvgPool2d(2, 2))
            for _ in range(layers):
                blocks.append(DenseLayer(channels, k, groups, condense_factor, rng))
                channels += k
        self.features = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(channels)
        self.num_features = channels
        self.head = (CondenseLinear(channels, num_classes, FC_KEEP, rng) if condense_fc
                     else nn.Linear(channels, num_classes))
        for m in self.modules():  # He init (fan_out) for convs, as the authors do; zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.features(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _positive_int(value, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RecipeError(f"model.kwargs: {name}: {what}={value!r} must be a positive integer")
    return value


def check_options(groups, condense_factor, name: str, stages: tuple[int, ...] = STAGES,
                  growth: tuple[int, ...] = GROWTH) -> None:
    """RecipeError (one line, naming model.kwargs) unless every layer can be built with these G and C."""
    groups = _positive_int(groups, "groups", name)
    condense_factor = _positive_int(condense_factor, "condense_factor", name)
    for k in growth:
        if k % groups:
            raise RecipeError(f"model.kwargs: {name}: groups={groups} does not divide the growth rate {k} "
                              f"(the 3x3 group conv's output channels); groups must divide {growth[0]}")
    channels = 2 * growth[0]
    for block, (layers, k) in enumerate(zip(stages, growth, strict=True), start=1):
        for layer in range(1, layers + 1):
            if channels % condense_factor:
                raise RecipeError(f"model.kwargs: {name}: condense_factor={condense_factor} does not "
                                  f"divide the {channels} input channels of block {block} layer {layer} "
                                  "(each group keeps 1/condense_factor of them)")
            channels += k


def _build(name: str, num_classes: int, in_chans: int, image_size: int, groups, condense_factor,
           small_input: bool | None, condense_fc: bool, index_seed: int) -> CondenseNet:
    check_options(groups, condense_factor, name)
    if not isinstance(index_seed, int) or isinstance(index_seed, bool):
        raise RecipeError(f"model.kwargs: {name}: index_seed={index_seed!r} must be an integer")
    if small_input is None:
        small_input = image_size <= SMALL_INPUT_MAX
    return CondenseNet(num_classes, in_chans, groups, condense_factor, small_input=bool(small_input),
                       condense_fc=bool(condense_fc), index_seed=index_seed)


# Paper Table 5 (ImageNet, 224 px; its "FLOPs" are multiply-adds): CondenseNet (G=C=4) 529M, 4.8M parameters,
# CondenseNet (G=C=8) 274M, 2.9M; the authors' README table gives the same four figures.


def _variant(g: int, params_m: float, macs_m: float):
    """The registry builder of CondenseNet-74 with G=C=g (both defaults overridable in the recipe)."""
    name = f"condensenet_74_c{g}_g{g}"

    @register(name, "efficient", f"CondenseNet-74, G=C={g}, condensed (Huang et al. 2018)",
              published=Published(params_m=params_m, macs_m=macs_m, resolution=224,
                                  source=f"Huang et al. 2018, Table 5 (CondenseNet G=C={g})"))
    def build(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, groups: int = g,
              condense_factor: int = g, small_input: bool | None = None, condense_fc: bool = True,
              index_seed: int = 0, **kwargs) -> nn.Module:
        if kwargs:
            raise RecipeError(f"model.kwargs: {name}: unknown option(s) {', '.join(sorted(kwargs))}")
        return _build(name, num_classes, in_chans, image_size, groups, condense_factor, small_input,
                      condense_fc, index_seed)

    build.__doc__ = (f"CondenseNet-74 (G=C={g}), condensed form with fixed seeded index selections; "
                     "image_size <= 64 selects the stride-1 stem without the first transition.")
    return build


condensenet_74_c4_g4 = _variant(4, 4.8, 529)
condensenet_74_c8_g8 = _variant(8, 2.9, 274)
