"""The Collective over Horovod (`cluster.backend: horovod`): gloo on CPU, nccl on GPU when Horovod has it.

Gradients: one fused `hvd.grouped_allreduce_` (average) of every gradient after
the last accumulation micro-step, before the optimizer step; micro-steps before
it only accumulate locally - the semantics of DDP's no_sync and of
`hvd.DistributedOptimizer(backward_passes_per_step=k)`, with k free to change
between epochs (batch growth). The wrapped optimizer is the recipe's own (SGD
with momentum correction, LARS, LAMB) behind a thin proxy, so checkpoints hold
the same optimizer state as on the torch backend.

Start: rank 0's parameters and buffers are broadcast to every rank (as DDP
does), and the optimizer state too when it holds anything. BatchNorm sync uses
bigbatch's SyncBatchNorm over `hvd.allreduce` (Horovod's own rejects CPU
tensors); `bn.sync: group` reduces within each block of ranks through a Horovod
process set per block, declared at `hvd.init` (`init_horovod`): traffic stays in
the block. Without declared sets it falls back to an all-gather over the whole
world and a local sum of the block's rows (W x the data of every call).
"""

import contextlib
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import GradientTap, gradients
from bigbatch.trainer.distributed.sync_bn import convert_sync_batchnorm

try:
    import horovod.torch as hvd
except ImportError:  # the backend is an optional extra: `make horovod`
    hvd = None

_LOCAL_OPS = {"sum": torch.sum, "mean": torch.sum, "max": torch.amax, "min": torch.amin}
_PROCESS_SETS: dict[int, list] = {}  # block size -> the process sets of its blocks, as declared at hvd.init


def init_horovod(world_size: int, group_sizes: tuple[int, ...] = ()) -> None:
    """hvd.init with one process set per block of each size in `group_sizes` (bn.sync: group), so grouped
    BatchNorm all-reduces within its block."""
    require_horovod()
    sets = {g: [hvd.ProcessSet(list(range(start, start + g))) for start in range(0, world_size, g)]
            for g in group_sizes if 1 < g < world_size and world_size % g == 0}
    hvd.init(process_sets=[ps for blocks in sets.values() for ps in blocks] or None)
    _PROCESS_SETS.clear()
    _PROCESS_SETS.update(sets)


def require_horovod() -> None:
    if hvd is None:
        raise ImportError("cluster.backend: horovod needs Horovod: run `make horovod` (builds horovod 0.28.1 "
                          "against the installed torch and caches the wheel)")


class HorovodCollective:
    """A Collective over every Horovod rank, or over the block of `block_size` consecutive ranks holding
    this one (bn.sync: group)."""

    def __init__(self, device: torch.device | str = "cpu", block_size: int | None = None):
        """`block_size`: this rank's block of that many consecutive ranks (through its process set when
        init_horovod declared one)."""
        require_horovod()
        if not hvd.is_initialized():
            raise RuntimeError("Horovod is not initialised (hvd.init())")
        self.device = torch.device(device)
        self.global_rank, self.global_size = hvd.rank(), hvd.size()
        self.block_size = block_size
        if block_size is None:
            self.rank, self.world_size, self.block_start = self.global_rank, self.global_size, 0
        else:
            self.block_start = self.global_rank // block_size * block_size
            self.rank, self.world_size = self.global_rank - self.block_start, block_size
        blocks = _PROCESS_SETS.get(block_size) if block_size is not None else None
        self.process_set = blocks[self.global_rank // block_size] if blocks else None
        self.comm_seconds = 0.0

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op not in _LOCAL_OPS:
            raise ValueError(f"unknown reduce op {op!r}")
        started = time.perf_counter()
        ops = {"sum": hvd.Sum, "mean": hvd.Average, "max": hvd.Max, "min": hvd.Min}
        if self.block_size is None:
            hvd.allreduce_(tensor, op=ops[op])
        elif self.block_size == 1:
            pass  # a block of one: every reduction is the identity
        elif self.process_set is not None:
            hvd.allreduce_(tensor, op=ops[op], process_set=self.process_set)
        else:  # every rank's tensor, then this block's rows reduced here in rank order: same bits in the block
            rows = hvd.allgather(tensor.detach().reshape(1, -1))[self.block_start:self.block_start + self.block_size]
            reduced = _LOCAL_OPS[op](rows, dim=0)
            tensor.copy_((reduced / self.block_size if op == "mean" else reduced).view(tensor.shape))
        self.comm_seconds += time.perf_counter() - started
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        hvd.broadcast_(tensor, root_rank=self.block_start + src)
        return tensor

    def barrier(self) -> None:
        hvd.barrier()

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             gradient_tap: GradientTap | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The tap is never called: the .grad tensors stay this rank's own until synchronize_gradients."""
        if self.global_size == 1:
            return model, optimizer
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        if optimizer.state_dict()["state"]:
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        return model, GradientAveraging(optimizer, self)

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # gradients are only reduced in synchronize_gradients

    def synchronize_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if isinstance(optimizer, GradientAveraging):
            optimizer.synchronize()

    def subgroup(self, size: int) -> "HorovodCollective":
        if size <= 0 or self.global_size % size:
            raise ValueError(f"group size {size} does not divide world size {self.global_size}")
        return HorovodCollective(self.device, block_size=size)

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model, self)

    def start_vote(self, counts: list[int]) -> Callable[[], list[int]]:
        """Over every Horovod rank (the loop votes on its whole-world collective only): Horovod's background
        thread runs the sum on host memory; the name is free again once waited for."""
        handle = hvd.allreduce_async(torch.tensor(counts, dtype=torch.int64), op=hvd.Sum, name="bigbatch.vote")
        return lambda: hvd.synchronize(handle).tolist()


class GradientAveraging:
    """The recipe's optimizer, with gradients averaged over every rank before each step.

    Everything else (param_groups with LARS's and LAMB's trust ratios, state_dict, ...) is the wrapped
    optimizer's, so GradScaler, checkpoints and the loop see the optimizer they built."""

    def __init__(self, optimizer: torch.optim.Optimizer, collective: HorovodCollective):
        self.optimizer, self.collective, self.synchronized = optimizer, collective, False

    def __getattr__(self, name: str):
        return getattr(self.optimizer, name)

    def synchronize(self) -> None:
        """Average every gradient over all ranks in one fused call (at most once per step)."""
        if self.synchronized:
            return
        started = time.perf_counter()
        grads = gradients(self.optimizer)
        if grads:
            hvd.grouped_allreduce_(grads, op=hvd.Average)
        self.collective.comm_seconds += time.perf_counter() - started
        self.synchronized = True

    def step(self, closure=None):
        self.synchronize()
        self.synchronized = False
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.synchronized = False
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
