"""Cross-replica BatchNorm written on the Collective interface, so it runs on CPU (gloo) as well as GPU.

torch.nn.SyncBatchNorm and Horovod's refuse CPU tensors. Here the forward pass
all-reduces, per channel, the sum, the sum of squares and the count (one
all_reduce), then normalises with the fused F.batch_norm kernel, so every
replica uses the statistics of the global batch and updates identical running
statistics; unequal per-replica batch sizes are handled by the counts. The sums
are of x - K with K the running mean (identical on every replica, and close to
the batch mean), so E[z^2] - E[z]^2 does not cancel catastrophically when the
mean is large against the spread. (torch.var_mean over N,H,W is ~15x slower on
CPU than two sums, which made it most of SyncBN's cost.) The backward pass
all-reduces the two gradient sums (sum of dy, sum of dy * x_hat, from one fused
native_batch_norm_backward pass) so the input gradient is that of BatchNorm over
the concatenated batch. Weight and bias gradients stay local: the data-parallel
gradient all-reduce sums them like any other parameter gradient.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from bigbatch.trainer.distributed.collective import Collective


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, collective):
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        channels = x.shape[1]
        shift = running_mean.detach().float() if running_mean is not None else xf.new_zeros(channels)
        z = xf - shift.view(shape)
        count = torch.full((1,), x.numel() / max(1, channels), dtype=torch.float32, device=x.device)
        stats = torch.cat([z.sum(dims), (z * z).sum(dims), count])
        del z
        collective.all_reduce(stats, op="sum")  # per-channel sum, sum of squares, and the count
        n = stats[-1]
        shifted_mean = stats[:channels] / n
        mean = shift + shifted_mean
        var = (stats[channels:2 * channels] / n - shifted_mean * shifted_mean).clamp_min(0)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (n / (n - 1).clamp_min(1))
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        w = None if weight is None else weight.float()
        b = None if bias is None else bias.float()
        y = F.batch_norm(xf, mean, var, w, b, False, 0.0, eps)  # normalise with the global statistics, fused
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd, n)
        ctx.collective = collective
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd, n = ctx.saved_tensors
        shape = [1, -1] + [1] * (x.dim() - 2)
        dy, xf = grad_out.float(), x.float()
        # sum(dy * (x - mean) * invstd) and sum(dy) in one fused pass (the kernel's weight and bias gradients)
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, xf, torch.ones_like(mean), None, None, mean, invstd, True, 0.0, [False, True, True])
        grad_weight = sum_dy_xhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.to(grad_out.dtype) if ctx.needs_input_grad[2] else None
        grad_input = None
        if ctx.needs_input_grad[0]:
            totals = ctx.collective.all_reduce(torch.cat([sum_dy, sum_dy_xhat]), op="sum")
            channels = x.shape[1]
            g_dy, g_dy_xhat = totals[:channels] / n, totals[channels:] / n
            scale = invstd if weight is None else invstd * weight.float()
            # dx = scale * (dy - g_dy - x_hat * g_dy_xhat), written as a per-channel A * dy + B * x + C
            coef_x = -scale * invstd * g_dy_xhat
            const = scale * (invstd * g_dy_xhat * mean - g_dy)
            grad_input = (xf * coef_x.view(shape)).add_(const.view(shape)).addcmul_(dy, scale.view(shape))
            grad_input = grad_input.to(x.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every replica of `collective` (any input rank >= 2)."""

    def __init__(self, num_features: int, collective: Collective, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.collective = collective

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        running = self.training and self.track_running_stats
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.running_mean if running else None,
                                            self.running_var if running else None, self.eps, momentum,
                                            self.collective)


def convert_sync_batchnorm(module: nn.Module, collective: Collective) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` by a SyncBatchNorm over `collective`, keeping its state."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, collective, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        sync.load_state_dict(module.state_dict())
        sync.train(module.training)
        return sync.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, collective))
    return module
