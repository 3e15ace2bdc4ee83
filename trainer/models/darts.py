"""DARTS evaluation networks (Liu et al. 2019, "DARTS: Differentiable Architecture Search") built from a
cell genotype given as data, so a recipe can train any searched cell without new code.

The genotype (its recipe forms, parsing and validation) is in trainer/models/darts_genotype.py, the edge ops
of the evaluation network in trainer/models/darts_ops.py; their public names are importable from here too.
A cell's node is the sum of its two edges; the cell's output concatenates the nodes in `*_concat`.

Drop-path (stochastic depth per edge, as in the paper's CIFAR training; trainer/models/stochastic_depth.py)
zeroes a whole edge per sample with probability `drop_path_prob` during training; identity edges are never
dropped. The paper ramps the probability linearly from 0 over training; here it is the constant
`drop_path_prob` attribute (a schedule can assign it between epochs).

The auxiliary head (optional, off by default) is built only with `auxiliary=True`; in training `forward`
then returns (logits, auxiliary logits) and the loop adds the auxiliary loss with weight
`train.auxiliary_weight` (the paper's 0.4). In evaluation it returns the logits alone. Published counts
exclude it.

Counts against the paper (trainer.models.complexity: conv + FC multiply-adds; FC layer included, no aux head):
  - darts_v2_cifar: 3,349,342 parameters vs "3.3M" (+1.5%, inside the printed precision); the authors' code,
    whose count also skips the auxiliary head, builds the same number. 528.4M multiply-adds at 32 (unpublished).
  - darts_v2_imagenet: 4,718,752 parameters (769k of them the 1000-way FC) vs 4.7M (+0.4%); 529.9M multiply-adds
    at 224 vs the published 574M (-7.7%). The authors' code gives the same 529.9M; BN, ReLU, pooling and the
    node additions add only ~12M more, so the paper's 574M follows some other, unpublished, counting
    (others report the same gap: quark0/darts issue #46, 523M conv+FC, 544.6M with ptflops).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.darts_genotype import (
    DARTS_V2,
    NAMED_GENOTYPES,
    OP_NAMES,
    Genotype,
    parse_genotype,
)
from bigbatch.trainer.models.darts_ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv, make_op
from bigbatch.trainer.models.registry import Published, register
from bigbatch.trainer.models.stochastic_depth import drop_path

__all__ = ["DARTS_V2", "NAMED_GENOTYPES", "OP_NAMES", "AuxiliaryHead", "Cell", "DilConv", "FactorizedReduce",
           "Genotype", "NetworkCIFAR", "NetworkImageNet", "ReLUConvBN", "SepConv", "darts", "darts_v2_cifar",
           "darts_v2_imagenet", "drop_path", "make_op", "parse_genotype"]

# --------------------------------------------------------------------------------------------- cells, networks

class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        # The cell two back is at twice this resolution when the previous cell reduced.
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.inputs = [index for _, index in pairs]
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and index < 2 else 1) for op, index in pairs)
        self.reduction = reduction
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = None
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Classifier on the output of the 2/3-depth reduction cell (8x8 on CIFAR, 7x7 on ImageNet-224).

    The ImageNet head of the paper's experiments lacks the BN after its 2x2 conv (`final_bn=False`): the
    authors' code notes the omission as a typo kept for consistency with the published runs."""

    def __init__(self, c: int, num_classes: int, pool_stride: int, final_bn: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), *([nn.BatchNorm2d(768)] if final_bn else []), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class _Network(nn.Module):
    """Stem, `layers` cells (reductions at 1/3 and 2/3 of the depth), global pool, linear classifier."""

    def _build_cells(self, genotype: Genotype, c_stem_pp: int, c_stem_p: int, c: int, layers: int,
                     reduction_prev: bool, num_classes: int, auxiliary: bool, aux_stride: int,
                     aux_final_bn: bool) -> None:
        if layers < 1:
            raise RecipeError(f"model.kwargs.layers: expected at least 1 cell, got {layers}")
        c_pp, c_p, c_curr = c_stem_pp, c_stem_p, c
        self.reduction_at = sorted({layers // 3, 2 * layers // 3})
        self.aux_at = 2 * layers // 3
        self.cells = nn.ModuleList()
        c_aux = c_p
        for i in range(layers):
            reduction = i in self.reduction_at
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_at:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes, aux_stride, aux_final_bn) if auxiliary else None
        self.classifier = nn.Linear(c_p, num_classes)
        self.num_features = c_p

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits): the auxiliary ones only in training with the head built, else None."""
        s0, s1 = self._stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_at and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1)), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logits; in training with the auxiliary head built, (logits, auxiliary logits), so the head
        takes part in the loss (trainer.build.AuxiliaryLoss) and DDP sees every parameter used."""
        logits, aux = self.forward_with_aux(x)
        return logits if aux is None else (logits, aux)


def _check_channels(init_channels: int) -> None:
    if init_channels < 2 or init_channels % 2:
        raise RecipeError(f"model.kwargs.init_channels: expected an even count >= 2, got {init_channels}")


def _check_drop_path(drop_path_prob: float) -> None:
    if not 0.0 <= drop_path_prob < 1.0:
        raise RecipeError(f"model.kwargs.drop_path: expected a probability in [0, 1), got {drop_path_prob}")


class NetworkCIFAR(_Network):
    """CIFAR setting: 3x3 conv stem to 3*C channels at full resolution, then the cells."""

    def __init__(self, genotype: Genotype, num_classes: int = 10, init_channels: int = 36, layers: int = 20,
                 auxiliary: bool = False, drop_path: float = 0.0, in_chans: int = 3, stem_multiplier: int = 3):
        super().__init__()
        _check_channels(init_channels)
        _check_drop_path(drop_path)
        self.drop_path_prob = drop_path
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        self._build_cells(genotype, c_stem, c_stem, init_channels, layers, False, num_classes, auxiliary, 3, True)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_Network):
    """Mobile ImageNet setting: two stride-2 stems and a third stride-2 conv, so the cells start at 1/8 of the
    input (28x28 at 224); the first cell reads the 1/4-resolution stem output through a factorized reduce."""

    def __init__(self, genotype: Genotype, num_classes: int = 1000, init_channels: int = 48, layers: int = 14,
                 auxiliary: bool = False, drop_path: float = 0.0, in_chans: int = 3):
        super().__init__()
        _check_channels(init_channels)
        _check_drop_path(drop_path)
        self.drop_path_prob = drop_path
        c = init_channels
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_chans, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True), nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c))
        self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(c))
        self._build_cells(genotype, c, c, c, layers, True, num_classes, auxiliary, 2, False)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


# --------------------------------------------------------------------------------------------- registry

@register("darts_v2_cifar", family="nas",
          description="DARTS (second order) cell, CIFAR network: C=36, 20 cells (Liu et al. 2019)",
          published=Published(params_m=3.3, macs_m=None, resolution=32, classes=10,
                              source="Liu et al. 2019, Table 1 (DARTS second order, CIFAR-10)"))
def darts_v2_cifar(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                   drop_path: float = 0.0, auxiliary: bool = False) -> nn.Module:
    """The published CIFAR-10 model; `image_size` is not needed (global pooling)."""
    return NetworkCIFAR(parse_genotype(DARTS_V2, "darts_v2"), num_classes, 36, 20, auxiliary=auxiliary,
                        drop_path=drop_path, in_chans=in_chans)


@register("darts_v2_imagenet", family="nas",
          description="DARTS (second order) cell, mobile ImageNet network: C=48, 14 cells (Liu et al. 2019)",
          published=Published(params_m=4.7, macs_m=574, resolution=224, classes=1000,
                              source="Liu et al. 2019, Table 3"))
def darts_v2_imagenet(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                      drop_path: float = 0.0, auxiliary: bool = False) -> nn.Module:
    """The published ImageNet mobile-setting model."""
    return NetworkImageNet(parse_genotype(DARTS_V2, "darts_v2"), num_classes, 48, 14, auxiliary=auxiliary,
                           drop_path=drop_path, in_chans=in_chans)


@register("darts", family="nas", description="DARTS evaluation network from any genotype given in the recipe")
def darts(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, genotype: object = "darts_v2",
          setting: str = "cifar", layers: int | None = None, init_channels: int | None = None,
          drop_path: float = 0.0, auxiliary: bool = False) -> nn.Module:
    """`genotype`: dict, compact string or published name; `setting`: cifar (default C=36, 20 cells) or
    imagenet (C=48, 14 cells); `auxiliary`: build the auxiliary head (trained with train.auxiliary_weight)."""
    parsed = parse_genotype(genotype, "model.kwargs.genotype")
    if setting == "cifar":
        return NetworkCIFAR(parsed, num_classes, 36 if init_channels is None else init_channels,
                            20 if layers is None else layers, auxiliary=auxiliary, drop_path=drop_path,
                            in_chans=in_chans)
    if setting == "imagenet":
        return NetworkImageNet(parsed, num_classes, 48 if init_channels is None else init_channels,
                               14 if layers is None else layers, auxiliary=auxiliary, drop_path=drop_path,
                               in_chans=in_chans)
    raise RecipeError(f"model.kwargs.setting: expected 'cifar' or 'imagenet', got {setting!r}")
