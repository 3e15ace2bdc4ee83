"""Parameters and multiply-adds of a model, counted the same way for every catalogue entry.

Multiply-adds come from torch's FlopCounterMode (it counts 2 FLOPs per
multiply-add of convolutions, linear layers and matrix products, groups
included), halved. Like the papers' tables, only those products count:
BatchNorm, activations, pooling and additions are left out. The forward pass
runs on the meta device, so no arithmetic is done and even large models at
their full resolution count in milliseconds.
"""

import functools

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_chans: int = 3, resolution: int = 224) -> int:
    """Multiply-adds of one forward pass of one image (eval mode). `model` may live on the meta device."""
    return count_macs_of(model, (1, in_chans, resolution, resolution))


def count_macs_of(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of `module` (eval mode) on an input of `input_shape`."""
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(input_shape, device=device))
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2


@functools.cache  # deterministic; `bigbatch models` and the catalogue tests share it
def measure(builder, num_classes: int = 1000, in_chans: int = 3, resolution: int = 224) -> tuple[int, int]:
    """(parameters, multiply-adds) of `builder(...)`, built on the meta device (or on CPU when a builder's
    initialisation needs real values, as torchvision's RegNet does)."""
    try:
        with torch.device("meta"):
            model = builder(num_classes=num_classes, in_chans=in_chans, image_size=resolution)
        return count_params(model), count_macs(model, in_chans, resolution)
    except (NotImplementedError, RuntimeError):
        model = builder(num_classes=num_classes, in_chans=in_chans, image_size=resolution)
        return count_params(model), count_macs(model, in_chans, resolution)
