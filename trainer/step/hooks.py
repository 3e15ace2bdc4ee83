"""The one protocol every optional feature of the step speaks: five events and a checkpoint entry.

Cut down from Composer's events and timm's TrainingTask to what one optimizer step needs. A feature (EMA,
mixup, clipping, the drop-path and Batch Renorm ramps, the supernet path, the gradient noise scale, the logged
gradient norm and trust ratios) is one `Hook` in its own module; adding one never edits the step. Hooks run in
the order they are listed (trainer/step/features.py), which is the order their effects must happen in.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bigbatch.trainer.step.core import StepContext

H = TypeVar("H", bound="Hook")


class Hook:
    """Every event is a no-op here; a feature overrides the ones it needs. A feature with checkpoint state names
    its entry in `state_key` and returns the state from `state_dict` (tensors and plain types only)."""

    state_key: str | None = None

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Before the first step of `epoch` this process runs (also when it resumes mid-epoch)."""

    def before_step(self, ctx: "StepContext") -> None:
        """Before the step's first forward pass: set its criterion or input transform, arm measurements."""

    def after_backward(self, ctx: "StepContext", micro: int) -> None:
        """After micro-step `micro`'s backward; until the last one the gradients are this rank's own."""

    def after_all_reduce(self, ctx: "StepContext") -> None:
        """The gradients are global (still on the loss scale until `ctx.unscale()`); the update comes next."""

    def after_step(self, ctx: "StepContext") -> None:
        """The optimizer has updated the weights."""

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """`state` is None when the checkpoint has no entry for this hook (written before it was switched on)."""


class Hooks:
    """The step's hooks in order; each event goes to every hook."""

    def __init__(self, hooks: Iterable[Hook | None]):
        self.hooks = [hook for hook in hooks if hook is not None]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        for hook in self.hooks:
            hook.on_epoch_start(epoch, epochs)

    def before_step(self, ctx: "StepContext") -> None:
        for hook in self.hooks:
            hook.before_step(ctx)

    def after_backward(self, ctx: "StepContext", micro: int) -> None:
        for hook in self.hooks:
            hook.after_backward(ctx, micro)

    def after_all_reduce(self, ctx: "StepContext") -> None:
        for hook in self.hooks:
            hook.after_all_reduce(ctx)

    def after_step(self, ctx: "StepContext") -> None:
        for hook in self.hooks:
            hook.after_step(ctx)

    def state_dict(self) -> dict:
        """Checkpoint entries by key: the same keys the checkpoint has always had ("ema", "gradient_noise")."""
        states = {hook.state_key: hook.state_dict() for hook in self.hooks if hook.state_key}
        return {key: state for key, state in states.items() if state is not None}

    def load_state_dict(self, checkpoint: dict) -> None:
        for hook in self.hooks:
            if hook.state_key:
                hook.load_state_dict(checkpoint.get(hook.state_key))

    def find(self, kind: type[H]) -> H | None:
        return next((hook for hook in self.hooks if isinstance(hook, kind)), None)

    def __iter__(self):
        return iter(self.hooks)
