"""Gradient clipping (train.clip_grad) on the averaged, unscaled gradient, through timm's dispatch_clip_grad.

It runs after the all-reduce (every rank clips the same gradient the same way)
and after GradScaler's unscaling, so the bound is in the gradient's own units.
AGC (Brock et al. 2021) leaves the final classifier unclipped, as the paper
and timm's train.py do.
"""

import torch.nn as nn

from bigbatch.trainer.step.hooks import Hook


def classifier(model: nn.Module) -> nn.Module | None:
    """The final classifier: timm's get_classifier() where the model has one, else the last nn.Linear outside an
    auxiliary head (a model whose classifier is a convolution has none: AGC then clips every layer)."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and "aux" not in name]
    return linears[-1] if linears else None


def clipped_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    head = classifier(model) if mode == "agc" else None
    if head is None:
        return params
    skip = {id(p) for p in head.parameters()}
    return [p for p in params if id(p) not in skip]


def clip_gradients(params: list[nn.Parameter], value: float, mode: str) -> None:
    from timm.utils import dispatch_clip_grad

    dispatch_clip_grad(params, value, mode=mode)


class ClipGradients(Hook):
    """After the all-reduce: unscale (once per step), then clip `value` by `mode` (norm, value or agc)."""

    def __init__(self, model: nn.Module, value: float, mode: str):
        self.params, self.value, self.mode = clipped_parameters(model, mode), value, mode

    def after_all_reduce(self, ctx) -> None:
        ctx.unscale()
        clip_gradients(self.params, self.value, self.mode)
