"""Cross-replica BatchNorm equals BatchNorm over the concatenated global batch (2 and 3 gloo processes)."""

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.distributed.sync_bn import SyncBatchNorm, convert_sync_batchnorm
from tests.gloo import spawn_gloo

BATCHES = {2: [3, 5], 3: [2, 4, 1], 8: [2, 3, 1, 4, 2, 2, 3, 1]}  # unequal per-replica batch sizes


def global_problem(world: int):
    g = torch.Generator().manual_seed(0)
    total = sum(BATCHES[world])
    x = torch.randn(total, 4, 3, 3, generator=g) * 2 + 0.5
    r = torch.randn(total, 4, 3, 3, generator=g)  # loss = sum(y * r): dL/dy = r everywhere
    return x, r


def reference(world: int, ranks: list[int] | None = None):
    """BatchNorm over the concatenated batch of `ranks` (all of them by default)."""
    x, r = global_problem(world)
    if ranks is not None:
        bounds = [sum(BATCHES[world][:k]) for k in range(world + 1)]
        x, r = (torch.cat([t[bounds[k]:bounds[k + 1]] for k in ranks]) for t in (x, r))
    bn = nn.BatchNorm2d(4, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, 4))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    x = x.clone().requires_grad_()
    for _ in range(2):  # two steps: running statistics accumulate
        y = bn(x)
    (y * r).sum().backward()
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var


def _worker(rank: int, world: int, group_size: int = 0):
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    collective = TorchDistributedCollective("cpu")
    group = collective.subgroup(group_size) if group_size else collective
    members = list(range(rank - rank % group_size, rank - rank % group_size + group_size)) if group_size \
        else list(range(world))
    x, r = global_problem(world)
    lo = sum(BATCHES[world][:rank])
    hi = lo + BATCHES[world][rank]
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4, momentum=0.3)), group)[0]
    assert isinstance(bn, SyncBatchNorm)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, 4))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    xs = x[lo:hi].clone().requires_grad_()
    for _ in range(2):
        y = bn(xs)
    (y * r[lo:hi]).sum().backward()
    ref_y, ref_dx, ref_dw, ref_db, ref_rm, ref_rv = reference(world, members)
    start = sum(BATCHES[world][k] for k in members if k < rank)  # this rank's rows in its group's batch
    dw, db = bn.weight.grad.clone(), bn.bias.grad.clone()
    group.all_reduce(dw)  # the group's weight/bias gradients: its members' local ones summed
    group.all_reduce(db)
    torch.testing.assert_close(y.detach(), ref_y[start:start + hi - lo], rtol=0, atol=1e-5)
    torch.testing.assert_close(xs.grad, ref_dx[start:start + hi - lo], rtol=0, atol=1e-5)
    torch.testing.assert_close(dw, ref_dw, rtol=0, atol=1e-5)
    torch.testing.assert_close(db, ref_db, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref_rm, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_var, ref_rv, rtol=0, atol=1e-5)
    bn.eval()
    torch.testing.assert_close(bn(x[lo:hi]), nn.functional.batch_norm(
        x[lo:hi], ref_rm, ref_rv, bn.weight, bn.bias, False, 0.0, bn.eps), rtol=0, atol=1e-5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 3])
def test_sync_bn_equals_global_batchnorm(world):
    spawn_gloo(_worker, world)


def _grouped_workers(rank: int, world: int, group_sizes: tuple[int, ...]):
    for group_size in group_sizes:  # one set of processes for every group size: starting 8 costs seconds
        _worker(rank, world, group_size)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_grouped_sync_bn_on_8_processes_equals_batchnorm_over_each_group():
    """bn.sync: group at 8 ranks (torch.distributed subgroups), groups of 2 and of 4: each block normalises
    over its own concatenated batch, independently of the other blocks."""
    spawn_gloo(_grouped_workers, 8, (2, 4))


def test_single_replica_sync_bn_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, 5)
    bn = nn.BatchNorm2d(3)
    sync = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), LocalCollective())[0]
    torch.testing.assert_close(sync(x), bn(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(sync.running_var, bn.running_var, rtol=0, atol=1e-6)
