"""model.norm: batch_renorm as a hook: Batch Renorm's (r_max, d_max) for each step, set before its forward pass
(the ramp itself lives with the layer, trainer/models/norms.py)."""

from bigbatch.trainer.models.norms import RenormSchedule
from bigbatch.trainer.step.hooks import Hook


class RampRenorm(Hook):
    def __init__(self, schedule: RenormSchedule):
        self.schedule = schedule

    def before_step(self, ctx) -> None:
        self.schedule.at(ctx.step)
