"""Run a recipe on N Horovod workers launched by Ray (`cluster.backend: horovod`).

Ray Train V2 deprecates HorovodTrainer, so the workers come from
`horovod.ray.RayExecutor` (Ray actors that Horovod joins over gloo, or nccl on
GPUs) and run the same Trainer over a HorovodCollective. Checkpoints, metrics,
summary.json and the STOP file live in the run directory, as on the torch
backend (a multi-node run needs it on shared storage; there is no Ray Train
storage here). A worker that dies fails the attempt: the driver shuts the
group down and starts a fresh one that resumes from the run directory's newest
valid checkpoint, up to `cluster.max_failures` times (not after a training
error such as a non-finite loss or bad input, which would only repeat).

Horovod's rendezvous server (an HTTP key-value store the workers meet at)
listens on all interfaces by default; here it listens on 127.0.0.1 when Ray is
embedded on this machine, and on this node's Ray address only when the recipe
joins a cluster (`cluster.address` or a submitted job).
"""

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bigbatch.trainer.errors import RecipeError, TrainingFailed
from bigbatch.trainer.recipe.schema import ClusterConfig, Recipe


def _worker(recipe: Recipe, run_dir: str, resume: str | None, console_sink=None) -> dict | None:
    """One Horovod rank: join, train, return rank 0's summary (None when a signal stopped the run)."""
    import horovod.torch as hvd
    import torch

    from bigbatch.cluster.backends.horovod_backend import HorovodCollective, init_horovod
    from bigbatch.cluster.progress import install_worker_channel
    from bigbatch.cluster.ray_launch import write_worker_info
    from bigbatch.trainer.run.loop import Interrupted, Trainer

    if console_sink is not None:
        install_worker_channel(console_sink)
    init_horovod(recipe.cluster.workers, (recipe.bn.group_size,) if recipe.bn.sync == "group" else ())
    device = torch.device("cuda", hvd.local_rank()) if recipe.cluster.gpus_per_worker > 0 else "cpu"
    if isinstance(device, torch.device):
        torch.cuda.set_device(device)
    collective = HorovodCollective(device)
    write_worker_info(Path(run_dir), collective.rank, str(device))
    try:
        return Trainer(recipe, run_dir, collective, resume=resume,
                       restartable=recipe.cluster.max_failures > 0).fit()
    except Interrupted:
        return None
    finally:
        hvd.shutdown()


@contextlib.contextmanager
def _rendezvous_on(host: str) -> Iterator[list]:
    """While RayExecutor.start() runs, its rendezvous server binds to `host` instead of every interface;
    yields the servers started, for closing them (RayExecutor.shutdown leaves the socket open)."""
    import horovod.ray.runner as runner
    from horovod.runner.http import http_server

    started: list = []

    class BoundRendezvousServer(http_server.RendezvousServer):
        def start(self, handler_cls=http_server.RendezvousHandler) -> int:
            self._httpd = http_server.RendezvousHTTPServer((host, 0), handler_cls, self._verbose)
            self._listen_thread = http_server.in_thread(target=self._httpd.serve_forever)
            started.append(self)
            return self._httpd.server_address[1]

    original = runner.RendezvousServer
    runner.RendezvousServer = BoundRendezvousServer
    try:
        yield started
    finally:
        runner.RendezvousServer = original


def _close(servers: list) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
            server._httpd.server_close()


def launch_horovod(recipe: Recipe, run_dir: Path, resume: str | None, verbose: bool = False) -> dict:
    """Train `recipe` on cluster.workers Horovod ranks placed by Ray; a failed group restarts from the newest
    checkpoint up to cluster.max_failures times. Returns the run's outcome (ray_launch.run_outcome)."""
    ray, executor_cls = _import_horovod_ray()
    from bigbatch.cluster.progress import DriverConsole
    from bigbatch.cluster.ray_launch import DriverStops, connect, run_outcome, say_starting

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = recipe.cluster
    started_here = connect(cfg, verbose)
    host = _rendezvous_host(cfg, started_here)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    say_starting(cfg, "Horovod", run_dir)
    new_executor = _executor_factory(executor_cls, cfg)
    stops = DriverStops(run_dir)
    console = DriverConsole()
    try:
        for attempt in range(cfg.max_failures + 1):
            failure = _run_group(new_executor(), host, recipe, run_dir, resume if attempt == 0 else "auto",
                                 console)
            if failure is None:
                break
            _give_up_or_restart(failure, cfg, run_dir, attempt, console)
    finally:
        console.close()
        stops.restore()
        if started_here:
            ray.shutdown()
    return run_outcome(run_dir)


def _import_horovod_ray() -> tuple:
    """(ray, horovod.ray.RayExecutor), or a RecipeError saying why the horovod backend is not usable here."""
    from bigbatch.cluster.backends.horovod_backend import require_horovod

    try:
        require_horovod()
        import ray
        from horovod.ray import RayExecutor
    except ImportError as e:
        raise RecipeError(f"cluster.backend: horovod is not usable here ({e})") from None
    return ray, RayExecutor


def _rendezvous_host(cfg: ClusterConfig, started_here: bool) -> str:
    """Where the rendezvous server listens: loopback when Ray is embedded on this machine, else this node's
    Ray address (the recipe joins a cluster: cluster.address, RAY_ADDRESS or a submitted job)."""
    import ray

    embedded = started_here and not cfg.address and not os.environ.get("RAY_ADDRESS")
    return "127.0.0.1" if embedded else ray.util.get_node_ip_address()


def _executor_factory(executor_cls: type, cfg: ClusterConfig) -> Callable[[], Any]:
    """A maker of a fresh RayExecutor per attempt (one settings object: start and placement timeouts)."""
    settings = executor_cls.create_settings(timeout_s=int(cfg.start_timeout_s),
                                            placement_group_timeout_s=int(cfg.start_timeout_s))
    use_gpu = cfg.gpus_per_worker > 0
    return lambda: executor_cls(settings, num_workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                                use_gpu=use_gpu, gpus_per_worker=int(cfg.gpus_per_worker) if use_gpu else None)


def _run_group(executor: Any, host: str, recipe: Recipe, run_dir: Path, resume: str | None,
               console: Any) -> Exception | None:
    """One attempt: start the group (rendezvous on `host`), train on every rank, shut the group down.
    Returns the first failure (a rank's, a placement timeout, a rendezvous failure), or None."""
    servers: list = []
    try:
        with _rendezvous_on(host) as servers:
            executor.start(extra_env_vars={"HOROVOD_GLOO_RENDEZVOUS_ADDR": host})
        refs = executor.run_remote(_worker, args=[recipe, str(run_dir), resume, console.sink])
        return _wait(refs)
    except Exception as e:  # placement timeout, rendezvous failure
        return e
    finally:
        with contextlib.suppress(Exception):
            executor.shutdown()
        _close(servers)


def _give_up_or_restart(failure: Exception, cfg: ClusterConfig, run_dir: Path, attempt: int, console: Any) -> None:
    """Raise the explained failure (recorded in the run directory) when a restart cannot help: a training error
    that would repeat, no restarts left, or a stop asked for; else say that the group restarts."""
    from bigbatch.cluster.ray_launch import explain, record_final_failure, root_cause

    cause = explain(failure, cfg)
    deterministic = isinstance(root_cause(failure), (RecipeError, TrainingFailed))  # would fail again
    if deterministic or attempt == cfg.max_failures or _stopped(run_dir):
        record_final_failure(run_dir, cause)
        raise cause
    console.apply(("say", f"bigbatch: the Horovod worker group failed ({cause}); restarting it from the "
                          f"newest checkpoint (attempt {attempt + 2} of {cfg.max_failures + 1})"))


def _wait(refs: list) -> Exception | None:
    """Wait for every rank; the first rank that fails ends the wait (the others may be blocked on it)."""
    import ray

    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(ready[0])
        except Exception as e:
            return e
    return None


def _stopped(run_dir: Path) -> bool:
    """A signal already asked this run to stop: do not restart it."""
    from bigbatch.trainer.run.stop import STOP_FILE

    return (run_dir / STOP_FILE).exists()

