"""The edge ops of the DARTS evaluation network (Liu et al. 2019), following the paper and its public code,
which differs from the search network (NASNet's cells reuse ReLUConvBN, DilConv and FactorizedReduce):
  - sep_conv_kxk: (ReLU, depthwise kxk conv, 1x1 conv, BN) twice, the stride in the first depthwise conv;
  - dil_conv_kxk: ReLU, depthwise kxk conv with dilation 2, 1x1 conv, BN (receptive field 5x5 / 9x9);
  - max_pool_3x3 / avg_pool_3x3: plain pooling (padding 1; average excludes the padding) with NO BatchNorm.
    The search network appends a non-affine BN to pools only so that they compete fairly with the
    BN-ended convs in the mixed op; the evaluation network drops it;
  - skip_connect: identity, or in a reduction cell (stride 2) a factorized reduce: two stride-2 1x1 convs,
    the second on the input shifted by one pixel, concatenated, then BN.
All BatchNorms of the evaluation network are affine.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.errors import RecipeError


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class SepConv(nn.Sequential):
    """Two stacked dilation-1 DilConvs; only the first one strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1), DilConv(c_in, c_out, kernel, 1, padding, 1))


class FactorizedReduce(nn.Module):
    """Halve the resolution without discarding 3/4 of the pixels: two stride-2 1x1 convs, the second on the
    input shifted by one pixel, each giving half the output channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 2:
            raise RecipeError(f"model.kwargs: factorized reduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # Pad the shifted copy back to the input size: same output as the reference code on even sizes
        # (the padded pixel is never sampled) and matching sizes (ceil(n/2)) on odd ones.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    """Edge op `name` on `c` channels; stride 2 on the edges of a reduction cell that read a previous cell."""
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, 2 * (k // 2), dilation=2)
    raise ValueError(f"unknown op {name!r}")
