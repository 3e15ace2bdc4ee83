"""Stochastic depth (Huang et al. 2016) for the in-house families with residual branches: timm's DropPath,
with timm's rule for the rates, linear in the block index from 0 at the first block to the rate at the last."""

import torch.nn as nn


def depth_rates(rate: float, blocks: int) -> list[float]:
    if blocks <= 1:
        return [rate] * blocks
    return [rate * i / (blocks - 1) for i in range(blocks)]


def drop_path_module(prob: float) -> nn.Module:
    """timm's DropPath (a whole sample's branch zeroed with probability `prob`, the rest scaled by 1/(1-prob));
    the identity when `prob` is 0."""
    if not prob:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(prob)
