"""Start a run on the backend the recipe names. Today: `local`, one plain process."""

from pathlib import Path

from trainer.build import resolve_device
from trainer.checkpoint import CheckpointDir
from trainer.collective import LocalCollective
from trainer.errors import RecipeError
from trainer.loop import Trainer
from trainer.recipe.schema import Recipe


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """A run directory with checkpoints is only continued on purpose (--resume), never overwritten."""
    if resume is None and CheckpointDir(run_dir / "checkpoints").step_files():
        raise RecipeError(f"{run_dir}: --out: the run directory already holds checkpoints; "
                          "pass --resume auto to continue it, or choose another --out")
    if resume not in (None, "auto") and not Path(resume).is_file():
        raise RecipeError(f"{resume}: --resume: checkpoint file not found (expected 'auto' or a checkpoint path)")


def launch(recipe: Recipe, run_dir: str | Path, resume: str | None = None) -> dict:
    """Train `recipe` into `run_dir`; return the run summary."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    if recipe.cluster.backend == "local":
        if recipe.cluster.workers != 1:
            raise RecipeError(f"cluster.workers: the 'local' backend runs exactly 1 worker, got "
                              f"{recipe.cluster.workers}")
        collective = LocalCollective(resolve_device(recipe.train.device))
        return Trainer(recipe, run_dir, collective, resume=resume).fit()
    if recipe.cluster.backend == "torch":
        from cluster.ray_launch import launch_ray

        return launch_ray(recipe, run_dir, resume)
    raise RecipeError(f"cluster.backend: unknown backend {recipe.cluster.backend!r}")
