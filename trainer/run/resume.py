"""Where a run continues from: the checkpoint picked, read once, and the step it maps to.

Rank 0 picks the checkpoint and reads and verifies it (one read of the file); the others learn which it is
and receive its bytes over the Collective: one read of shared storage at any world size (a ResNet-50
checkpoint read by every one of 1,024 ranks would be about 0.25 TB). Every rank holds one copy of the
bytes while it deserialises them, and none after.
"""

from pathlib import Path

from bigbatch.trainer.distributed.collective import Collective, broadcast_bytes, broadcast_text
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.plan import Plan
from bigbatch.trainer.records.track import notice
from bigbatch.trainer.run.checkpoint import CheckpointDir, load_bytes, read_verified


def load_checkpoint(resume: str, checkpoints: CheckpointDir, collective: Collective) -> tuple[Path, dict] | None:
    """`resume` is "auto" (the newest verified checkpoint of the run, None if there is none) or a path; the
    checkpoint's state on every rank, on its device, or a RecipeError naming the path."""
    path, data, problem = None, b"", ""
    if collective.rank == 0:
        path, data, problem = _read_on_rank_0(resume, checkpoints)
    chosen = broadcast_text(f"{'ok' if data else 'error' if problem else 'none'}\n{path}\n{problem}", collective)
    status, shared_path, problem = chosen.split("\n", 2)
    if status == "none":
        return None  # --resume auto with nothing to resume: a fresh run
    path = Path(shared_path)
    try:
        if status == "error":
            raise ValueError(problem)
        shared = broadcast_bytes(data, collective)  # rank 0's bytes themselves there, received in place elsewhere
        del data
        return path, load_bytes(shared, map_location=collective.device)
    except (ValueError, OSError, RuntimeError) as e:
        raise RecipeError(f"{path}: --resume: cannot load checkpoint: {e}") from None


def _read_on_rank_0(resume: str, checkpoints: CheckpointDir) -> tuple[Path | None, bytes, str]:
    """The checkpoint to resume from, its verified bytes, and what is wrong with a named one ("" if nothing).
    Under "auto" one line says which checkpoint is used and which newer ones were skipped, and why."""
    if resume != "auto":
        path = Path(resume)
        try:
            return path, read_verified(path), ""
        except (ValueError, OSError) as e:
            return path, b"", str(e).removeprefix(f"{path}: ") or e.__class__.__name__
    skipped: list[str] = []
    path, data = checkpoints.newest_verified(report=skipped.append) or (None, b"")
    why = "".join(f"; {line.removeprefix('bigbatch: ')}" for line in skipped)
    if path is not None:
        notice(f"bigbatch: --resume auto: {path}, the newest checkpoint that verifies{why}")
    elif skipped:
        notice(f"bigbatch: --resume auto: no checkpoint in {checkpoints.directory} verifies{why}; starting at step 0")
    return path, data, ""


def step_at(plan: Plan, epoch: int, offset: int, saved_step: int, say: bool) -> int:
    """The data position is kept in examples of the epoch, so a run may resume with another world size
    or per-worker batch. If the new global batch does not divide the offset, the position is rounded
    down to a step boundary (fewer than one global batch of the epoch is seen again)."""
    step = plan.step_of(epoch, offset)
    if step != saved_step and say:
        notice(f"bigbatch: the global batch changed since the checkpoint; epoch {epoch}, example {offset} of "
               f"the epoch -> step {step} (was step {saved_step})")
    return step
