"""Run a recipe on N data-parallel workers through Ray Train (V2: TorchTrainer, ScalingConfig, RunConfig).

With no `cluster.address`, Ray starts embedded on this machine (dashboard off).
Each worker builds the same Trainer over a TorchDistributedCollective; Ray Train
has already joined them in a torch.distributed group (gloo on CPU, nccl on GPU).
Rank 0 writes the run directory, which every worker must see (a local path for
one machine, shared storage on a cluster). On a worker-group restart
(`cluster.max_failures`) the workers resume from the newest valid checkpoint.
"""

import json
import os
from pathlib import Path

from trainer.errors import RecipeError, TrainingFailed
from trainer.recipe.schema import Recipe


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from cluster.backends.torch_dist import TorchDistributedCollective
    from trainer.loop import Trainer

    recipe: Recipe = config["recipe"]
    device = ray.train.torch.get_device() if recipe.cluster.gpus_per_worker > 0 else "cpu"
    collective = TorchDistributedCollective(device)
    # launch() refused a run directory holding checkpoints unless resuming, so "auto" starts the first
    # attempt fresh and makes a restarted worker group continue from the newest valid checkpoint.
    summary = Trainer(recipe, config["run_dir"], collective, resume=config["resume"] or "auto").fit()
    # report() is collective in Ray Train V2: every worker calls it; rank 0's metrics become the result's.
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})


def launch_ray(recipe: Recipe, run_dir: Path, resume: str | None) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = recipe.cluster
    started_here = False
    if not ray.is_initialized():
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=True)
        else:
            ray.init(num_cpus=max(int(cfg.workers * cfg.cpus_per_worker + 0.999), 1), include_dashboard=False,
                     log_to_driver=True)
        started_here = True
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    use_gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"recipe": recipe, "run_dir": str(run_dir), "resume": resume},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    try:
        trainer.fit()
    except Exception as e:  # Ray wraps worker errors; surface ours with their exit codes
        cause = _root_cause(e)
        if isinstance(cause, (RecipeError, TrainingFailed)):
            raise cause from None
        raise TrainingFailed(f"Ray Train run failed: {cause.__class__.__name__}: {cause}") from None
    finally:
        if started_here:
            ray.shutdown()
    return json.loads((run_dir / "summary.json").read_text())


def _root_cause(error: BaseException) -> BaseException:
    seen = error
    for _ in range(10):
        nxt = getattr(seen, "cause", None) or seen.__cause__
        if nxt is None:
            break
        seen = nxt
    for attr in ("worker_failures",):
        failures = getattr(seen, attr, None)
        if failures:
            return next(iter(failures.values()))
    return seen
