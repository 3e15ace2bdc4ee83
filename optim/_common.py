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


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Runs the closure, then `_step_group(group, params, grads)` for every group with gradients.

    A group step may return the trust ratios of its adapted layers; the step
    keeps them in `last_trust_ratios` (None when no layer was adapted).
    """

    last_trust_ratios: torch.Tensor | None = None

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ratios = []
        for group in self.param_groups:
            params, grads = grouped_params(group)
            if params:
                group_ratios = self._step_group(group, params, grads)
                if group_ratios is not None:
                    ratios.append(group_ratios)
        self.last_trust_ratios = torch.cat(ratios) if ratios else None
        return loss

    def momentum_buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each parameter's momentum buffer, created as zeros on first use."""
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return [self.state[p]["momentum_buffer"] for p in params]
