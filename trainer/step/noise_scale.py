"""The gradient noise scale of McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): the batch
size beyond which a larger batch stops buying proportionally fewer steps, from gradient statistics that
data-parallel training already has.

A gradient averaged over B examples has E|g_B|^2 = |G|^2 + tr(Sigma) / B (G the true gradient, Sigma the
per-example covariance). Two batch sizes give two equations; their Appendix A.1 solves them for unbiased
estimates of |G|^2 and tr(Sigma). One estimate is noisy, so each is averaged over steps with an exponential
moving average (separately, as the paper does: the ratio of averages, not the average of ratios), and
B_simple = tr(Sigma) / |G|^2.

In bigbatch the small batch is one rank's micro-batch (its local gradient, before the all-reduce) and the
big batch is the global batch (the all-reduced gradient): no extra forward or backward pass. This module is
the arithmetic, and `MeasureNoiseScale` the hook that measures the two squared norms in the step.

When the ranks share the global batch unevenly (recipe/shares.py), rank r's first micro-batch has n_r examples,
so E|g_r|^2 = |G|^2 + tr(Sigma) / n_r, and the mean over the W ranks is |G|^2 + tr(Sigma) / B_h with B_h =
W / sum(1 / n_r), their harmonic mean: the same two equations, with B_h as the small batch.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bigbatch.trainer.distributed.collective import Collective, gradients
from bigbatch.trainer.recipe.shares import micro_sizes
from bigbatch.trainer.step.hooks import Hook


def unbiased_estimates(small_sq_norm: float, small_batch: float, big_sq_norm: float,
                       big_batch: int) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from |g|^2 at two batch sizes (McCandlish et al. 2018, Appendix A.1)."""
    if not 0 < small_batch < big_batch:
        raise ValueError(f"gradient noise scale: needs 0 < small batch < big batch, got {small_batch} and "
                         f"{big_batch}")
    grad_sq = (big_batch * big_sq_norm - small_batch * small_sq_norm) / (big_batch - small_batch)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / small_batch - 1.0 / big_batch)
    return grad_sq, trace


@dataclass
class GradientNoiseScale:
    """Exponential moving averages of the two estimates (bias-corrected as Adam's moments, so the first
    steps are not pulled towards zero) and their ratio, B_simple. Its state goes into checkpoints.

    `grad_sq_sq` averages the square of each update's |G|^2 estimate with the same decay, so the spread of the
    estimates, and from it the standard error of the averaged |G|^2, comes with no extra state to keep."""
    decay: float = 0.95
    grad_sq: float = 0.0
    trace: float = 0.0
    updates: int = 0
    grad_sq_sq: float = 0.0

    def update(self, small_sq_norm: float, small_batch: float, big_sq_norm: float, big_batch: int) -> None:
        grad_sq, trace = unbiased_estimates(small_sq_norm, small_batch, big_sq_norm, big_batch)
        self.grad_sq = self.decay * self.grad_sq + (1 - self.decay) * grad_sq
        self.trace = self.decay * self.trace + (1 - self.decay) * trace
        self.grad_sq_sq = self.decay * self.grad_sq_sq + (1 - self.decay) * grad_sq ** 2
        self.updates += 1

    def _corrected(self, value: float) -> float:
        return value / (1 - self.decay ** self.updates) if self.updates else math.nan

    @property
    def grad_sq_norm_est(self) -> float:
        return self._corrected(self.grad_sq)

    @property
    def grad_var_est(self) -> float:
        return self._corrected(self.trace)

    @property
    def b_simple(self) -> float:
        """tr(Sigma) / |G|^2; nan before any update or while the |G|^2 average is not positive."""
        grad_sq = self.grad_sq_norm_est
        return self.grad_var_est / grad_sq if grad_sq > 0 else math.nan

    @property
    def grad_sq_stderr(self) -> float:
        """Standard error of `grad_sq_norm_est`, nan before two updates. The bias-corrected average after n
        updates weighs update i by w_i = (1 - d) d^(n-i) / (1 - d^n); treating the estimates as independent
        draws of variance v (their weighted spread), its variance is v sum(w_i^2), where
        sum(w_i^2) = (1 - d)^2 (1 - d^(2n)) / ((1 - d^2) (1 - d^n)^2).

        A state from before `grad_sq_sq` was kept starts it at 0, so the error reads 0 at first and grows to its
        value as the average refills (over some 1 / (1 - d) updates)."""
        if self.updates < 2:
            return math.nan
        d, n = self.decay, self.updates
        spread = self._corrected(self.grad_sq_sq) - self.grad_sq_norm_est ** 2
        sum_w2 = (1 - d) ** 2 * (1 - d ** (2 * n)) / ((1 - d ** 2) * (1 - d ** n) ** 2)
        return math.sqrt(max(spread, 0.0) * sum_w2)

    def noise_scale_lower(self, z: float = 2.0) -> float:
        """A conservative B to steer on: tr(Sigma) / (|G|^2 + z x its standard error).

        Late in training |G|^2 is small beside the noise, and its averaged estimate can sit near zero (or below)
        by chance; B_simple divides by it and explodes, which would call for ever bigger batches. An upper
        bound on |G|^2 (z standard errors above the estimate, the estimate taken as at least 0) makes a lower
        bound on B. nan before two updates; 0.0 while the tr(Sigma) estimate is not positive; nan when the bound
        on |G|^2 is itself 0 (every |G|^2 estimate was 0 or less and they did not vary): the quotient would be
        inf, which asks for the biggest batch on no evidence; nan hands it to the caller's rule for an
        unresolved B (adascale_gain's 1.0)."""
        if z < 0:
            raise ValueError(f"noise_scale_lower: z must be >= 0, got {z}")
        if self.updates < 2:
            return math.nan
        trace = self.grad_var_est
        if trace <= 0:
            return 0.0
        bound = max(self.grad_sq_norm_est, 0.0) + z * self.grad_sq_stderr
        return trace / bound if bound > 0 else math.nan

    def state_dict(self) -> dict:
        return {"decay": self.decay, "grad_sq": self.grad_sq, "trace": self.trace, "updates": self.updates,
                "grad_sq_sq": self.grad_sq_sq}

    def load_state_dict(self, state: dict) -> None:
        """Also a state from before `grad_sq_sq` was kept (older checkpoints): it starts at 0."""
        self.decay, self.grad_sq, self.trace, self.updates = (state["decay"], state["grad_sq"], state["trace"],
                                                              state["updates"])
        self.grad_sq_sq = state.get("grad_sq_sq", 0.0)


def grad_sq_norm(optimizer: torch.optim.Optimizer, device: torch.device) -> torch.Tensor:
    """Squared L2 norm of the optimizer's gradients as they are now, on the device."""
    grads = gradients(optimizer)
    return torch.nn.utils.get_total_norm(grads).float().square() if grads else torch.zeros((), device=device)


class MeasureNoiseScale(Hook):
    """On a log step with two batch sizes (more than one micro-batch in the global batch), every rank measures
    one micro-batch's own gradient: micro-step 0's .grad (local under no_sync, and on Horovod until its
    synchronize), or with one micro-step the buckets DDP hands to `tap` before their all-reduce. Its squared
    norm rides as one float in the step's all-reduce; rank 0 feeds the ranks' mean and the global gradient's
    squared norm to the estimator. The estimator's state is the checkpoint's "gradient_noise" entry."""

    state_key = "gradient_noise"

    def __init__(self, decay: float, collective: Collective, per_worker_batch: int,
                 global_batch_of_step: Callable[[int], int], every_rank: bool = False):
        self.noise = GradientNoiseScale(decay)
        self.collective, self.per_worker_batch = collective, per_worker_batch
        self.global_batch_of_step = global_batch_of_step  # of a 1-based step; when the context does not say (tests)
        self.every_rank = every_rank  # every rank keeps the averages (an adaptive batch decides on every rank)
        self.measuring, self.slot = False, 0
        self.tapped: torch.Tensor | None = None
        self.tap_seen = False
        self.small_batch: float = per_worker_batch  # this step's B_small (the harmonic mean on unequal shares)
        self.local_scale = 1.0  # this rank's micro-step 0 gradient times this is its mean over its examples

    def tap(self, bucket: torch.Tensor) -> None:
        """One bucket of this rank's own gradient, before the all-reduce (Collective.wrap's gradient_tap)."""
        if self.tapped is not None:
            self.tapped += bucket.float().square().sum()
            self.tap_seen = True

    def before_step(self, ctx) -> None:
        self.measuring = ctx.logging and self.collective.world_size * ctx.accumulation > 1
        if self.measuring:
            self._batches(ctx)
        one_micro_step = self.measuring and ctx.accumulation == 1
        self.tapped = torch.zeros((), device=self.collective.device) if one_micro_step else None
        self.tap_seen = False

    def after_backward(self, ctx, micro: int) -> None:
        if not self.measuring or micro:
            return
        local = self.tapped if self.tap_seen else grad_sq_norm(ctx.learner.optimizer, self.collective.device)
        self.tapped, self.slot = None, len(ctx.extras)
        ctx.extras.append((local * self.local_scale ** 2).reshape(()))  # of the loss as ctx.weigh weighed it

    def _batches(self, ctx) -> None:
        """B_small and the scale that undoes ctx.weigh on micro-step 0: / accumulation with equal shares,
        x n_r x W / G with unequal ones (n_r: rank r's first micro-batch, known from the layout)."""
        if not ctx.uneven_batch:
            self.small_batch, self.local_scale = ctx.micro_batch or self.per_worker_batch, float(ctx.accumulation)
            return
        world = self.collective.world_size
        firsts = [sizes[0] for sizes in micro_sizes(ctx.uneven_batch, world, ctx.accumulation)]
        self.small_batch = world / sum(1.0 / n for n in firsts)
        self.local_scale = ctx.uneven_batch / (firsts[self.collective.rank] * world)

    def after_all_reduce(self, ctx) -> None:
        """Rank 0 (every rank with `every_rank`: the inputs are all-reduced, so every rank's averages are the
        same), before GradScaler.update changes the scale the small norm is still on."""
        if not self.measuring or (self.collective.rank != 0 and not self.every_rank):
            return
        small_sq = ctx.reduced_extras[self.slot].item() / self.collective.world_size
        small_sq /= ctx.learner.scaler.get_scale() ** 2
        big_sq = ctx.grad_norm() ** 2
        if math.isfinite(small_sq) and math.isfinite(big_sq):  # an overflowed fp16 step says nothing
            self.noise.update(small_sq, self.small_batch, big_sq, ctx.global_batch or self.global_batch_of_step(ctx.step + 1))

    def after_step(self, ctx) -> None:
        if ctx.logging and self.noise.updates:
            ctx.record.update(grad_sq_norm_est=self.noise.grad_sq_norm_est, grad_var_est=self.noise.grad_var_est)
            if math.isfinite(self.noise.b_simple) and self.noise.b_simple > 0:
                ctx.record["gradient_noise_scale"] = self.noise.b_simple

    def state_dict(self) -> dict:
        return self.noise.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.noise.load_state_dict(state)
