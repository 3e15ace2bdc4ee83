"""Split a model's parameters into (weight decay + layer adaptation) and (neither).

Biases and normalisation parameters (anything with ndim <= 1, or a name ending
in `.bias`) usually get no weight decay and no LARS/LAMB adaptation: Goyal et
al. and the MLPerf LARS reference exclude them. Recipes can add name patterns.
"""

import fnmatch
from collections.abc import Iterable

import torch.nn as nn


def is_excluded(name: str, ndim: int, patterns: Iterable[str] = (), norm_and_bias: bool = True) -> bool:
    """True for parameters that get no weight decay and no layer adaptation."""
    default = norm_and_bias and (ndim <= 1 or name.endswith(".bias"))
    return default or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def split_param_groups(model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool = True,
                       exclude_patterns: Iterable[str] = ()) -> list[dict]:
    """[{params, weight_decay, lars_adapt: True}, {params, weight_decay: 0, lars_adapt: False}] (empty groups dropped)."""
    patterns = list(exclude_patterns)
    adapted, excluded = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (excluded if is_excluded(name, p.ndim, patterns, exclude_norm_and_bias) else adapted).append(p)
    groups = [{"params": adapted, "weight_decay": weight_decay, "lars_adapt": True},
              {"params": excluded, "weight_decay": 0.0, "lars_adapt": False}]
    return [g for g in groups if g["params"]]
