"""Normalization layers that behave in one process as they do in W data-parallel ranks with unsynced statistics
(bn.sync: none under torch.distributed), for bench/procedures.py part 2 at 8 workers x 4 images.

Accumulating W micro-batches of 4 in one process is not that: BatchNorm and Batch Renorm then update their
moving statistics W times per step, and Batch Renorm's r and d read statistics the same step already moved.
In W ranks under DistributedDataParallel (broadcast_buffers, its default), every rank starts a step from rank
0's moving statistics, normalises its own slice of the global batch with that slice's batch statistics,
moves its copy of the statistics once, and only rank 0's move survives (the next forward broadcasts rank 0's
buffers; the checkpoint and evaluation are rank 0's). `PerRankNorm` does exactly that over the W consecutive
slices of one batch of W x 4, and the loss's mean over the whole batch has the gradient DDP averages.
tests/bench/test_virtual_ranks.py checks it against 8 real gloo ranks.
"""

import torch
import torch.nn as nn

from bigbatch.trainer.models.norms import BatchRenorm

STATISTICS = ("running_mean", "running_var", "running_std", "num_batches_tracked")


class PerRankNorm(nn.Module):
    """`norm` run as `ranks` ranks run it (see the module docstring); in evaluation, rank 0's statistics."""

    def __init__(self, norm: nn.Module, ranks: int):
        super().__init__()
        self.norm, self.ranks = norm, ranks
        self.names = [name for name, _ in norm.named_buffers(recurse=False) if name in STATISTICS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.norm(x)
        if len(x) % self.ranks:
            raise ValueError(f"a batch of {len(x)} does not split into {self.ranks} ranks")
        start = {name: getattr(self.norm, name).clone() for name in self.names}  # rank 0's, before the step
        own = {name: getattr(self.norm, name) for name in self.names}
        outputs = [self.norm(part) if rank == 0 else self._as_other_rank(part, start)
                   for rank, part in enumerate(x.chunk(self.ranks))]
        for name, tensor in own.items():
            self.norm._buffers[name] = tensor
        return torch.cat(outputs)

    def _as_other_rank(self, part: torch.Tensor, start: dict) -> torch.Tensor:
        """Normalised from rank 0's statistics at the step's start, on a copy whose update is dropped."""
        for name, tensor in start.items():
            self.norm._buffers[name] = tensor.clone()
        return self.norm(part)


def emulate_unsynced_ranks(model: nn.Module, ranks: int) -> int:
    """Wrap every BatchNorm and Batch Renorm layer of `model` in place (the parameters stay the same objects,
    so an optimizer built on them still holds them); returns how many were wrapped."""
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm | BatchRenorm):
                setattr(parent, name, PerRankNorm(child, ranks))
                wrapped += 1
    return wrapped
