"""NASNet-A Mobile (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image Recognition",
arXiv:1707.07012), written from the paper's Figure 4 and the public TF-slim description (nets/nasnet): timm
has only NASNet-A Large and torchvision has none.

The two cells are data (`NORMAL_CELL`, `REDUCTION_CELL`): five blocks, each the sum of two (op, input) pairs,
and the states to concatenate as the cell's output. Inputs follow this project's DARTS convention
(trainer.models.darts): 0 is h_{i-1} (the output of the cell two back), 1 is h_i (the previous cell's output),
k >= 2 is block k - 2 of the same cell. (TF-slim numbers the two inputs the other way round.)

Ops (all convolutions without bias, every BatchNorm affine):
  - sep_kxk (k = 3, 5, 7): (ReLU, depthwise kxk conv, 1x1 conv, BN) twice, the stride in the first depthwise
    conv. The first 1x1 conv already maps to the cell's width, so the second layer's depthwise conv runs on
    the output width: the same as darts.SepConv when the widths agree, different in the first stem cell,
    whose sep convs read the 32-channel stem conv directly. Built from two dilation-1 darts.DilConv layers;
  - avg_3x3 / max_3x3: 3x3 pooling, padding 1 (the average excludes the padding, as TF's SAME pooling does),
    followed by 1x1 conv + BN only where the input width differs from the cell's (never in NASNet-A Mobile);
  - identity: the input itself, or ReLU-1x1 conv-BN where it must stride or change width (never in NASNet-A).
In a reduction cell the ops that read the cell inputs (0, 1) have stride 2; those that read a block, stride 1.

Cell inputs (TF-slim `_cell_base` / `_reduce_prev_layer`): h_i always goes through ReLU-1x1 conv-BN to the
cell's width; h_{i-1} goes through a factorized reduction (darts.FactorizedReduce) when it is at twice the
resolution (after a reduction cell), ReLU-1x1 conv-BN when only its width differs, and is used as it is
otherwise. The first stem cell has no h_{i-1}: it reads the raw stem conv output in its place.

Network, "NASNet-A (N @ P)" with N = 4 normal cells per stack and P = 1056 penultimate filters (TF-slim
`mobile_imagenet_config`): 3x3 conv, stride 2, no padding, 32 filters, BN (224 -> 111); two reduction cells
as stem with F/4 and F/2 filters (F = P / (6 * 4) = 44, so 11 and 22) -> 56, 28; then N normal cells with
F filters, a reduction cell with 2F, N normal cells with 2F, a reduction cell with 4F, N normal cells with
4F (28 -> 14 -> 7); ReLU, global average pool, dropout (0.5, as the paper's mobile model), linear classifier.
A normal cell outputs 6 x its filters (h_{i-1} and the five blocks), a reduction cell 4 x (blocks 1-4), so
the penultimate layer has 6 x 4F = P = 1056 channels. Widths per cell (output channels): stem 44, 88;
normal 264 (x4); reduction 352; normal 528 (x4); reduction 704; normal 1056 (x4).

ScheduledDropPath (`drop_path`, default 0.0 as in the paper's mobile config): during training each op's
output, identity excepted, is zeroed per sample with a probability scaled by depth, `drop_path_prob` x
(cell index + 1) / 16 (the 16 cells counting the stem cells), as TF-slim does. The paper also ramps the
probability linearly over training; `drop_path_prob` is a plain attribute that a schedule can assign between
epochs (as for the DARTS networks), otherwise constant.

Auxiliary head (`auxiliary=True`, off by default; the published counts exclude it): TF-slim's
`_build_aux_head` after the last normal cell of the second stack: ReLU, 5x5 average pool with stride 3 (no
padding), 1x1 conv to 128 + BN + ReLU, a conv to 768 whose kernel covers the whole remaining map (+ BN + ReLU),
a linear classifier. In training `forward` then returns (logits, auxiliary logits) and the loop adds the
auxiliary loss with weight `train.auxiliary_weight` (TF-slim's 0.4), as for the DARTS networks. The map size
depends on the input, so the head is sized by one dry run at build time (a map under 5x5 skips the pool).
BatchNorm keeps PyTorch's defaults (eps 1e-5, momentum 0.1), not TF-slim's (1e-3, decay 0.9997); symmetric
padding replaces TF's SAME padding, which pads stride-2 ops more on the bottom/right (same output sizes).

Counts against the paper (trainer.models.complexity: conv + FC multiply-adds, 1000 classes, 224 px):
5,289,978 parameters vs "5.3M" (-0.19%; the Keras / pretrainedmodels ports of the TF model have the same
5,289,978 trainable parameters); 563.6M multiply-adds vs 564M (-0.07%).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.darts_ops import DilConv, FactorizedReduce, ReLUConvBN
from bigbatch.trainer.models.registry import Published, register
from bigbatch.trainer.models.stochastic_depth import drop_path

# --------------------------------------------------------------------------------------------- cells as data

OP_NAMES = ("sep_3x3", "sep_5x5", "sep_7x7", "avg_3x3", "max_3x3", "identity")

Pair = tuple[str, int]


@dataclass(frozen=True)
class CellSpec:
    """Blocks of (op, input) pairs, summed; `concat` lists the states (inputs 0/1 or blocks k >= 2) that form
    the output."""

    blocks: tuple[tuple[Pair, Pair], ...]
    concat: tuple[int, ...]

    def check(self) -> None:
        """ValueError unless each block reads only earlier states with known ops, and every block is either
        concatenated or read by a later block."""
        read: set[int] = set()
        for b, block in enumerate(self.blocks):
            for op, index in block:
                if op not in OP_NAMES:
                    raise ValueError(f"block {b}: unknown op {op!r} (expected one of {', '.join(OP_NAMES)})")
                if not 0 <= index < 2 + b:
                    raise ValueError(f"block {b}: input {index} is not an earlier state (expected 0..{1 + b})")
                read.add(index)
        states = 2 + len(self.blocks)
        if not self.concat or len(set(self.concat)) != len(self.concat):
            raise ValueError(f"concat {self.concat}: expected distinct state indices")
        if any(not 0 <= i < states for i in self.concat):
            raise ValueError(f"concat {self.concat}: states are 0..{states - 1}")
        dead = [i for i in range(2, states) if i not in read and i not in self.concat]
        if dead:
            raise ValueError(f"blocks {[i - 2 for i in dead]} are neither read nor concatenated")


# Figure 4, left; TF-slim NasNetANormalCell (its inputs 0/1 swapped to this module's convention).
NORMAL_CELL = CellSpec(
    blocks=(
        (("sep_5x5", 1), ("sep_3x3", 0)),
        (("sep_5x5", 0), ("sep_3x3", 0)),
        (("avg_3x3", 1), ("identity", 0)),
        (("avg_3x3", 0), ("avg_3x3", 0)),
        (("sep_3x3", 1), ("identity", 1)),
    ),
    concat=(0, 2, 3, 4, 5, 6),  # h_{i-1} and every block
)

# Figure 4, right; TF-slim NasNetAReductionCell.
REDUCTION_CELL = CellSpec(
    blocks=(
        (("sep_5x5", 1), ("sep_7x7", 0)),
        (("max_3x3", 1), ("sep_7x7", 0)),
        (("avg_3x3", 1), ("sep_5x5", 0)),
        (("identity", 3), ("avg_3x3", 2)),  # block 1 + avg pool of block 0, both already reduced
        (("sep_3x3", 2), ("max_3x3", 1)),
    ),
    concat=(3, 4, 5, 6),  # block 0 only feeds blocks 3 and 4
)

# --------------------------------------------------------------------------------------------- ops


class SepConvStack(nn.Sequential):
    """Two (ReLU, depthwise kxk, 1x1, BN) layers; the first strides and maps c_in -> c_out (darts.SepConv keeps
    c_in through its first layer instead; the two agree when c_in == c_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__(DilConv(c_in, c_out, kernel, stride, kernel // 2, 1),
                         DilConv(c_out, c_out, kernel, 1, kernel // 2, 1))


def make_op(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """Op `name` from `c_in` to `c_out` channels (see the module docstring)."""
    if name.startswith("sep_"):
        return SepConvStack(c_in, c_out, int(name[-1]), stride)
    if name in ("avg_3x3", "max_3x3"):
        pool = (nn.AvgPool2d(3, stride, padding=1, count_include_pad=False) if name == "avg_3x3"
                else nn.MaxPool2d(3, stride, padding=1))
        if c_in == c_out:
            return pool
        return nn.Sequential(pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    if name == "identity":
        return nn.Identity() if stride == 1 and c_in == c_out else ReLUConvBN(c_in, c_out, 1, stride, 0)
    raise ValueError(f"unknown op {name!r}")


# --------------------------------------------------------------------------------------------- cells, network


class Cell(nn.Module):
    """One NASNet cell with `filters` channels per block. `c_older` is h_{i-1}'s width, None where there is no
    h_{i-1} (the first stem cell reads h_i's raw input in its place); `older_larger`: h_{i-1} is at twice the
    resolution of h_i."""

    def __init__(self, spec: CellSpec, c_older: int | None, c_newer: int, filters: int, reduction: bool,
                 older_larger: bool):
        super().__init__()
        spec.check()
        if c_older is None:
            self.pre_older: nn.Module = nn.Identity()
            c_state0 = c_newer
        elif older_larger:
            self.pre_older = FactorizedReduce(c_older, filters)
            c_state0 = filters
        else:
            self.pre_older = nn.Identity() if c_older == filters else ReLUConvBN(c_older, filters, 1, 1, 0)
            c_state0 = filters
        self.pre_newer = ReLUConvBN(c_newer, filters, 1, 1, 0)
        if any(i < 2 for i in spec.concat) and (reduction or c_state0 != filters):
            raise ValueError("a cell input can be concatenated only in a normal cell whose inputs are adjusted "
                             "to the cell's width")
        widths = [c_state0, filters] + [filters] * len(spec.blocks)
        pairs = [pair for block in spec.blocks for pair in block]
        self.inputs = [index for _, index in pairs]
        self.droppable = [op != "identity" for op, _ in pairs]
        self.ops = nn.ModuleList(make_op(op, widths[index], filters, 2 if reduction and index < 2 else 1)
                                 for op, index in pairs)
        self.concat = spec.concat
        self.out_channels = filters * len(spec.concat)

    def forward(self, older: torch.Tensor | None, newer: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.pre_older(newer if older is None else older), self.pre_newer(newer)]
        for block in range(len(self.ops) // 2):
            total = None
            for k in (2 * block, 2 * block + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and drop_prob > 0 and self.droppable[k]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class NASNetA(nn.Module):
    """NASNet-A (N @ P) for ImageNet: stem conv, two reduction stem cells, three stacks of N normal cells
    separated by reduction cells, ReLU, global average pool, dropout, linear classifier."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, cells_per_stack: int = 4,
                 penultimate_filters: int = 1056, stem_filters: int = 32, dropout: float = 0.5,
                 drop_path: float = 0.0, normal: CellSpec = NORMAL_CELL, reduction: CellSpec = REDUCTION_CELL,
                 auxiliary: bool = False, image_size: int = 224):
        super().__init__()
        per_filter = 4 * len(normal.concat)  # the last stack has 4F filters per block
        if penultimate_filters % per_filter:
            raise ValueError(f"penultimate_filters={penultimate_filters} is not a multiple of {per_filter}")
        filters = penultimate_filters // per_filter
        self.drop_path_prob = drop_path
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_filters, 3, stride=2, padding=0, bias=False),
                                  nn.BatchNorm2d(stem_filters))
        plan = [(reduction, int(filters * 0.25)), (reduction, int(filters * 0.5))]  # stem cells
        for stack in range(3):
            if stack:
                plan.append((reduction, filters * 2 ** stack))
            plan.extend([(normal, filters * 2 ** stack)] * cells_per_stack)
        older: tuple[int, int] | None = None  # (channels, number of halvings) of h_{i-1}
        newer = (stem_filters, 0)
        self.cells = nn.ModuleList()
        for spec, cell_filters in plan:
            is_reduction = spec is reduction
            cell = Cell(spec, None if older is None else older[0], newer[0], cell_filters, is_reduction,
                        older is not None and older[1] < newer[1])
            self.cells.append(cell)
            older, newer = newer, (cell.out_channels, newer[1] + int(is_reduction))
        self.num_features = newer[0]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)
        # after the cell before the second reduction of the body: the last normal cell of the second stack
        self.aux_after = 2 + 2 * cells_per_stack if auxiliary else None
        self.aux_head = self._aux_head(in_chans, image_size, num_classes) if auxiliary else None
        for m in self.modules():  # He init (fan_out), as TF-slim's variance_scaling_initializer(FAN_OUT)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _aux_head(self, in_chans: int, image_size: int, num_classes: int) -> nn.Module:
        with torch.no_grad():
            older, newer = None, self.stem(torch.zeros(1, in_chans, image_size, image_size))
            for cell in self.cells[:self.aux_after + 1]:
                older, newer = newer, cell(older, newer, 0.0)
        channels, height, width = newer.shape[1:]
        pool: nn.Module = nn.AvgPool2d(5, stride=3) if min(height, width) >= 5 else nn.Identity()
        if min(height, width) >= 5:
            height, width = (height - 5) // 3 + 1, (width - 5) // 3 + 1
        return nn.Sequential(nn.ReLU(), pool, nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128),
                             nn.ReLU(inplace=True), nn.Conv2d(128, 768, (height, width), bias=False),
                             nn.BatchNorm2d(768), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(768, num_classes))

    def _run_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        older, newer, aux = None, self.stem(x), None
        for i, cell in enumerate(self.cells):
            prob = self.drop_path_prob * (i + 1) / len(self.cells) if self.training else 0.0
            older, newer = newer, cell(older, newer, prob)
            if i == self.aux_after and self.training:
                aux = self.aux_head(newer)
        return F.relu(newer), aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_cells(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features, aux = self._run_cells(x)
        logits = self.classifier(self.dropout(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)))
        return (logits, aux) if aux is not None else logits


# --------------------------------------------------------------------------------------------- registry


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise RecipeError(f"model.kwargs.{name}: expected a probability in [0, 1), got {value!r}")
    return float(value)


@register("nasnet_a_mobile", family="nas",
          description="NASNet-A Mobile (4 @ 1056), Zoph et al. 2018; auxiliary head on request",
          published=Published(params_m=5.3, macs_m=564, resolution=224,
                               source="Zoph et al. 2018, Table 2 (NASNet-A (4 @ 1056))"))
def nasnet_a_mobile(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, drop_path: float = 0.0,
                    dropout: float = 0.5, auxiliary: bool = False) -> nn.Module:
    """NASNet-A (4 @ 1056); global pooling, so inputs from 32 px work (`image_size` sizes the auxiliary head).
    `drop_path`: ScheduledDropPath probability (see the module docstring); `dropout`: before the classifier;
    `auxiliary`: TF-slim's auxiliary head (training returns (logits, auxiliary logits))."""
    return NASNetA(num_classes, in_chans, dropout=_probability("dropout", dropout),
                   drop_path=_probability("drop_path", drop_path), auxiliary=bool(auxiliary), image_size=image_size)
