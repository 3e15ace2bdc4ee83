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


Scale = float | list[torch.Tensor]  # one float for the group, or one 0-dim tensor per parameter


def momentum_update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None,
                    momentum: float, g_scale: Scale, w_scale: Scale, nesterov: bool = False,
                    buffer_decay: float | None = None, foreach: bool | None = None) -> None:
    """The heavy-ball update shared by SGD and LARS, with the lr inside the buffer:

        d = g_scale * g + w_scale * w ;  v <- decay * v + d ;  w <- w - v   (Nesterov: w <- w - (momentum * v + d))

    `decay` is `buffer_decay`, by default the momentum (SGD's momentum correction
    passes momentum x lr_t / lr_t-1).

    On CUDA it runs as multi-tensor (foreach) kernels. On CPU, where foreach kernels
    are not fused and run slower than in-place per-tensor ops (bench/optim_step.py),
    it updates each tensor in place without temporaries (no buffer: w <- w - d).
    `foreach` forces one path (None: by device).
    """
    if params[0].is_cuda if foreach is None else foreach:
        d = torch._foreach_mul(grads, g_scale)
        if not _is_zero(w_scale):
            torch._foreach_add_(d, torch._foreach_mul(params, w_scale))
        if bufs is None:
            torch._foreach_sub_(params, d)
            return
        torch._foreach_mul_(bufs, momentum if buffer_decay is None else buffer_decay)
        torch._foreach_add_(bufs, d)
        if nesterov:
            torch._foreach_add_(params, bufs, alpha=-momentum)
            torch._foreach_sub_(params, d)
        else:
            torch._foreach_sub_(params, bufs)
        return
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        a = g_scale if isinstance(g_scale, float) else g_scale[i]
        b = w_scale if isinstance(w_scale, float) else w_scale[i]
        if bufs is not None:
            v = bufs[i]
            v.mul_(momentum if buffer_decay is None else buffer_decay)
            _axpy(v, g, a, 1.0)
            if not _is_zero(b):
                _axpy(v, p, b, 1.0)
            if not nesterov:
                p.sub_(v)
                continue
        if not _is_zero(b):  # w <- w - d, d = a g + b w: scale w first so d uses the old w
            p.mul_(1 - b)
        _axpy(p, g, a, -1.0)
        if bufs is not None:
            p.sub_(bufs[i], alpha=momentum)


def _is_zero(scale: Scale) -> bool:
    return isinstance(scale, float) and scale == 0.0


def _axpy(y: torch.Tensor, x: torch.Tensor, a: float | torch.Tensor, sign: float) -> None:
    """y += sign * a * x in place; `a` a float or a 0-dim tensor (no host sync)."""
    if isinstance(a, float):
        y.add_(x, alpha=sign * a)
    else:
        y.addcmul_(x, a, value=sign)


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Runs the closure, then `_step_group(group, params, grads)` for every group with gradients.

    A group step may return the trust ratios of its adapted layers; the step keeps them in the group as
    `group["trust_ratios"]` (a 1-D tensor on the parameters' device, no host sync) and drops the key from a
    group it did not adapt. Kept in the param groups, they travel with `state_dict`, `copy.deepcopy` and
    pickling; `last_trust_ratios(optimizer)` reads them.
    """

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = grouped_params(group)
            ratios = self._step_group(group, params, grads) if params else None
            if ratios is None:
                group.pop("trust_ratios", None)
            else:
                group["trust_ratios"] = ratios  # a new tensor each step: a state_dict taken earlier keeps its own
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, then each group's trust ratios moved to its parameters' device (torch moves the
        per-parameter state only). A state_dict written before the ratios were kept loads as it is."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if "trust_ratios" in group and group["params"]:
                group["trust_ratios"] = group["trust_ratios"].to(group["params"][0].device)

    def momentum_buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each parameter's momentum buffer, created as zeros on first use."""
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return [self.state[p]["momentum_buffer"] for p in params]


def last_trust_ratios(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """The trust ratios of the optimizer's last step, every group's `trust_ratios` in group order, as one 1-D
    tensor on the device (no host sync); None when no group has any (SGD, excluded groups, before a step)."""
    ratios = [group["trust_ratios"] for group in optimizer.param_groups if "trust_ratios" in group]
    return torch.cat(ratios) if ratios else None
