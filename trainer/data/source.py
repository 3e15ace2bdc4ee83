"""One source of training micro-batches for every kind of data set: the run loop asks for this rank's
micro-batches of an epoch from a step on, given the world's shape, and does not care whether they come from
an indexed data set (digits, Fashion-MNIST, image folders: a keyed permutation shared by every rank) or a
streamed one (packed shards: each rank reads its own stream, skipping what it already took)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, IterableDataset

from bigbatch.trainer.data.loader import Skipped, iterate_batches, iterate_stream
from bigbatch.trainer.data.order import TrainOrder


@dataclass(frozen=True)
class WorldShape:
    """How one global batch is split: `world_size` ranks x `accumulation` micro-steps x `micro_batch`."""

    world_size: int
    rank: int
    micro_batch: int
    accumulation: int


@dataclass
class MicroBatchSource:
    dataset: Dataset
    seed: int
    loader_workers: int
    pin_memory: bool
    prefetch: int
    repeats: int  # data.aug_repeats
    on_unreadable: Callable[[Skipped], None]

    def epoch(self, epoch: int, first_step: int, shape: WorldShape) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of `epoch`, `shape.accumulation` per step, from step `first_step` of it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # augmentation keyed by epoch
        if isinstance(self.dataset, IterableDataset):  # streamed shards: this rank's own stream
            taken = first_step * shape.micro_batch * shape.accumulation
            return iter(iterate_stream(self.dataset, epoch, taken, shape.micro_batch, self.loader_workers,
                                       self.pin_memory, self.on_unreadable, self.prefetch, shape.accumulation))
        order = TrainOrder(seed=self.seed, num_examples=len(self.dataset), batch_size=shape.micro_batch,
                           world_size=shape.world_size, rank=shape.rank, accumulation_steps=shape.accumulation,
                           repeats=self.repeats)
        return iter(iterate_batches(self.dataset, order.keyed_micro_batches(epoch, first_step),
                                    self.loader_workers, self.pin_memory, self.on_unreadable, self.prefetch))
