"""What a non-finite global loss does to a run: stop it (train.on_nonfinite: stop), or skip the step and count
it, failing once more than train.max_skipped_steps were skipped. Either way the error names the step, its
epoch and the last good checkpoint, so the user knows where to resume from."""

from pathlib import Path

from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.recipe.schema import Recipe


def skip_or_stop(recipe: Recipe, step: int, epoch: int, skipped: int, last_good: Path | None) -> int:
    """Optimizer step number `step` (1-based, of `epoch`) had a non-finite global loss: the new count of skipped
    steps, or TrainingFailed."""
    where = f"step {step} (epoch {epoch})"
    keep = f"; the last good checkpoint is {last_good}" if last_good else "; no checkpoint had been written"
    if recipe.train.on_nonfinite == "stop":
        raise TrainingFailed(f"non-finite loss at {where}{keep}")
    skipped += 1
    if skipped > recipe.train.max_skipped_steps:
        raise TrainingFailed(f"non-finite loss at {where}: {skipped} steps skipped, more than "
                             f"train.max_skipped_steps={recipe.train.max_skipped_steps}{keep}")
    return skipped
