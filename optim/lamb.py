"""LAMB: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2).

    m <- b1 * m + (1 - b1) * g ;  v <- b2 * v + (1 - b2) * g^2
    m_hat = m / (1 - b1^t) ;      v_hat = v / (1 - b2^t)          (bias correction, on by default)
    u = m_hat / (sqrt(v_hat) + eps) + wd * w                         (decoupled weight decay)
    w <- w - lr * (||w|| / ||u||) * u                                (ratio 1 if ||w|| or ||u|| is 0)

Param groups with `lars_adapt: False` (biases, normalisation) use the plain Adam
direction with no trust ratio and no weight decay: w <- w - lr * m_hat / (sqrt(v_hat) + eps).
A step keeps the adapted layers' ||w|| / ||u|| in their group as `group["trust_ratios"]`.
"""

import torch

from ._common import LayerwiseOptimizer, trust_ratios


class LAMB(LayerwiseOptimizer):
    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, bias_correction: bool = True):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError("LAMB needs lr, eps, weight_decay >= 0 and betas in [0, 1)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, lars_adapt=True)
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        exp_avg, exp_avg_sq, t = self._moments(params)
        torch._foreach_lerp_(exp_avg, grads, 1 - b1)
        torch._foreach_mul_(exp_avg_sq, b2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - b2)
        c1, c2 = (1 - b1 ** t, 1 - b2 ** t) if group["bias_correction"] else (1.0, 1.0)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, c2 ** 0.5)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(exp_avg, denom)
        torch._foreach_div_(update, c1)
        if not group["lars_adapt"]:
            torch._foreach_mul_(update, lr)
            torch._foreach_sub_(params, update)
            return None
        if group["weight_decay"]:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        ratio = trust_ratios(torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(update)), 1.0)
        torch._foreach_mul_(update, list((ratio * lr).unbind()))
        torch._foreach_sub_(params, update)
        return ratio

    def _moments(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        avgs, sqs, step = [], [], 0
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = state["step"]
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
        return avgs, sqs, step
