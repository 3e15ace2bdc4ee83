"""One source of training micro-batches for every kind of data set: the run loop asks for this rank's
micro-batches of an epoch from a step on, given the world's shape, and does not care whether they come from
an indexed data set (digits, Fashion-MNIST, image folders: a keyed permutation shared by every rank) or a
streamed one (packed shards: each rank reads its own stream, skipping what it already took).

A streamed epoch depends on the shapes that read it: the source keeps the phases of the epoch it is reading
(shards/reading.py) and they travel in the checkpoint, so a run resumed mid-epoch on another number of workers
or loader workers reads what the earlier shapes left, each sample once. An indexed epoch is one keyed
permutation whatever the shape (data/order.py), so nothing is kept for it.
"""

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, IterableDataset

from bigbatch.trainer.data.loader import Skipped, iterate_batches, iterate_stream
from bigbatch.trainer.data.order import TrainOrder
from bigbatch.trainer.data.shards.reading import Phase

TRACE_ENV = "BIGBATCH_TRACE_LABELS"  # set (to anything): each rank writes the labels it trains on, see below


@dataclass(frozen=True)
class WorldShape:
    """How one global batch is split: `world_size` ranks x `accumulation` micro-steps x `micro_batch`, or
    G // W or G // W + 1 examples a rank when the world size does not divide it (`uneven_batch`)."""

    world_size: int
    rank: int
    micro_batch: int  # the largest micro-batch
    accumulation: int
    uneven_batch: int = 0  # the global batch, when the ranks share it unevenly (recipe/shares.py); else 0
    offset: int = 0  # examples of the epoch read at other global batches before these steps (recipe/plan.py)


@dataclass
class MicroBatchSource:
    dataset: Dataset
    seed: int
    loader_workers: int
    pin_memory: bool
    prefetch: int
    repeats: int  # data.aug_repeats
    on_unreadable: Callable[[Skipped], None]
    trace: Path | None = None  # a file: the labels of every micro-batch handed out (`label_trace`)
    reading: dict = field(default_factory=dict)  # {"epoch": e, "phases": [Phase, ...]} of a streamed epoch

    def epoch(self, epoch: int, first_step: int, shape: WorldShape) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of `epoch`, `shape.accumulation` per step, from step `first_step` of it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # augmentation keyed by epoch
        if isinstance(self.dataset, IterableDataset):  # streamed shards: this rank's own stream
            if shape.offset:
                raise ValueError("packed shards keep one global batch per epoch; a stretch at an offset is for "
                                 "indexed data sets")
            phases = self._phases(epoch, first_step, shape)
            taken = (first_step - phases[-1].first_step) * phases[-1].share(shape.rank)
            batches = iterate_stream(self.dataset, epoch, taken, shape.micro_batch, self.loader_workers,
                                     self.pin_memory, self.on_unreadable, self.prefetch, shape.accumulation, phases)
        else:
            order = TrainOrder(seed=self.seed, num_examples=len(self.dataset), batch_size=shape.micro_batch,
                               world_size=shape.world_size, rank=shape.rank, accumulation_steps=shape.accumulation,
                               repeats=self.repeats, uneven_batch=shape.uneven_batch, offset=shape.offset)
            batches = iterate_batches(self.dataset, order.keyed_micro_batches(epoch, first_step),
                                      self.loader_workers, self.pin_memory, self.on_unreadable, self.prefetch)
        return iter(batches) if self.trace is None else _traced(batches, epoch, self.trace)

    def _phases(self, epoch: int, first_step: int, shape: WorldShape) -> list[Phase]:
        """The shapes that read `epoch` up to `first_step`, then this one. A checkpoint without them (written
        before they were kept) resumes as if this shape had read the whole epoch, as it did then."""
        now = Phase(first_step, shape.world_size, shape.micro_batch, shape.accumulation, max(self.loader_workers, 1),
                    shape.uneven_batch)
        earlier = [p for p in self.reading.get("phases", []) if p.first_step < first_step]
        if self.reading.get("epoch") != epoch or not earlier:
            phases = [dataclasses.replace(now, first_step=0)]
        elif earlier[-1].same_shape(now):
            phases = earlier
        else:
            phases = [*earlier, now]
        self.reading = {"epoch": epoch, "phases": phases}
        return phases

    def state_dict(self) -> dict:
        """The phases of the epoch being read (plain types, for the checkpoint)."""
        return {"epoch": self.reading.get("epoch", -1),
                "phases": [dataclasses.asdict(p) for p in self.reading.get("phases", [])]}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.reading = {"epoch": state.get("epoch", -1), "phases": [Phase(**p) for p in state.get("phases", [])]}


def label_trace(run_dir: Path, rank: int) -> Path | None:
    """With BIGBATCH_TRACE_LABELS set, RUN/trace/labels.rank-R.txt gets one line per micro-batch this rank
    trains on, `epoch: label label ...`, appended by every attempt of the run: an audit of what each rank read
    (with one class per example, of which examples), at one host list per micro-batch. Off by default."""
    return run_dir / "trace" / f"labels.rank-{rank}.txt" if os.environ.get(TRACE_ENV) else None


def _traced(batches, epoch: int, path: Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        for images, labels in batches:
            out.write(f"{epoch}: {' '.join(map(str, labels.tolist()))}\n")
            out.flush()
            yield images, labels
