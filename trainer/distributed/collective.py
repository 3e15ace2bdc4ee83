"""The Collective: everything the training loop needs to know about other workers.

The loop is written against this protocol only. `LocalCollective` is the
one-process implementation; cluster/backends provide torch.distributed and
Horovod ones, so the loop never imports ray or horovod.
"""

import contextlib
import uuid
import warnings
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

GradientTap = Callable[[torch.Tensor], None]


@runtime_checkable
class Collective(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce `tensor` in place over all workers ('sum', 'mean', 'max', 'min') and return it."""

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Copy rank `src`'s `tensor` into every worker's `tensor` in place and return it."""

    def barrier(self) -> None:
        """Wait until every worker arrives."""

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             gradient_tap: GradientTap | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Make gradients global: DDP for torch.distributed, DistributedOptimizer for Horovod. A backend whose
        backward all-reduces as it goes (DDP) hands `gradient_tap` each bucket of this rank's own gradient just
        before its all-reduce; where gradients stay local until `synchronize_gradients` it is never called."""

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Context for accumulation micro-steps whose gradients must not be all-reduced yet."""

    def synchronize_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Finish the gradient all-reduce before the loop reads gradients (their norm); DDP is done already."""

    def subgroup(self, size: int) -> "Collective":
        """The collective of this rank's block of `size` consecutive ranks (for grouped BatchNorm)."""

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """The model with its BatchNorm layers normalising over every replica of this collective."""

    def start_vote(self, counts: list[int]) -> "Callable[[], list[int]]":
        """Begin summing a few host integers over every worker without touching the device stream (a request
        to stop, a worker leaving); the returned call waits for the sums. Only one vote is in flight at a time."""


class LocalCollective:
    """One process, world size 1: every collective is the identity."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op not in ("sum", "mean", "max", "min"):
            raise ValueError(f"unknown reduce op {op!r}")
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if src != 0:
            raise ValueError(f"broadcast from rank {src} in a world of size 1")
        return tensor

    def barrier(self) -> None:
        return None

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             gradient_tap: GradientTap | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
        return model, optimizer  # the .grad tensors are this rank's own: nothing to tap

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def synchronize_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        return None

    def subgroup(self, size: int) -> "LocalCollective":
        if size != 1:
            raise ValueError(f"group size {size} does not divide world size 1")
        return self

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        return model

    def start_vote(self, counts: list[int]) -> Callable[[], list[int]]:
        return lambda: list(counts)


def gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The .grad tensors of the optimizer's parameters that have one."""
    return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def broadcast_buffers(model: nn.Module, collective: Collective, src: int = 0) -> None:
    """Rank `src`'s buffers (BatchNorm running statistics, ...) on every rank: one broadcast per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buffer in model.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = collective.broadcast(torch.cat([b.detach().reshape(-1) for b in buffers]), src=src)
        for buffer, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
            buffer.data.copy_(value.view_as(buffer))


def shared_run_id(collective: Collective) -> str:
    """A fresh 12-hex-digit id, rank 0's on every rank."""
    raw = torch.tensor(list(uuid.uuid4().bytes[:6]), dtype=torch.uint8, device=collective.device)
    if collective.world_size > 1:
        collective.broadcast(raw, src=0)
    return bytes(raw.cpu().tolist()).hex()


def broadcast_bytes(data: bytes, collective: Collective, src: int = 0) -> memoryview:
    """Rank `src`'s bytes on every rank (length first, then the bytes as one uint8 tensor); other ranks pass
    b"". On CPU the bytes are received in place: one copy per rank, freed with the last reference to the view."""
    if collective.world_size == 1:
        return memoryview(data)
    sending, device = collective.rank == src, collective.device
    length = collective.broadcast(torch.tensor([len(data) if sending else 0], dtype=torch.int64, device=device), src)
    size = int(length.item())
    if size == 0:
        return memoryview(b"")
    if sending:
        with warnings.catch_warnings():  # read-only bytes: a broadcast only reads the sender's tensor
            warnings.filterwarnings("ignore", "The given buffer is not writable")
            tensor = torch.frombuffer(data, dtype=torch.uint8).to(device)  # on CPU, no copy
    else:
        tensor = torch.empty(size, dtype=torch.uint8, device=device)
    collective.broadcast(tensor, src)
    # the view keeps the (host) tensor's memory alive; a device copy is freed on return
    return memoryview(data) if sending else memoryview(tensor.cpu().numpy())


def broadcast_text(text: str, collective: Collective, src: int = 0) -> str:
    """Rank `src`'s string on every rank (UTF-8 bytes through `broadcast_bytes`)."""
    if collective.world_size == 1:
        return text
    return bytes(broadcast_bytes(text.encode("utf-8") if collective.rank == src else b"", collective, src)).decode("utf-8")
