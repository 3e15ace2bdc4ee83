"""Run a recipe on N data-parallel workers through Ray Train (V2: TorchTrainer, ScalingConfig, RunConfig).

With no `cluster.address`, Ray starts embedded on this machine (dashboard off).
Each worker builds the same Trainer over a TorchDistributedCollective; Ray Train
has already joined them in a torch.distributed group (gloo on CPU, nccl on GPU).

Checkpoints: rank 0 writes each one atomically into the run directory and
reports it to Ray's storage (`cluster.storage_path`, default <run dir>/ray),
which keeps `train.keep_checkpoints` of them. A worker group that Ray restarts
after a failure (`cluster.max_failures`), or a later launch with `--resume auto`,
weighs `ray.train.get_checkpoint()`, the newest reported one, with the run
directory's own: a restarted rank 0 on another node needs nothing from the old
node's disk, and a registered checkpoint that is damaged or gone is passed over
for the newest one that verifies (resume_after_ray). When that storage is on the run directory's file
system (the default), Ray keeps a reference to the run directory's file instead
of a second copy.

Stopping: SIGINT/SIGTERM to the driver (spot preemption, `ray job stop`) writes
the run directory's STOP file; the workers stop after the next step or two (rank 0
polls the file each second), checkpoint and return, and the driver exits 128+N. A second signal stops at once.
"""

import contextlib
import functools
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bigbatch.cluster.node_loss import NodeWatch, drain_own_node
from bigbatch.cluster.progress import driver_console, install_worker_channel
from bigbatch.trainer.atomic import write_json_atomic
from bigbatch.trainer.data.source import TRACE_ENV
from bigbatch.trainer.errors import RecipeError, TrainingFailed
from bigbatch.trainer.recipe.schema import ClusterConfig, Recipe, split_address
from bigbatch.trainer.records.track import notice
from bigbatch.trainer.run.checkpoint import STEP_FILE, CheckpointDir
from bigbatch.trainer.run.stop import StopRequests, request_stop

REFERENCE = "checkpoint_ref.json"


def _report_checkpoint(path: Path | None, metrics: dict, by_reference: bool = False) -> None:
    """Collective (every rank calls it): rank 0 hands its checkpoint to Ray's storage - the file and its
    checksum, or, when that storage is on the run directory's own file system, only a reference to the file
    (Ray would otherwise keep a second copy of every checkpoint beside the first)."""
    import ray.train

    if path is None:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".report-") as staging:
        if by_reference:
            write_json_atomic(Path(staging) / REFERENCE, {"path": str(path.resolve())})
        else:
            for source in (path, path.with_name(path.name + ".sha256")):
                os.link(source, Path(staging) / source.name)  # same directory: a link, not a copy
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging))


def same_file_system(storage_path: str, run_dir: Path) -> bool:
    """Whether Ray's storage and the run directory live on one local file system (their checkpoints would be
    two copies on the same disks)."""
    if "://" in storage_path and not storage_path.startswith("file://"):
        return False
    target = Path(storage_path.removeprefix("file://"))
    while not target.exists() and target != target.parent:
        target = target.parent
    return target.stat().st_dev == run_dir.stat().st_dev


@contextmanager
def _restored_checkpoint(resume: str | None, run_dir: Path, say: bool) -> Iterator[str | None]:
    """What this worker resumes from: `resume`, or, once Ray has registered a checkpoint of this run (a restart,
    or a later launch into the same run directory), that checkpoint. Only rank 0's answer counts: it reads the
    file and broadcasts it (`say`: rank 0 says why Ray's checkpoint is not taken)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield resume
        return
    with checkpoint.as_directory() as directory:
        chosen, why = resume_after_ray(_registered(Path(directory)), resume, run_dir / "checkpoints")
        if why and say:
            notice(f"bigbatch: {why}")
        yield chosen


def _registered(directory: Path) -> Path | None:
    """The checkpoint file Ray registered: the run directory's file it references, or its own copy."""
    reference = directory / REFERENCE
    if reference.is_file():
        return Path(json.loads(reference.read_text())["path"])
    files = sorted(p for p in directory.iterdir() if STEP_FILE.match(p.name))
    return files[-1] if files else None


def resume_after_ray(registered: Path | None, resume: str | None, own: Path) -> tuple[str | None, str]:
    """Ray's registered checkpoint is a candidate like any other. One of the run directory's own (a
    reference) is among those "auto" verifies, newest first, skipping damaged ones, best.pt with them;
    so is any newer one the run directory holds (a group that ends right after reporting a checkpoint can
    end before Ray registers it). Ray's own copy (storage on another file system) is taken when it is newer
    than every file there: a restarted rank 0 on another node. The run starts over only if nothing there
    verifies and `resume` is "auto". With the reason when Ray's checkpoint is not the one taken."""
    newest = _newest_step(own)
    if registered is not None and registered.parent.resolve() != own.resolve() and registered.is_file() \
            and _step_of(str(registered)) > newest:
        return str(registered), ""
    if registered is None or registered.is_file():
        return ("auto" if newest >= 0 else resume), ""
    if newest >= 0:
        fallback, instead = "auto", "the run directory's newest checkpoint that verifies"
    elif resume and resume != "auto":
        fallback, instead = resume, f"--resume {resume}"
    else:
        fallback, instead = resume, "step 0: the run directory holds no checkpoint"
    return fallback, f"Ray's registered checkpoint {registered} is missing; resuming from {instead}"


def _step_of(path: str | None) -> int:
    found = STEP_FILE.match(Path(path).name) if path else None
    return int(found.group(1)) if found else -1


def _newest_step(directory: Path) -> int:
    """The newest step file in a checkpoint directory (-1 if none); `auto` verifies it."""
    files = CheckpointDir(directory).step_files()
    return _step_of(files[0].name) if files else -1


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.run.loop import Interrupted, Preempted, Trainer

    recipe: Recipe = config["recipe"]
    if config.get("trace_labels"):  # the driver's BIGBATCH_TRACE_LABELS, for workers on other machines too
        os.environ[TRACE_ENV] = config["trace_labels"]
    install_worker_channel(config["console_sink"])
    _signals_on_main_thread()
    device = ray.train.torch.get_device() if recipe.cluster.gpus_per_worker > 0 else "cpu"
    collective = TorchDistributedCollective(device)
    write_worker_info(Path(config["run_dir"]), collective.rank, str(device))
    with _restored_checkpoint(config["resume"], Path(config["run_dir"]), collective.rank == 0) as resume:
        report = functools.partial(_report_checkpoint, by_reference=config["by_reference"])
        trainer = Trainer(recipe, config["run_dir"], collective, resume=resume, on_checkpoint=report,
                          restartable=recipe.cluster.max_failures > 0)
    try:
        summary = trainer.fit()
    except Interrupted:
        return  # the checkpoint is reported and summary.json says "interrupted": not a failure to retry
    except Preempted as left:
        if trainer.stop.by_signal:  # this worker's node is shutting down: no restart may place a worker there
            drain_own_node(str(left))
        raise
    # report() is collective in Ray Train V2: every worker calls it; rank 0's metrics become the result's.
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})


def _signals_on_main_thread() -> None:
    """Ray Train V2 runs the training function in a thread of its worker actor, where Python cannot install
    signal handlers; the actor's own main thread is idle meanwhile, so it is asked to install bigbatch's
    (RayTrainWorker.execute runs a function there). Then a SIGTERM to this worker (a spot node shutting down)
    checkpoints the run like a SIGTERM to the driver."""
    import ray

    from bigbatch.trainer.run.stop import install_process_handler

    try:
        actor = ray.get_runtime_context().current_actor
        installed = ray.get(actor.execute.remote(install_process_handler), timeout=60)
    except Exception as e:  # a Ray without RayTrainWorker.execute: say so, train on
        installed, why = False, f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        why = "not run on the main thread"
    if not installed:
        notice(f"bigbatch: warning: a signal to this worker will stop it without a checkpoint ({why})")


def write_worker_info(run_dir: Path, rank: int, device: str) -> None:
    """workers/rank_N.json: which process and Ray node hold rank N (for operators, and the fault tests)."""
    directory = run_dir / "workers"
    directory.mkdir(parents=True, exist_ok=True)
    import ray

    info = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "device": device,
            "node_id": ray.get_runtime_context().get_node_id()}
    write_json_atomic(directory / f"rank_{rank}.json", info, indent=None)


def check_reachable(address: str, timeout_s: float, key: str = "cluster.address") -> None:
    """Fail fast with a clear error instead of Ray's endless reconnect loop on a wrong address. (A recipe's
    cluster.address has had its form checked at load; `bigbatch jobs --address` has not.)"""
    if address in ("", "auto", "local"):
        return
    if (split := split_address(address)) is None:
        raise RecipeError(f"{key}: expected HOST:PORT or SCHEME://HOST:PORT, got {address!r}")
    host, port = split
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise RecipeError(f"{key}: cannot reach {host}:{port} within {timeout_s:g} s "
                          f"({e.strerror or e.__class__.__name__})") from None


def ray_logging_level(verbose: bool) -> int:
    """The level of the driver's Ray loggers: errors only unless `verbose` (the rest is in Ray's log files)."""
    import logging

    return logging.INFO if verbose else logging.ERROR


def connect(cfg: ClusterConfig, verbose: bool = False) -> bool:
    """Join the recipe's cluster or start an embedded one; True if this call started Ray. Unless `verbose`,
    Ray's own output stays in its log files (session_*/logs): workers' output is not forwarded (the console
    comes through cluster/progress.py) and the driver's Ray loggers show errors only."""
    import ray

    if cfg.address:
        check_reachable(cfg.address, cfg.connect_timeout_s)
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": verbose, "logging_level": ray_logging_level(verbose)}
    if cfg.address:
        ray.init(address=cfg.address, **quiet)
    elif os.environ.get("RAY_ADDRESS"):  # a submitted job's driver: join the cluster it runs on
        ray.init(**quiet)
    else:
        ray.init(num_cpus=max(int(cfg.workers * cfg.cpus_per_worker + 0.999), 1), include_dashboard=False,
                 **quiet)
    return True


def launch_ray(recipe: Recipe, run_dir: Path, resume: str | None, verbose: bool = False) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = recipe.cluster
    # Bounded start: Ray Train otherwise waits for resources (and retries the wait) forever.
    # An elastic group starts only on resources Ray reports free, so its wait is for a restart that counted a
    # lost node still present: it gives up after cluster.restart_timeout_s and asks again with what is left.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(cfg.restart_timeout_s if cfg.elastic
                                                               else cfg.start_timeout_s)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started_here = connect(cfg, verbose)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    say_starting(cfg, "torch.distributed", run_dir)
    use_gpu = cfg.gpus_per_worker > 0
    storage = cfg.storage_path or str(run_dir / "ray")
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    stops, watch = DriverStops(run_dir), cfg.elastic and cfg.watch_nodes
    try:
        with driver_console() as console, NodeWatch(run_dir, cfg) if watch else contextlib.nullcontext():
            TorchTrainer(
                _worker_loop,
                train_loop_config={"recipe": recipe, "run_dir": str(run_dir), "resume": resume or "auto",
                                   "by_reference": same_file_system(storage, run_dir), "console_sink": console.sink,
                                   "trace_labels": os.environ.get(TRACE_ENV, "")},
                torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                scaling_config=ScalingConfig(num_workers=worker_range(cfg), use_gpu=use_gpu,
                                             resources_per_worker=resources,
                                             # the watch grows the group without redoing steps: Ray's resize off
                                             **({"elastic_resize_monitor_interval_s": 1e9} if watch else {})),
                run_config=RunConfig(name=run_dir.name, storage_path=storage,
                                     checkpoint_config=CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
                                     failure_config=FailureConfig(max_failures=cfg.max_failures,
                                                                  controller_failure_limit=cfg.max_failures)),
            ).fit()
    except Exception as e:  # Ray wraps worker errors; surface ours with their exit codes
        error = explain(e, cfg)
        record_final_failure(run_dir, error)
        raise error from None
    finally:
        stops.restore()
        if started_here:
            ray.shutdown()
    return run_outcome(run_dir)


def record_final_failure(run_dir: Path, error: Exception) -> None:
    """Ray gave up restarting the group: a run whose last word was "restarting" (rank 0 records each failed
    attempt so, cluster.max_failures > 0) is now failed, in summary.json and metrics.jsonl."""
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return
    if summary.get("status") != "restarting":
        return
    from bigbatch.trainer.records.track import MetricsFile

    final = {**summary, "status": "failed", "error": str(error).splitlines()[0] if str(error) else summary["error"]}
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    metrics.write({"event": "failed", **final})
    metrics.close()
    write_json_atomic(summary_path, final)


def worker_range(cfg: ClusterConfig) -> int | tuple[int, int]:
    """Ray Train's group size: fixed, or (min, max) for an elastic group (cluster.min_workers), which starts
    with as many workers as can be placed and restarts with those left; the plan holds the global batch at
    whatever size it gets (trainer/recipe/plan.py: world_shape)."""
    return (cfg.min_workers, cfg.workers) if cfg.elastic else cfg.workers


def say_starting(cfg: ClusterConfig, backend: str, run_dir: Path) -> None:
    """The driver's first line: what starts where (the workers take a while to appear)."""
    where = cfg.address or ("the Ray cluster of this job" if os.environ.get("RAY_ADDRESS") else "Ray on this machine")
    print(f"bigbatch: starting {cfg.workers} {backend} worker{'s' * (cfg.workers > 1)} on {where}; run directory "
          f"{run_dir}", file=sys.stderr, flush=True)


def run_outcome(run_dir: Path) -> dict:
    """What rank 0 wrote to summary.json, as the driver's result: the summary, or Interrupted /
    TrainingFailed with the run's own exit code."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["status"] == "interrupted":
        from bigbatch.trainer.run.loop import Interrupted

        raise Interrupted(summary["signal"], Path(summary["checkpoint"]))
    if summary["status"] != "finished":
        raise TrainingFailed(f"{run_dir}: the run ended with status {summary['status']!r}: "
                             f"{summary.get('error', '')}")
    return summary


class DriverStops(StopRequests):
    """The driver's SIGINT/SIGTERM become the run's STOP file; a second signal stops the driver at once."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir
        self.install()

    def _on_signal(self, signum, frame) -> None:
        super()._on_signal(signum, frame)
        request_stop(self.run_dir, signum)
        print(f"bigbatch: signal {signum}: the workers checkpoint at the next step and stop "
              "(send it again to stop at once)", flush=True)


def explain(error: Exception, cfg: ClusterConfig) -> Exception:
    cause = root_cause(error)
    if isinstance(cause, (RecipeError, TrainingFailed)):
        return cause
    if "startup timed out" in str(cause):
        return TrainingFailed(f"cluster: the {cfg.workers} workers ({cfg.cpus_per_worker:g} CPU, "
                              f"{cfg.gpus_per_worker:g} GPU each) did not start within cluster.start_timeout_s="
                              f"{cfg.start_timeout_s:g} s: the cluster lacks free resources or nodes")
    return TrainingFailed(f"Ray Train run failed: {cause.__class__.__name__}: {str(cause).splitlines()[0]}")


def root_cause(error: BaseException) -> BaseException:
    seen = error
    for _ in range(10):
        nxt = getattr(seen, "cause", None) or seen.__cause__
        if nxt is None:
            break
        seen = nxt
    failures = getattr(seen, "worker_failures", None)
    if failures:
        return next(iter(failures.values()))
    return seen
