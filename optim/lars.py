"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, Algorithm 1).

For every adapted layer, with global lr gamma, momentum m and weight decay beta:

    local_lr = trust_coefficient * ||w|| / (||g|| + beta * ||w|| + eps)   (1 if ||w|| or ||g|| is 0)
    v <- m * v + gamma * local_lr * (g + beta * w)
    w <- w - v                    (Nesterov: w <- w - (m * v + gamma * local_lr * (g + beta * w)))

`trust_clip` (LARC) replaces local_lr by min(local_lr / gamma, 1), so a layer
never moves faster than the global lr. Param groups with `lars_adapt: False`
(biases and BatchNorm parameters, as in the MLPerf reference) get neither the
adaptation nor weight decay: v <- m * v + gamma * g.
Norms are computed for all layers at once with torch._foreach_norm.
"""

import torch

from optim._common import LayerwiseOptimizer, trust_ratios


class LARS(LayerwiseOptimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 0.0, nesterov: bool = False,
                 trust_clip: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0 or eps < 0:
            raise ValueError("LARS needs lr, momentum, weight_decay, eps >= 0 and trust_coefficient > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, trust_clip=trust_clip, lars_adapt=True)
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
        lr, m, local = group["lr"], group["momentum"], None
        if group["lars_adapt"]:
            wd = group["weight_decay"]
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            local = trust_ratios(w_norm, g_norm, group["trust_coefficient"], g_norm + wd * w_norm, group["eps"])
            if group["trust_clip"]:
                local = torch.clamp(local / lr, max=1.0) if lr > 0 else torch.ones_like(local)
            d = torch._foreach_add(grads, params, alpha=wd) if wd else torch._foreach_mul(grads, 1.0)
            torch._foreach_mul_(d, list((local * lr).unbind()))
        else:
            d = torch._foreach_mul(grads, lr)
        if m == 0:
            torch._foreach_sub_(params, d)
            return local
        bufs = self.momentum_buffers(params)
        torch._foreach_mul_(bufs, m)
        torch._foreach_add_(bufs, d)
        if group["nesterov"]:
            torch._foreach_add_(params, bufs, alpha=-m)
            torch._foreach_sub_(params, d)
        else:
            torch._foreach_sub_(params, bufs)
        return local
