"""A check every model test makes: one forward/backward on a batch, right output shape, finite gradients."""

import torch
import torch.nn as nn


def assert_trains(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_classes)
    out.logsumexp(1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
