"""model.drop_path_ramp: the stochastic-depth probability ramped linearly over training.

DARTS (its train.py: drop_path_prob x epoch / epochs) and NASNet's
ScheduledDropPath start training with no drop path and reach the full
probability at the end. Each module that holds a probability - an in-house
network's `drop_path_prob`, a timm DropPath's `drop_prob`, a torchvision
StochasticDepth's `p` - keeps the value it was built with as the end point and
is set to value x epoch / epochs at the start of each epoch: per epoch, not per
step, so a compiled model recompiles at most once per epoch. The masks come
from torch's generator, reseeded every step from (seed, step, rank), so a
resumed run drops what an uninterrupted one drops. Stochastic depth itself (the
drops, the rates, which attribute holds a module's probability) lives in
trainer/models/stochastic_depth.py.
"""

import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.stochastic_depth import probability_attribute
from bigbatch.trainer.step.hooks import Hook


class DropPathRamp(Hook):
    """A hook of the step: each epoch's start sets every drop-path probability to its end value x epoch / epochs."""

    def __init__(self, model: nn.Module):
        self.targets = [(m, attr, getattr(m, attr)) for m in model.modules()
                        if (attr := probability_attribute(m)) and getattr(m, attr) > 0]
        if not self.targets:
            raise RecipeError("model.drop_path_ramp: the model has no drop-path probability to ramp (set "
                              "model.drop_path_rate)")

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.set_epoch(epoch, epochs)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        for module, attr, end in self.targets:
            setattr(module, attr, end * epoch / epochs)
