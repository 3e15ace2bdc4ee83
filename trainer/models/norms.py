"""model.norm: swap every BatchNorm of a built model for GroupNorm, Batch Renormalization or LayerNorm.

The lecture's normalization slides: at a small per-worker batch, cross-replica
BatchNorm > GroupNorm / Batch Renorm > plain BatchNorm / LayerNorm. GroupNorm
(Wu & He 2018) and LayerNorm-over-channels (timm's LayerNorm2d, as ConvNeXt)
come from torch and timm; torch has no Batch Renormalization, so it is written
here from the paper (Ioffe 2017, Algorithm 1), with its r_max / d_max schedule
(section 4: r_max = 1, d_max = 0 for the first steps, then relaxed linearly).
A replacement inherits the BatchNorm's affine parameters (and so a zero-init
of the last gamma of a residual branch) and its `affine` choice.
"""

import math

import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import ModelConfig, RenormConfig

NORMS = ("batch", "group", "batch_renorm", "layer")


class BatchRenorm(nn.Module):
    """Batch Renormalization over dimension 1 of (N, C, ...) inputs.

    Training (Algorithm 1): with the batch's mean mu_B and sigma_B = sqrt(var_B + eps),
        r = clip(sigma_B / sigma, 1 / r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max)
    (both held constant for the gradient), x_hat = (x - mu_B) / sigma_B * r + d, y = gamma x_hat + beta, and
    the moving mu, sigma move towards mu_B, sigma_B by `momentum`. Inference: y = gamma (x - mu) / sigma + beta.
    `limits` holds (r_max, d_max): a buffer that RenormSchedule updates in place every step, so a compiled model
    sees new values without recompiling."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.01, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("limits", torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dims)
            std = torch.sqrt(x.var(dims, unbiased=False) + self.eps)
            with torch.no_grad():
                r_max, d_max = self.limits[0], self.limits[1]
                r = torch.minimum(torch.maximum(std / self.running_std, 1 / r_max), r_max)
                d = torch.minimum(torch.maximum((mean - self.running_mean) / self.running_std, -d_max), d_max)
                self.running_mean += self.momentum * (mean.detach() - self.running_mean)
                self.running_std += self.momentum * (std.detach() - self.running_std)
            y = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        else:
            y = (x - self.running_mean.view(shape)) / self.running_std.view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def renorm_limits(cfg: RenormConfig, step: int) -> tuple[float, float]:
    """(r_max, d_max) at optimizer step `step`: 1 and 0 until start_step, then linear to their final values at
    r_max_step and d_max_step (Ioffe 2017 section 4: 5k, 40k and 25k steps)."""
    def ramp(final: float, start_value: float, end_step: int) -> float:
        if step <= cfg.start_step:
            return start_value
        span = max(end_step - cfg.start_step, 1)
        return start_value + (final - start_value) * min(1.0, (step - cfg.start_step) / span)

    return ramp(cfg.r_max, 1.0, cfg.r_max_step), ramp(cfg.d_max, 0.0, cfg.d_max_step)


class RenormSchedule:
    """Sets every BatchRenorm's (r_max, d_max) before each optimizer step, when they change: by filling the
    buffers with the numbers (a kernel argument each), not by copying a tensor built on the host, which on a GPU
    is a blocking copy per layer and step."""

    def __init__(self, cfg: RenormConfig, model: nn.Module):
        self.cfg = cfg
        self.modules = [m for m in model.modules() if isinstance(m, BatchRenorm)]
        self.current: tuple[float, float] | None = None

    def at(self, step: int) -> None:
        limits = renorm_limits(self.cfg, step)
        if limits == self.current:
            return
        for module in self.modules:
            for slot, value in enumerate(limits):
                module.limits[slot].fill_(value)
        self.current = limits


def _groups(channels: int, wanted: int) -> int:
    """GroupNorm needs groups dividing the channels: `wanted`, or the largest divisor of the channels below it."""
    return math.gcd(channels, wanted)


def _replacement(bn: nn.modules.batchnorm._BatchNorm, cfg: ModelConfig) -> nn.Module:
    from timm.layers import LayerNorm2d

    c, affine = bn.num_features, bn.affine
    if cfg.norm == "group":
        new = nn.GroupNorm(_groups(c, cfg.norm_groups), c, eps=bn.eps, affine=affine)
    elif cfg.norm == "layer":
        new = LayerNorm2d(c, eps=bn.eps) if isinstance(bn, nn.BatchNorm2d) else nn.GroupNorm(1, c, eps=bn.eps)
        if not affine:
            new.weight, new.bias = None, None  # LayerNorm2d has no affine switch: drop them
    else:
        new = BatchRenorm(c, eps=bn.eps, momentum=cfg.renorm.momentum, affine=affine)
    if affine and getattr(new, "weight", None) is not None:
        with torch.no_grad():
            new.weight.copy_(bn.weight)
            new.bias.copy_(bn.bias)
    return new


def replace_batchnorm(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Every BatchNorm of `model` becomes the recipe's norm (in place; returns the model)."""
    if cfg.norm == "batch":
        return model
    found = False
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, _replacement(child, cfg))
                found = True
    if not found:
        raise RecipeError(f"model.norm: {cfg.name} has no BatchNorm to replace with {cfg.norm}")
    return model
