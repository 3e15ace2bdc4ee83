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


class WeightAverage:
    def __init__(self, cfg: EmaConfig, model: nn.Module):
        from timm.utils import ModelEmaV3

        self.cfg = cfg
        self.ema = ModelEmaV3(model, decay=cfg.decay, use_warmup=cfg.warmup)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after optimizer step number `step` (1-based)."""
        if step % self.cfg.every_steps == 0:
            self.ema.update(model, step=step // self.cfg.every_steps)

    def restart_from(self, model: nn.Module) -> None:
        """A resumed checkpoint without an average (EMA switched on later): start it from these weights."""
        self.ema.set(model)


def make_weight_average(cfg: EmaConfig, model: nn.Module) -> WeightAverage | None:
    return WeightAverage(cfg, model) if cfg.decay > 0 else None
