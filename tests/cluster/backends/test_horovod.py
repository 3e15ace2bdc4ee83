"""cluster.backend: horovod - the same recipe gives the same weights as on torch.distributed, SyncBN over
Horovod equals BatchNorm over the global batch, a killed worker's group restarts from the last checkpoint,
and the rendezvous server listens on loopback only. Skipped (with the reason) only where horovod cannot be
imported: `make test` builds it first (`make horovod`)."""

import json
import sys

import pytest
import torch
import torch.nn as nn

from bigbatch.cluster.launch import launch
from bigbatch.trainer.recipe import load_recipe
from tests.run_files import launch_and_kill_rank_1, records

hvd = pytest.importorskip("horovod.torch", reason="horovod is not installed here: run `make horovod`")

TWO = ["cluster.workers=2", "train.eval_every_epochs=0", "optim.warmup_epochs=0"]


def final_model(run_dir, step):
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_horovod_and_torch_backends_train_the_same_weights(ray_cluster, tiny, tmp_path):
    # synced BN, accumulation (2 micro-steps of 8 per worker), momentum-corrected SGD with weight decay
    common = [*TWO, "train.max_steps=5", "bn.sync=all", "data.batch_size=8", "train.accumulation_steps=2"]
    on_horovod = launch(load_recipe(tiny, [*common, "cluster.backend=horovod"]), tmp_path / "hvd")
    on_torch = launch(load_recipe(tiny, [*common, "cluster.backend=torch"]), tmp_path / "torch")
    assert on_horovod["step"] == on_torch["step"] == 5 and on_horovod["world_size"] == 2
    a, b = final_model(tmp_path / "hvd", 5), final_model(tmp_path / "torch", 5)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=1e-5, msg=key)
    steps = [r for r in records(tmp_path / "hvd") if "loss" in r]
    assert steps and all(len(r["worker_comm_s"]) == 2 and r["worker_comm_s"][0] > 0 for r in steps)
    # the gradient noise scale's two norms: the same examples and weights give the same estimates on both
    noise = {run: [r[key] for r in records(tmp_path / run) if "loss" in r for key in ("grad_sq_norm_est",
                                                                                       "grad_var_est")]
             for run in ("hvd", "torch")}
    assert noise["hvd"] and noise["hvd"] == pytest.approx(noise["torch"], rel=1e-3, abs=1e-3)
    assert all(json.loads((tmp_path / "hvd" / "workers" / f"rank_{k}.json").read_text())["rank"] == k
               for k in (0, 1))


def _sync_bn_against_global(group_sizes, world=2):
    """On each rank, for each group size (None: the whole world): bigbatch's SyncBatchNorm over Horovod vs
    nn.BatchNorm2d over the batch of the ranks it normalises with (every rank draws every rank's data from one
    seed, unequal sizes per rank). One Horovod session for all sizes: starting 8 ranks costs seconds."""
    import horovod.torch as hvd

    from bigbatch.cluster.backends.horovod_backend import init_horovod

    init_horovod(world, tuple(g for g in group_sizes if g))
    try:
        return [_compare_sync_bn(hvd, group_size) for group_size in group_sizes]
    finally:
        hvd.shutdown()


def _compare_sync_bn(hvd, group_size) -> dict:
    from bigbatch.cluster.backends.horovod_backend import HorovodCollective

    rank, size = hvd.rank(), hvd.size()
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(3 + r, 4, 5, 5, generator=gen) * (r + 1) + r for r in range(size)]
    dys = [torch.randn(x.shape, generator=gen) for x in xs]
    collective = HorovodCollective("cpu")
    collective = collective.subgroup(group_size) if group_size else collective
    if group_size and 1 < group_size < size:  # the block's own process set, not a world-wide all-gather
        assert collective.process_set is not None and collective.process_set.size() == group_size
    ranks = list(range(rank // (group_size or size) * (group_size or size),
                       rank // (group_size or size) * (group_size or size) + (group_size or size)))
    reference = nn.BatchNorm2d(4)
    ours = collective.sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))
    with torch.no_grad():
        for bn in (reference, ours[0]):
            bn.weight.copy_(torch.linspace(0.5, 2, 4))
            bn.bias.copy_(torch.linspace(-1, 1, 4))
    x_all = torch.cat([xs[r] for r in ranks]).requires_grad_()
    y_all = reference(x_all)
    (y_all * torch.cat([dys[r] for r in ranks])).sum().backward()
    x = xs[rank].clone().requires_grad_()
    y = ours(x)
    (y * dys[rank]).sum().backward()
    start = sum(len(xs[r]) for r in ranks if r < rank)
    diffs = {"y": (y - y_all[start:start + len(x)]).abs().max().item(),
             "dx": (x.grad - x_all.grad[start:start + len(x)]).abs().max().item(),
             "running_mean": (ours[0].running_mean - reference.running_mean).abs().max().item(),
             "running_var": (ours[0].running_var - reference.running_var).abs().max().item()}
    # dw, db: the reference's are over its whole batch; ours are this rank's share, summed over the ranks
    for name in ("weight", "bias"):
        grad = getattr(ours[0], name).grad.clone()
        hvd.allreduce_(grad, op=hvd.Sum) if not group_size else collective.all_reduce(grad, op="sum")
        diffs["d" + name] = (grad - getattr(reference, name).grad).abs().max().item()
    hvd.barrier()  # blocks finish at their own pace; the next check and the shutdown are world-wide
    return diffs


def run_on_horovod(fn, workers: int, *args) -> list:
    import ray.cloudpickle
    from horovod.ray import RayExecutor

    from bigbatch.cluster.horovod_launch import _close, _rendezvous_on

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this file
    executor = RayExecutor(RayExecutor.create_settings(timeout_s=90), num_workers=workers,
                           cpus_per_worker=2 / workers)
    servers: list = []
    try:
        with _rendezvous_on("127.0.0.1") as servers:
            executor.start(extra_env_vars={"HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1"})
        return executor.run(fn, args=list(args))
    finally:
        executor.shutdown()
        _close(servers)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sync_batchnorm_over_horovod_equals_batchnorm_over_the_global_batch(ray_cluster):
    results = run_on_horovod(_sync_bn_against_global, 2, (None, 1), 2)  # the world, and blocks of one
    assert len(results) == 2
    for diffs in (d for rank in results for d in rank):
        assert max(diffs.values()) < 1e-5, diffs


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_grouped_sync_batchnorm_on_8_horovod_ranks_equals_batchnorm_over_each_group(ray_cluster):
    results = run_on_horovod(_sync_bn_against_global, 8, (2, 4), 8)
    assert len(results) == 8 and all(len(rank) == 2 for rank in results)
    for diffs in (d for rank in results for d in rank):
        assert max(diffs.values()) < 1e-5, diffs


def test_the_rendezvous_server_listens_on_loopback_only():
    import horovod.ray.runner as runner

    from bigbatch.cluster.horovod_launch import _close, _rendezvous_on

    with _rendezvous_on("127.0.0.1") as servers:
        server = runner.RendezvousServer(False)
        port = server.start()
    try:
        assert servers == [server] and server._httpd.server_address == ("127.0.0.1", port)
    finally:
        _close(servers)
    assert runner.RendezvousServer is not type(server)  # horovod's own class is back after start()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_horovod_worker_restarts_the_group_from_the_last_checkpoint(ray_cluster, tiny, tmp_path):
    run_dir = tmp_path / "run"
    recipe = load_recipe(tiny, [*TWO, "cluster.backend=horovod", "train.max_steps=30",
                                "train.checkpoint_every_steps=3", "train.log_every_steps=1",
                                "cluster.max_failures=1"])
    summary, _ = launch_and_kill_rank_1(recipe, run_dir, at_step=7, timeout_s=200)
    assert summary["step"] == 30 and summary["status"] == "finished"
    starts = [r for r in records(run_dir) if r.get("event") == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] and 3 <= starts[1]["step"] < 30
    assert starts[1]["run_id"] == starts[0]["run_id"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_training_error_on_horovod_fails_at_once_without_restarting_the_group(ray_cluster, tiny, tmp_path):
    from bigbatch.trainer.errors import TrainingFailed

    recipe = load_recipe(tiny, [*TWO, "cluster.backend=horovod", "optim.base_lr=1e30", "train.max_steps=20",
                                "cluster.max_failures=2"])
    with pytest.raises(TrainingFailed, match="non-finite loss"):
        launch(recipe, tmp_path / "run")
    assert [r.get("event") for r in records(tmp_path / "run") if "event" in r] == ["start", "failed"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_horovod_evaluation_scores_the_checkpointed_model_with_unsynced_batchnorm(ray_cluster, tiny, tmp_path):
    """bn.sync: none leaves each rank its own BatchNorm running statistics; the reported evaluation must be
    that of the checkpoint (rank 0's model), not a blend of the ranks' models."""
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.run.evaluate import evaluate
    from bigbatch.trainer.run.loop import Trainer

    common = ["cluster.workers=2", "optim.warmup_epochs=0", "train.max_steps=6", "bn.sync=none",
              "train.eval_every_epochs=0"]
    summary = launch(load_recipe(tiny, [*common, "cluster.backend=horovod"]), tmp_path / "hvd")
    checkpoint = tmp_path / "hvd" / "checkpoints" / "step_00000006.pt"
    one = Trainer(load_recipe(tiny, [*common, "cluster.workers=1", "cluster.backend=local"]), tmp_path / "one",
                  LocalCollective(), resume=str(checkpoint))
    alone = evaluate(one.model, one.parts.data.val, LocalCollective(), 32)
    reported = [r for r in records(tmp_path / "hvd") if "val_loss" in r and "event" not in r][-1]
    assert summary["top1"] == pytest.approx(alone["top1"], abs=1e-9)
    assert reported["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-5)
