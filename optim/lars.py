"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, Algorithm 1).

For every adapted layer, with global lr gamma, momentum m and weight decay beta:

    local_lr = trust_coefficient * ||w|| / (||g|| + beta * ||w|| + eps)   (1 if ||w|| or ||g|| is 0)
    v <- m * v + gamma * local_lr * (g + beta * w)
    w <- w - v                    (Nesterov: w <- w - (m * v + gamma * local_lr * (g + beta * w)))

`trust_clip` (LARC) replaces local_lr by min(local_lr / gamma, 1), so a layer
never moves faster than the global lr. Param groups with `lars_adapt: False`
(biases and BatchNorm parameters, as in the MLPerf reference) get neither the
adaptation nor weight decay: v <- m * v + gamma * g.
Norms are computed for all layers at once with torch._foreach_norm. A step keeps
the adapted layers' local_lr (after the LARC clip) in their group as
`group["trust_ratios"]`.
"""

import torch

from ._common import LayerwiseOptimizer, momentum_update, trust_ratios


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
        lr, wd = group["lr"], group["weight_decay"]
        bufs = self.momentum_buffers(params) if group["momentum"] else None
        if not group["lars_adapt"]:
            momentum_update(params, grads, bufs, group["momentum"], lr, 0.0, group["nesterov"])
            return None
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        local = trust_ratios(w_norm, g_norm, group["trust_coefficient"], g_norm + wd * w_norm, group["eps"])
        if group["trust_clip"]:
            local = torch.clamp(local / lr, max=1.0) if lr > 0 else torch.ones_like(local)
        g_scale = local * lr  # d = lr * local_lr * (g + wd * w)
        momentum_update(params, grads, bufs, group["momentum"], list(g_scale.unbind()),
                        list((g_scale * wd).unbind()) if wd else 0.0, group["nesterov"])
        return local
