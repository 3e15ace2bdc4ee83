"""Stochastic depth (Huang et al. 2016): every model's drop path, in one place.

  - `drop_path`: the per-sample drop of the in-house NAS cells (DARTS per edge, NASNet's ScheduledDropPath):
    a whole sample zeroed with probability p, the kept ones scaled by 1/(1-p);
  - `drop_path_module` and `depth_rates`: the in-house families with residual branches use timm's DropPath,
    with timm's rule for the rates, linear in the block index from 0 at the first block to the rate at the last;
  - `probability_attribute`: which attribute of a module holds its drop probability (an in-house network's
    `drop_path_prob`, a timm DropPath's `drop_prob`, a torchvision StochasticDepth's `p`), what the training
    ramp (trainer/step/drop_path_ramp.py) sets each epoch.
"""

import torch
import torch.nn as nn


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Zero whole samples with probability `prob`, rescaling the kept ones so the expectation is unchanged."""
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


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


def probability_attribute(module: nn.Module) -> str | None:
    """The name of the attribute that holds `module`'s drop probability, or None if it has none."""
    from torchvision.ops import StochasticDepth

    if isinstance(module, StochasticDepth):
        return "p"
    for attr in ("drop_path_prob", "drop_prob"):
        if isinstance(getattr(module, attr, None), float):
            return attr
    return None
