"""One optimizer step, top to bottom: forward, loss and backward per micro-batch, one all-reduce, the update.

Everything optional happens in hooks (trainer/step/hooks.py); the step itself has no feature branches. Nothing
is read back to the host here: the global loss rides in one all-reduce with the hooks' extras and stays on the
device (`Learner.outcomes`) until the run loop settles it, except with train.on_nonfinite=skip, where the step
must know its loss before the update.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import Collective, gradients
from bigbatch.trainer.distributed.worker_times import WorkerTimes
from bigbatch.trainer.run.checkpoint import seed_step
from bigbatch.trainer.step.hooks import Hooks
from bigbatch.trainer.step.outcomes import Settled, StepOutcomes

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Learner:
    """What every step of a run works on. `model` is what is called (compiled or not); `wrapped` is the
    data-parallel module whose no_sync holds back the all-reduce on accumulation micro-steps."""

    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    collective: Collective
    autocast: Callable[[], contextlib.AbstractContextManager]
    to_device: Callable[[Batch, int], Batch]  # (host micro-batch, step index) -> model input and targets
    outcomes: StepOutcomes
    times: WorkerTimes
    seed: int
    skip_nonfinite: bool = False


def keep(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return x, y


@dataclass
class StepContext:
    """One step as its hooks see it. Hooks may replace `criterion` and `transform` (before the step), add
    floats to the step's all-reduce (`extras`, read back reduced in `reduced_extras`) and measurements to the
    step's record (`record`, written on log steps)."""

    step: int  # 0-based: the step being taken
    epoch: int
    accumulation: int
    lr: float
    logging: bool
    criterion: nn.Module
    transform: Callable[[torch.Tensor, torch.Tensor], Batch] = keep
    extras: list[torch.Tensor] = field(default_factory=list)
    reduced_extras: torch.Tensor | None = None
    record: dict = field(default_factory=dict)
    learner: Learner | None = None
    uneven_batch: int = 0  # the global batch when ranks take unequal shares of it (recipe/shares.py); else 0
    global_batch: int = 0  # examples of the step over all ranks (0: not given, as in tests of the step alone)
    micro_batch: int = 0  # the largest micro-batch of the step
    _unscaled: bool = False
    _grad_norm: float | None = None

    def weigh(self, loss: torch.Tensor, examples: int) -> torch.Tensor:
        """A micro-batch's mean loss as its part of the global batch's mean: / accumulation with equal shares;
        x examples x W / G with unequal ones (DDP then averages the W ranks' sums into the mean over G)."""
        if not self.uneven_batch:
            return loss / self.accumulation
        return loss * (examples * self.learner.collective.world_size / self.uneven_batch)

    def unscale(self) -> None:
        """The gradients off the loss scale, once per step (GradScaler refuses a second unscale_)."""
        if not self._unscaled:
            self.learner.scaler.unscale_(self.learner.optimizer)
            self._unscaled = True

    def grad_norm(self) -> float:
        """Global L2 norm of the unscaled, all-reduced gradient (a host read: log steps only)."""
        if self._grad_norm is None:
            self.unscale()
            grads = gradients(self.learner.optimizer)
            self._grad_norm = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
        return self._grad_norm


def train_step(learner: Learner, ctx: StepContext, micro_batches: Iterator[Batch], hooks: Hooks) -> Settled | None:
    """Take optimizer step `ctx.step`: all-reduce only on the last micro-step (no_sync on the others)."""
    ctx.learner, device = learner, learner.collective.device
    for group in learner.optimizer.param_groups:
        group["lr"] = ctx.lr
    seed_step(learner.seed, ctx.step, learner.collective.rank)
    hooks.before_step(ctx)
    loss_sum = torch.zeros((), device=device)
    for micro in range(ctx.accumulation):
        x, y = ctx.transform(*learner.to_device(next(micro_batches), ctx.step))
        last = micro == ctx.accumulation - 1
        with contextlib.nullcontext() if last else learner.collective.no_sync(learner.wrapped):
            with learner.autocast():
                loss = ctx.weigh(ctx.criterion(learner.model(x), y), len(y))
            learner.scaler.scale(loss).backward()
        hooks.after_backward(ctx, micro)
        loss_sum += loss.detach().float()
    waited = time.perf_counter()
    reduced = learner.collective.all_reduce(torch.stack([loss_sum, *ctx.extras]), op="sum")
    ctx.reduced_extras = reduced[1:]
    learner.outcomes.add(ctx.step + 1, reduced[:1])
    learner.times.add_step(time.perf_counter() - waited)
    settled = learner.outcomes.settle() if learner.skip_nonfinite else None
    if settled is not None and settled.first_nonfinite() is not None:
        learner.optimizer.zero_grad(set_to_none=True)  # skipped: the loop counts it
        return settled
    learner.collective.synchronize_gradients(learner.optimizer)  # before GradScaler looks for infs in them
    hooks.after_all_reduce(ctx)
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    learner.optimizer.zero_grad(set_to_none=True)
    hooks.after_step(ctx)
    return settled
