"""model.drop_path_ramp as a hook: each epoch sets the stochastic-depth probability to its end value x epoch /
epochs (the ramp itself lives with stochastic depth, trainer/drop_path.py)."""

from bigbatch.trainer.drop_path import DropPathRamp
from bigbatch.trainer.step.hooks import Hook


class RampDropPath(Hook):
    def __init__(self, ramp: DropPathRamp):
        self.ramp = ramp

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.ramp.set_epoch(epoch, epochs)
