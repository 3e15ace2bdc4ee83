"""Where a run continues from: the checkpoint picked and read once per rank, and the step it maps to.

Rank 0 picks and verifies the checkpoint (one read); the others learn which from it and then read it once
each, unverified: at W ranks that is W + 1 reads of shared storage, not 2W per candidate.
"""

from pathlib import Path

from bigbatch.trainer.distributed.collective import Collective, broadcast_text
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.plan import Plan
from bigbatch.trainer.records.track import notice
from bigbatch.trainer.run.checkpoint import CheckpointDir, load_bytes, load_unverified, read_verified


def load_checkpoint(resume: str, checkpoints: CheckpointDir, collective: Collective) -> tuple[Path, dict] | None:
    """`resume` is "auto" (the newest verified checkpoint of the run, None if there is none) or a path; the
    checkpoint's state on every rank, on its device, or a RecipeError naming the path."""
    path, data, problem = None, None, ""
    if collective.rank == 0:
        if resume == "auto":
            path, data = checkpoints.newest_verified() or (None, None)
        else:
            path = Path(resume)
            try:
                data = read_verified(path)
            except (ValueError, OSError) as e:
                problem = str(e).removeprefix(f"{path}: ")
    chosen = broadcast_text(f"{'ok' if data else 'error' if problem else 'none'}\n{path}\n{problem}", collective)
    status, shared_path, problem = chosen.split("\n", 2)
    if status == "none":
        return None  # --resume auto with nothing to resume: a fresh run
    path = Path(shared_path)
    try:
        if status == "error":
            raise ValueError(problem)
        if data is not None:
            return path, load_bytes(data, map_location=collective.device)
        return path, load_unverified(path, map_location=collective.device)
    except (ValueError, OSError, RuntimeError) as e:
        raise RecipeError(f"{path}: --resume: cannot load checkpoint: {e}") from None


def step_at(plan: Plan, epoch: int, offset: int, saved_step: int, say: bool) -> int:
    """The data position is kept in examples of the epoch, so a run may resume with another world size
    or per-worker batch. If the new global batch does not divide the offset, the position is rounded
    down to a step boundary (fewer than one global batch of the epoch is seen again)."""
    if epoch >= len(plan.epoch_steps):
        return plan.schedule_steps
    batch = plan.global_batch_at(epoch)
    step = plan.epoch_start(epoch) + min(offset // batch, plan.epoch_steps[epoch])
    if step != saved_step and say:
        notice(f"bigbatch: the global batch changed since the checkpoint; epoch {epoch}, example {offset} of "
               f"the epoch -> step {step} (was step {saved_step})")
    return step
