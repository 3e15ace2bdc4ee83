"""What a log step records of the update itself: the gradient's global norm and LARS/LAMB's trust ratios.

Both are host reads, so they happen on rank 0 on log steps only (the other steps never wait for the device).
"""

from bigbatch.optim import last_trust_ratios
from bigbatch.trainer.step.hooks import Hook


class LogGradNorm(Hook):
    """The L2 norm of the all-reduced, unscaled gradient, before clipping: what the data gave."""

    def __init__(self, rank: int):
        self.rank = rank

    def after_all_reduce(self, ctx) -> None:
        if ctx.logging and self.rank == 0:
            ctx.record["grad_norm"] = ctx.grad_norm()


class LogTrustRatios(Hook):
    """Min, median and max of the layer-wise trust ratios the update used (LARS, LAMB: kept in their param
    groups)."""

    def __init__(self, rank: int):
        self.rank = rank

    def after_step(self, ctx) -> None:
        if not (ctx.logging and self.rank == 0):
            return
        ratios = last_trust_ratios(ctx.learner.optimizer)
        if ratios is not None and ratios.numel():
            r = ratios.float().cpu()
            ctx.record.update(trust_ratio_min=r.min().item(), trust_ratio_median=r.median().item(),
                              trust_ratio_max=r.max().item())
