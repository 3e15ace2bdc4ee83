"""The exponential moving average of the weights (train.ema), through timm's ModelEmaV3.

Every rank keeps the same average: the weights it follows are identical on
every rank after each step (data parallel), so no collective is needed, and
each rank can score its own shard of the held-out set with it. The n-th update
(every `train.ema.every_steps` optimizer steps) passes n to timm, whose first
update copies the weights and whose warmup, if asked for, ramps the decay as
1 - n^(-2/3). The average includes the BatchNorm buffers, as timm's does.
"""

import torch.nn as nn

from bigbatch.trainer.recipe.schema import EmaConfig
from bigbatch.trainer.step.hooks import Hook


class WeightAverage(Hook):
    """The average of `model`'s weights (the unwrapped module), updated after every `every_steps`-th step; its
    weights are the checkpoint's "ema" entry."""

    state_key = "ema"

    def __init__(self, cfg: EmaConfig, model: nn.Module):
        from timm.utils import ModelEmaV3

        self.cfg, self.model = cfg, model
        self.ema = ModelEmaV3(model, decay=cfg.decay, use_warmup=cfg.warmup)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def after_step(self, ctx) -> None:
        done = ctx.step + 1  # optimizer steps taken, 1-based
        if done % self.cfg.every_steps == 0:
            self.ema.update(self.model, step=done // self.cfg.every_steps)

    def state_dict(self) -> dict:
        return self.ema.module.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        """A resumed checkpoint without an average (EMA switched on later) starts it from the resumed weights."""
        if state is None:
            self.ema.set(self.model)
        else:
            self.ema.module.load_state_dict(state)


def make_weight_average(cfg: EmaConfig, model: nn.Module) -> WeightAverage | None:
    return WeightAverage(cfg, model) if cfg.decay > 0 else None
