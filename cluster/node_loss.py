"""An elastic Ray run that loses a node restarts on the nodes alive as soon as Ray knows the node is dead.

Ray Train's controller notices a dead worker within a health check (about 1 s) and sizes the restart from the
resources its AutoscalingCoordinator reserved from Ray's node table. That view is refreshed every 20 s, and Ray's
control store (GCS) marks a node dead only after its missed heartbeats (about 15 s by default). So the restart
counts the lost node still, asks for the old group size, and its placement group waits out
`cluster.restart_timeout_s` (60 s) before the controller asks again with what is left: 75.8 s from the kill to
the first step of the smaller group on the 2-node local cluster, against 21.7 s with the watch (medians of 3,
bench/node_loss.py).

`NodeWatch` runs in the driver for the length of an elastic run. Once a second it reads the node table; when a
node it saw alive is dead, it has the coordinator re-read the table now, and removes this job's placement
groups that are still pending: they were sized on the old view and cannot be placed. The controller's wait then
fails at once and it asks again, with the fresh view (this counts as one controller failure against
`cluster.max_failures`). What is left is the control store's own detection time.

It also grows the group gracefully. When a node joins and the nodes alive hold more workers than the running
group has (up to `cluster.workers`), it refreshes the view and writes the run's GROW request: every rank
checkpoints after the same step and the attempt ends, so Ray restarts the group larger from that checkpoint
with no step redone (Ray's own policy restarts it from the newest checkpoint whenever its monitor looks, every
60 s, so steps since can be redone; its monitor is turned off while the watch runs). A grow, like a leave, counts as one failure against
`cluster.max_failures`.

A worker that leaves on SIGTERM (its node shutting down) drains its node (`drain_own_node`), so that no
restart places a worker there and Ray takes the node out once it is idle.

The coordinator is an internal actor of Ray's: if a later Ray lacks it, the restart is as slow as before, with
a warning.
"""

import threading
import time
from collections.abc import Callable
from pathlib import Path

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import ClusterConfig
from bigbatch.trainer.records.history import metrics_path, read_history
from bigbatch.trainer.records.track import notice
from bigbatch.trainer.run.stop import request_grow

COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # Ray Data/Train's actor: (name, namespace)
HEAD_RESOURCE = "node:__internal_head__"


def alive_nodes(table: list[dict]) -> set[str]:
    return {node["NodeID"] for node in table if node["Alive"]}


def own_pending_groups(table: dict, job_id: str) -> list[str]:
    """This job's placement groups still waiting to be placed (a placement group id ends with its job's id)."""
    return [pg_id for pg_id, info in table.items() if info["state"] == "PENDING" and pg_id.endswith(job_id)]


def workers_that_fit(table: list[dict], cfg: ClusterConfig) -> int:
    """How many workers the alive nodes hold (each node whole workers of cluster.cpus_per_worker and
    cluster.gpus_per_worker), at most cluster.workers."""
    need = {"CPU": cfg.cpus_per_worker, "GPU": cfg.gpus_per_worker}
    need = {name: amount for name, amount in need.items() if amount > 0}
    if not need:
        return cfg.workers
    fit = sum(min(int(node["Resources"].get(name, 0.0) // amount) for name, amount in need.items())
              for node in table if node["Alive"])
    return min(fit, cfg.workers)


def running_world_size(run_dir: Path) -> int:
    """The world size of the group training now (its start record), or 0 while none is (restarting)."""
    try:
        events = [r for r in read_history(metrics_path(run_dir)) if r.get("event")]
    except (OSError, ValueError, RecipeError):  # no metrics.jsonl yet: no group has started
        return 0
    return int(events[-1].get("world_size", 0)) if events and events[-1]["event"] == "start" else 0


class NodeWatch:
    """A daemon thread of the driver: see the module docstring. `interval_s` is how often it reads the table."""

    def __init__(self, run_dir: Path, cfg: ClusterConfig, interval_s: float = 1.0,
                 say: Callable[[str], None] = notice):
        import ray

        self.run_dir, self.cfg, self.interval_s, self.say = Path(run_dir), cfg, interval_s, say
        self.job_id = ray.get_runtime_context().get_job_id()
        self.seen = alive_nodes(ray.nodes())
        self.lost: list[str] = []  # node ids, in the order they were found dead
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bigbatch-node-watch", daemon=True)

    def __enter__(self) -> "NodeWatch":
        # the coordinator outlives jobs and re-reads the table only every 20 s: a node that joined since would
        # be left out of this run's first group (a cluster's first run creates the coordinator, fresh)
        refresh_placement_view(quiet=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.check()
            except Exception as e:  # the driver's connection is going away: the run is ending anyway
                if not self.stopped.is_set():
                    self.say(f"bigbatch: warning: node watch: {e.__class__.__name__}: {e}")

    def check(self) -> tuple[list[str], list[str]]:
        """Read the node table once: on a newly dead node, refresh the placement view and withdraw a pending
        restart; on a joined one, ask the group to grow if it fits more workers. Returns (dead, joined)."""
        import ray

        table = ray.nodes()
        alive = alive_nodes(table)
        dead, joined = sorted(self.seen - alive), sorted(alive - self.seen)
        self.seen = alive
        if dead:
            self.lost += dead
            withdrawn = refresh_placement_view() and withdraw_pending(self.job_id)
            self.say(f"bigbatch: Ray marked node{'s' * (len(dead) > 1)} {', '.join(n[:8] for n in dead)} dead; "
                     f"the group restarts on the nodes alive{' (a pending restart was withdrawn)' * bool(withdrawn)}")
        if joined:
            self._grow(table, joined)
        return dead, joined

    def _grow(self, table: list[dict], joined: list[str]) -> None:
        running, fit = running_world_size(self.run_dir), workers_that_fit(table, self.cfg)
        if running and fit > running and refresh_placement_view():
            request_grow(self.run_dir, fit)
            self.say(f"bigbatch: node{'s' * (len(joined) > 1)} {', '.join(n[:8] for n in joined)} joined: the "
                     f"group checkpoints after its next step and restarts with up to {fit} workers (was {running})")


def refresh_placement_view(quiet: bool = False) -> bool:
    """Make Ray Train's AutoscalingCoordinator re-read the node table now rather than at its next 20 s tick;
    False (with a warning unless `quiet`) if it cannot be reached."""
    import ray

    try:
        coordinator = ray.get_actor(COORDINATOR[0], namespace=COORDINATOR[1])
        ray.get(coordinator.get_reserved_resources.remote("bigbatch-refresh", recompute=True), timeout=10)
    except Exception as e:  # an internal actor of Ray's: another version may lack it
        if not quiet:
            notice(f"bigbatch: warning: could not refresh Ray Train's view of the cluster ({e.__class__.__name__}); "
                   "a restart may wait cluster.restart_timeout_s for a lost node, and the group does not grow")
        return False
    return True


def withdraw_pending(job_id: str) -> int:
    """Remove this job's pending placement groups (a restart sized on the old view); returns how many."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pending = own_pending_groups(ray.util.placement_group_table(), job_id)
    for pg_id in pending:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
    return len(pending)


def drain_own_node(why: str, deadline_s: float = 30.0) -> bool:
    """A worker that leaves on SIGTERM takes it as its node shutting down (a spot notice) and tells Ray so: the
    node is drained for preemption, so no restart places a worker there, and Ray takes it out of the cluster
    once its work has ended (the watch then sees it dead). Never the head node, which holds the cluster's
    control store; False when nothing was drained."""
    import ray
    from ray.core.generated import autoscaler_pb2

    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
    if node is None or HEAD_RESOURCE in node["Resources"]:
        return False
    try:
        gcs = ray._private.worker.global_worker.gcs_client  # what `ray drain-node` calls
        accepted, refusal = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value(
            "DRAIN_NODE_REASON_PREEMPTION"), why[:200], int((time.time() + deadline_s) * 1000))
    except Exception as e:  # a private client of Ray's: another version may lack it
        accepted, refusal = False, f"{e.__class__.__name__}: {e}"
    if not accepted:
        notice(f"bigbatch: warning: Ray did not drain node {node_id[:8]} ({refusal}); a restart may place a "
               "worker on it again")
    return bool(accepted)
