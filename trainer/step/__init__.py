"""One optimizer step (`train_step`) and the hooks that add the recipe's optional features to it."""

from bigbatch.trainer.step.core import Learner, StepContext, train_step
from bigbatch.trainer.step.hooks import Hook, Hooks

__all__ = ["Hook", "Hooks", "Learner", "StepContext", "train_step"]
