"""The driver's NodeWatch (cluster/node_loss.py) on a real Ray: a node it saw alive that is gone from Ray's node
table makes it refresh Ray Train's placement view and withdraw this job's pending placement group, whose wait
then fails at once instead of after cluster.restart_timeout_s. (The 2-node test in test_submit.py kills a real
node; here the lost node is one the watch saw that the one-node table lacks.)"""

import pytest


@pytest.mark.timeout(120)
def test_a_node_marked_dead_withdraws_this_jobs_pending_restart_and_its_wait_fails_at_once(ray_cluster, tmp_path):
    ray = ray_cluster
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )
    from ray.util.placement_group import placement_group, remove_placement_group

    from bigbatch.cluster.node_loss import NodeWatch
    from bigbatch.trainer.recipe.cluster_track_search import ClusterConfig

    get_or_create_autoscaling_coordinator()  # Ray Train makes it for an elastic run
    said = []
    watch = NodeWatch(tmp_path, ClusterConfig(backend="torch", workers=2, min_workers=1), say=said.append)
    restart = placement_group([{"CPU": 2}] * 2)  # sized on a stale view: more than the cluster has
    try:
        assert restart.id.hex().endswith(ray.get_runtime_context().get_job_id())  # how the watch finds its own
        assert not restart.wait(0.5)
        assert watch.check() == ([], []) and said == []  # nothing died: nothing withdrawn
        assert ray.util.placement_group_table(restart)["state"] == "PENDING"

        lost = "f" * 56
        watch.seen.add(lost)
        assert watch.check() == ([lost], []) and watch.lost == [lost]
        assert ray.util.placement_group_table(restart)["state"] == "REMOVED"
        with pytest.raises(Exception, match="does not exist"):  # a wait that ran out would return False
            restart.wait(30)
        assert said == [f"bigbatch: Ray marked node {lost[:8]} dead; the group restarts on the nodes alive (a "
                        "pending restart was withdrawn)"]
        assert watch.check() == ([], [])  # reported once
    finally:
        if ray.util.placement_group_table(restart)["state"] != "REMOVED":
            remove_placement_group(restart)


def test_the_workers_that_fit_count_whole_workers_per_alive_node_up_to_cluster_workers():
    from bigbatch.cluster.node_loss import workers_that_fit
    from bigbatch.trainer.recipe.cluster_track_search import ClusterConfig

    def node(cpus, gpus, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpus, "GPU": gpus}}

    table = [node(8, 2), node(3.5, 8), node(64, 8, alive=False), node(1, 0)]
    gpu = ClusterConfig(backend="torch", workers=16, cpus_per_worker=2, gpus_per_worker=1)
    assert workers_that_fit(table, gpu) == 2 + 1  # 8 CPUs / 2 GPUs -> 2; 3.5 CPUs -> 1; a dead node holds none
    cpu = ClusterConfig(backend="torch", workers=16, cpus_per_worker=1)
    assert workers_that_fit(table, cpu) == 8 + 3 + 1
    assert workers_that_fit(table, ClusterConfig(backend="torch", workers=4, cpus_per_worker=1)) == 4


def test_the_running_world_size_is_the_last_starts_and_none_while_restarting(tmp_path):
    from bigbatch.cluster.node_loss import running_world_size

    metrics = tmp_path / "metrics.jsonl"
    assert running_world_size(tmp_path) == 0  # nothing yet
    metrics.write_text('{"event": "start", "step": 0, "world_size": 2}\n{"step": 1, "loss": 1.0, "world_size": 2}\n')
    assert running_world_size(tmp_path) == 2
    metrics.write_text(metrics.read_text() + '{"event": "attempt_failed", "step": 4}\n')
    assert running_world_size(tmp_path) == 0
    metrics.write_text(metrics.read_text() + '{"event": "start", "step": 4, "world_size": 1}\n{"step": 5, "lo')
    assert running_world_size(tmp_path) == 1  # a line being written is left out


@pytest.mark.timeout(120)
def test_a_joined_node_asks_a_running_group_that_fits_more_workers_to_grow_once(ray_cluster, tmp_path):
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )

    from bigbatch.cluster.node_loss import NodeWatch
    from bigbatch.trainer.recipe.cluster_track_search import ClusterConfig
    from bigbatch.trainer.run.stop import GROW_FILE

    get_or_create_autoscaling_coordinator()
    said = []
    watch = NodeWatch(tmp_path, ClusterConfig(backend="torch", workers=4, min_workers=1), say=said.append)
    (tmp_path / "metrics.jsonl").write_text('{"event": "start", "step": 0, "world_size": 1}\n')
    node = watch.seen.pop()  # as if this node (2 CPUs: 2 workers) had just joined
    assert watch.check() == ([], [node])
    assert (tmp_path / GROW_FILE).read_text() == "2\n"  # what fits, not cluster.workers
    assert said == [f"bigbatch: node {node[:8]} joined: the group checkpoints after its next step and restarts "
                    "with up to 2 workers (was 1)"]
    (tmp_path / GROW_FILE).unlink()
    assert watch.check() == ([], []) and not (tmp_path / GROW_FILE).exists()  # once per join

    (tmp_path / "metrics.jsonl").write_text('{"event": "start", "step": 0, "world_size": 2}\n')
    watch.seen.pop()
    watch.check()  # the group already has what fits
    assert not (tmp_path / GROW_FILE).exists() and len(said) == 1
