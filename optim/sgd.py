"""SGD with momentum in the "lr inside the buffer" form, with momentum correction (Goyal et al. 2017, section 2.4).

    v <- m * v + lr * (g + wd * w)
    w <- w - v                          (Nesterov: w <- w - (m * v + lr * (g + wd * w)))

When the lr changes from lr_t to lr_{t+1} the buffer still holds the old lr, so
it is rescaled first: v <- (lr_{t+1} / lr_t) * v. With the correction this form
follows torch.optim.SGD's "lr outside" form exactly; without it the two differ
whenever the lr moves (most of all during warmup). A step after an lr of 0 is not
corrected (the buffer holds nothing to rescale).
"""

import torch

from ._common import LayerwiseOptimizer, momentum_update


class SGD(LayerwiseOptimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, momentum_correction: bool = True):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        momentum_correction=momentum_correction)
        super().__init__(params, defaults)

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
        last_lr, decay = group.get("last_lr"), m
        if group["momentum_correction"] and last_lr and lr != last_lr:
            decay = m * lr / last_lr  # v <- m * (lr_t / lr_t-1) * v + d: the correction folded into this step
        bufs = self.momentum_buffers(params) if m else None
        momentum_update(params, grads, bufs, m, lr, lr * wd, group["nesterov"], buffer_decay=decay)
        group["last_lr"] = lr
