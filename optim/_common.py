"""Small helpers the optimizers share."""

import torch


def grouped_params(group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The group's parameters that have a gradient, and those gradients (sparse gradients are refused)."""
    params, grads = [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("sparse gradients are not supported")
        params.append(p)
        grads.append(p.grad)
    return params, grads


def trust_ratios(w_norm: torch.Tensor, g_norm: torch.Tensor, coefficient: float,
                 denominator: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    """coefficient * ||w|| / (denominator + eps) per layer (denominator defaults to ||g||);
    1 where ||w|| or ||g|| is zero (You et al.)."""
    ratio = coefficient * w_norm / ((g_norm if denominator is None else denominator) + eps)
    return torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
