"""Parameter groups: biases and normalisation parameters are excluded from decay and adaptation."""

import torch.nn as nn

from bigbatch.optim import split_param_groups


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_default_split():
    model = small_net()
    adapted, excluded = split_param_groups(model, weight_decay=1e-4)
    assert names(model, adapted) == ["0.weight", "3.weight"]
    assert names(model, excluded) == ["0.bias", "1.bias", "1.weight", "3.bias"]
    assert adapted["weight_decay"] == 1e-4 and adapted["lars_adapt"] is True
    assert excluded["weight_decay"] == 0.0 and excluded["lars_adapt"] is False


def test_patterns_and_switch():
    model = small_net()
    adapted, excluded = split_param_groups(model, 1e-4, exclude_patterns=["3.*"])
    assert names(model, adapted) == ["0.weight"]
    (everything,) = split_param_groups(model, 1e-4, exclude_norm_and_bias=False)
    assert len(everything["params"]) == 6
