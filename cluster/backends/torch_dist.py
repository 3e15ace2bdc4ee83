"""The Collective over torch.distributed: gloo on CPU, nccl on GPU.

Gradients are made global by DistributedDataParallel (bucketed all-reduce
overlapped with backward); accumulation micro-steps run under DDP's no_sync.
`comm_seconds` adds up the time this rank's collectives were in flight (on
gloo DDP buckets are timed by a comm hook; on nccl they run on the GPU stream
and only the host-side collectives are counted).
"""

import contextlib
import datetime
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from bigbatch.trainer.distributed.collective import GradientTap
from bigbatch.trainer.distributed.sync_bn import convert_sync_batchnorm

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
_GATHER_OPS = {"sum": torch.sum, "mean": torch.sum, "max": torch.amax, "min": torch.amin}
# On gloo, all_reduce of a small tensor takes 2-3x the time of all_gather (measured on loopback: ~1.5 ms
# against ~0.5 ms for 65 floats between 2 processes); SyncBN makes two such calls per layer and step.
GATHER_REDUCE_MAX_ELEMENTS = 1 << 16


def init_process_group(backend: str, init_method: str, rank: int, world_size: int, timeout_s: float = 120) -> None:
    """Join a process group (used by tests and by launchers that do not set one up themselves)."""
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


class TorchDistributedCollective:
    """A Collective over the default process group, or over `group` (a subset of ranks)."""

    def __init__(self, device: torch.device | str = "cpu", group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised")
        self.device = torch.device(device)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.comm_seconds = 0.0
        self._gather_small = dist.get_backend(group) == "gloo"
        self._tap: GradientTap | None = None
        self._vote_group: dist.ProcessGroup | None = None

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op not in _OPS and op != "mean":
            raise ValueError(f"unknown reduce op {op!r}")
        started = time.perf_counter()
        if self._gather_small and tensor.numel() * self.world_size <= GATHER_REDUCE_MAX_ELEMENTS:
            # gather every rank's tensor and reduce it here in rank order: the same bits on every rank
            gathered = tensor.new_empty(self.world_size * tensor.numel())
            dist.all_gather_single(gathered, tensor.contiguous().view(-1), group=self.group)
            tensor.copy_(_GATHER_OPS[op](gathered.view(self.world_size, *tensor.shape), dim=0))
        else:
            dist.all_reduce(tensor, _OPS.get(op, dist.ReduceOp.SUM), group=self.group)
        self.comm_seconds += time.perf_counter() - started
        return tensor.div_(self.world_size) if op == "mean" else tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        global_src = dist.get_global_rank(self.group, src) if self.group is not None else src
        dist.broadcast(tensor, global_src, group=self.group)
        return tensor

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             gradient_tap: GradientTap | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
        if self.world_size == 1:
            return model, optimizer
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids, process_group=self.group)
        self._tap = gradient_tap
        if self.device.type == "cpu" or gradient_tap is not None:  # nccl keeps DDP's built-in hook otherwise
            ddp.register_comm_hook(None, self._mean_hook)
        return ddp, optimizer

    def _mean_hook(self, state, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        """DDP's default all-reduce-then-average; on CPU its time in flight is added to comm_seconds. The tap
        (wrap's gradient_tap) sees the bucket first: this rank's own gradient."""
        started = time.perf_counter()
        if self._tap is not None:
            self._tap(bucket.buffer())
        buffer = bucket.buffer().div_(self.world_size)
        future = dist.all_reduce(buffer, group=self.group, async_op=True).get_future()
        if self.device.type != "cpu":
            return future.then(lambda fut: fut.value()[0])

        def done(fut: torch.futures.Future) -> torch.Tensor:
            self.comm_seconds += time.perf_counter() - started
            return fut.value()[0]

        return future.then(done)

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def start_vote(self, counts: list[int]) -> Callable[[], list[int]]:
        """On a gloo group of its own (made by every rank at its first vote), so the sum runs on the host
        beside the training's collectives (nccl's on the GPU stream, or gloo's of the default group)."""
        if self._vote_group is None:
            ranks = dist.get_process_group_ranks(self.group) if self.group is not None else None
            self._vote_group = dist.new_group(ranks, backend="gloo")
        tensor = torch.tensor(counts, dtype=torch.int64)
        work = dist.all_reduce(tensor, group=self._vote_group, async_op=True)

        def result() -> list[int]:
            work.wait()
            return tensor.tolist()

        return result

    def synchronize_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        return None  # DDP's backward has finished every bucket's all-reduce

    def subgroup(self, size: int) -> "TorchDistributedCollective":
        """The collective of this rank's block of `size` consecutive ranks (every rank must call this)."""
        if size <= 0 or self.world_size % size:
            raise ValueError(f"group size {size} does not divide world size {self.world_size}")
        mine = None
        for start in range(0, self.world_size, size):
            ranks = list(range(start, start + size))
            group = dist.new_group(ranks)
            if self.rank in ranks:
                mine = group
        return TorchDistributedCollective(self.device, mine)

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """Cross-replica BatchNorm over this collective: CUDA kernels on nccl, bigbatch's own elsewhere."""
        if self.device.type == "cuda" and dist.get_backend(self.group) == "nccl":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model, self.group)
        return convert_sync_batchnorm(model, self)
