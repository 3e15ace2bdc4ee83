"""Start a run on the backend the recipe names: `local` (one plain process), `torch` (Ray Train workers over
torch.distributed) or `horovod` (Horovod workers launched by Ray).

The recipe was checked when it was loaded (ClusterConfig, trainer/recipe/cluster_track_search.py: the local
backend's one worker, Horovod's whole GPUs, the address's form); what is checked here needs this machine or
the run directory."""

import dataclasses
import sys
from pathlib import Path

import yaml

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.run.build import resolve_device
from bigbatch.trainer.run.checkpoint import CheckpointDir
from bigbatch.trainer.run.loop import Trainer
from bigbatch.trainer.run.stop import clear_stop


def check_run_dir(recipe: Recipe, run_dir: Path, resume: str | None) -> str | None:
    """The resume mode to use. A run directory with checkpoints is never overwritten: the same recipe
    continues it (re-running a command after a crash resumes), a different recipe needs --resume auto."""
    if resume not in (None, "auto") and not Path(resume).is_file():
        raise RecipeError(f"{resume}: --resume: checkpoint file not found (expected 'auto' or a checkpoint path)")
    if resume is not None or not CheckpointDir(run_dir / "checkpoints").step_files():
        return resume
    saved = run_dir / "recipe.yaml"
    if saved.is_file() and same_recipe(saved, recipe):
        print(f"bigbatch: {run_dir} holds checkpoints of this recipe: continuing it", file=sys.stderr)
        return "auto"
    raise RecipeError(f"{run_dir}: --out: the run directory holds checkpoints of a different recipe; "
                      "pass --resume auto to continue it with this one, or choose another --out")


def same_recipe(saved: Path, recipe: Recipe) -> bool:
    """Whether the run directory's recipe.yaml is `recipe`: read through the loader, so keys added to bigbatch
    since that run was made (with their defaults) do not make it another recipe."""
    from bigbatch.trainer.recipe import load_recipe

    try:
        return dataclasses.asdict(load_recipe(saved, [])) == dataclasses.asdict(recipe)
    except (RecipeError, yaml.YAMLError, OSError):
        return False


def launch(recipe: Recipe, run_dir: str | Path, resume: str | None = None, verbose: bool = False) -> dict:
    """Train `recipe` into `run_dir`; return the run summary (raises Interrupted when stopped by a signal).
    `verbose` shows Ray's and Horovod's own output beside bigbatch's console."""
    run_dir = Path(run_dir)
    resume = check_run_dir(recipe, run_dir, resume)
    clear_stop(run_dir)
    if recipe.cluster.backend == "local":
        collective = LocalCollective(resolve_device(recipe.train.device))
        return Trainer(recipe, run_dir, collective, resume=resume).fit()
    if recipe.cluster.backend == "torch":
        from bigbatch.cluster.ray_launch import launch_ray

        return launch_ray(recipe, run_dir, resume, verbose)
    if recipe.cluster.backend == "horovod":
        from bigbatch.cluster.horovod_launch import launch_horovod

        return launch_horovod(recipe, run_dir, resume, verbose)
    raise RecipeError(f"cluster.backend: unknown backend {recipe.cluster.backend!r}")
