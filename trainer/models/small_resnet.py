"""ResNet for small images (8-32 px): a 3x3 stem without max-pool, then basic-block stages.

The CIFAR-style ResNet of He et al. 2016 (section 4.2), with widths and depth as
arguments so the same builder serves 8x8 digits and 32x32 images.
"""

import torch
import torch.nn as nn

from bigbatch.trainer.models.registry import register


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, widths: tuple[int, ...], blocks_per_stage: int,
                 stem_stride: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stages.append(BasicBlock(in_ch, width, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("resnet_small", family="resnet", description="small-image ResNet, widths 16-32-64, 1 block per stage")
def resnet_small(num_classes: int, in_chans: int = 3, image_size: int = 32, widths: list[int] | None = None,
                 blocks_per_stage: int = 1, stem_stride: int = 1) -> nn.Module:
    """`stem_stride: 2` halves the stem's output (28x28 Fashion-MNIST -> 14x14): 4x fewer multiply-adds."""
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    return SmallResNet(num_classes, in_chans, tuple(widths or (16, 32, 64)), blocks_per_stage, stem_stride)


@register("resnet20_small", family="resnet", description="CIFAR ResNet-20 (He et al. 2016, 3 blocks per stage)")
def resnet20_small(num_classes: int, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    return SmallResNet(num_classes, in_chans, (16, 32, 64), blocks_per_stage=3)


@register("mlp", family="mlp", description="two-layer perceptron on flattened pixels (no BatchNorm)")
def mlp(num_classes: int, in_chans: int = 3, image_size: int = 32, hidden: int = 128, dropout: float = 0.0) -> nn.Module:
    features = in_chans * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))
