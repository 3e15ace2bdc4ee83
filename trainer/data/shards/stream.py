"""Streaming a shard directory into training and evaluation, following shards/plan.py.

Each DataLoader worker reads the batches the plan gives it (one seek per batch
with a format-2 index) through a shuffle buffer seeded by (seed, epoch, rank,
worker), so its stream is a pure function of those and of the plan, whatever
the loader's timing. Every training batch is full: a rank's stream is steps x
accumulation batches of exactly the planned sizes (`batch_size`, or with
unequal shares those of recipe/shares.py). A sample that cannot be read
(corrupt image, truncated tar) keeps its place as a loader.Skipped marker (with
mark_skipped; `loader.collate` drops and reports it), so counts stay exact.

Training streams yield whole micro-batches (a DataLoader takes them with
batch_size=None), each of the size the plan gives it: ranks sharing a global
batch unevenly take micro-batches of different sizes (recipe/shares.py).
Resume at a batch boundary is exact: each worker replays its own stream from
the epoch's start, dropping the samples of batches already consumed without
decoding them, and the workers are rotated so the one that prepares the next
batch runs as the loader's worker 0. A resume with another world shape or
another number of loader workers (an elastic resize) goes on in a new phase of
the epoch (shards/reading.py): the new ranks read what the old ones left, each
sample once, in micro-batches of the new shape.
"""

import os
import random
import warnings
from collections.abc import Iterator
from itertools import accumulate, islice

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from bigbatch.trainer.data.augment import NO_AUGMENT, Augment
from bigbatch.trainer.data.base import DataSplits
from bigbatch.trainer.data.decode import EVAL_CROP_PCT, CorruptImage, decode_eval, decode_train
from bigbatch.trainer.data.shards import plan
from bigbatch.trainer.data.shards.index import (
    INDEX,
    CorruptSampleWarning,
    Record,
    check_shards,
    filesystem,
    join,
    read_index,
    read_shard,
)
from bigbatch.trainer.data.shards.reading import EpochReading, Phase, shuffle_seed, shuffled
from bigbatch.trainer.data.sizes import SizeSchedule
from bigbatch.trainer.errors import RecipeError


def sample_offsets(fs, path: str) -> list[int]:
    """Byte offset of each sample's first member, from the tar headers alone (format-1 indexes lack them)."""
    import tarfile

    offsets, last = [], None
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
            key = member.name.rpartition("/")[2].partition(".")[0]
            if key != last:
                offsets.append(member.offset)
                last = key
    return offsets


class ShardedDataset(IterableDataset):
    """Samples of one split of a shard directory, streamed: decoded (uint8 CHW, label) pairs, or `Record`s
    with decode=False. Call `set_epoch` (epoch, samples this rank already consumed, accumulation) before
    creating each epoch's DataLoader iterator; persistent workers would not see the change."""

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 224, *,
                 train: bool | None = None, seed: int = 0, world_size: int = 1, rank: int = 0,
                 shuffle_buffer: int = 1000, batch_size: int = 1, accumulation: int = 1, decode: bool = True,
                 mark_skipped: bool = False, verify: bool = True, storage_options: dict | None = None,
                 resize_quality: str = "antialias", augment: Augment = NO_AUGMENT,
                 crop_pct: float = EVAL_CROP_PCT, sizes: SizeSchedule | None = None, decode_region: bool = True):
        self.root, self.split, self.image_size = str(root), split, image_size
        self.augment, self.crop_pct, self.size_schedule = augment, crop_pct, sizes
        self.train = split == "train" if train is None else train
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.shuffle_buffer, self.batch_size, self.accumulation = shuffle_buffer, batch_size, accumulation
        self.decode, self.mark_skipped, self.storage_options = decode, mark_skipped, storage_options
        self.epoch, self.consumed, self.skipped = 0, 0, 0
        self.phases: list[Phase] | None = None  # None: one phase of this data set's own shape
        self.resize_quality, self.decode_region = resize_quality, decode_region
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        index = read_index(self.root, storage_options)
        if split not in index.get("splits", {}):
            raise RecipeError(f"{join(self.root, INDEX)}: no {split!r} split (has: "
                              f"{', '.join(index.get('splits', {})) or 'none'})")
        self.classes: list[str] = index["classes"]
        shards = index["splits"][split]["shards"]
        # offsets as one int64 array per shard, not Python ints (ImageNet: 1.28M of them, held by every
        # rank and copied into every loader worker); format-1 shards get theirs on first use (sample_offsets)
        self.offsets = [np.asarray(s["offsets"], np.int64) if "offsets" in s else None for s in shards]
        self.shards: list[dict] = [{k: v for k, v in s.items() if k != "offsets"} for s in shards]
        self.sizes = [s["samples"] for s in self.shards]
        self.num_samples: int = sum(self.sizes)
        self.has_offsets = all(o is not None for o in self.offsets)
        if verify:
            check_shards(self.root, self.shards, storage_options)

    def __len__(self) -> int:
        """Samples in the whole split (all ranks)."""
        return self.num_samples

    def set_epoch(self, epoch: int, consumed: int = 0, accumulation: int | None = None,
                  phases: list[Phase] | None = None) -> None:
        """The epoch to stream next, how many samples of it this rank already consumed (since the last phase
        began; whole micro-batches), and the epoch's accumulation steps (they fix its global batch).
        `phases`: the world shapes that read this epoch so far, the last one this rank's (shards/reading.py);
        None reads it with the shape this data set was made with."""
        self.phases = list(phases) if phases else None
        self.accumulation = accumulation or self.accumulation
        self.epoch, self.consumed = epoch, consumed
        self.batches_done()  # checks that it is whole micro-batches

    def phase(self, num_workers: int = 1) -> Phase:
        """The shape this rank reads in now: the last phase given to `set_epoch`, or the data set's own."""
        return self.phases[-1] if self.phases else Phase(0, self.world_size, self.batch_size, self.accumulation,
                                                         max(num_workers, 1))

    def batches_done(self) -> int:
        """How many of the current phase's micro-batches this rank took: its `consumed` samples."""
        sizes = self.phase().sizes(self.rank)
        steps, rest = divmod(self.consumed, sum(sizes))
        ends = list(accumulate(sizes))
        if rest and rest not in ends:
            shown = str(sizes[0]) if len(set(sizes)) == 1 else " + ".join(map(str, sizes))
            raise ValueError(f"resume position {self.consumed} is not a whole number of batches of {shown}")
        return steps * len(sizes) + (ends.index(rest) + 1 if rest else 0)

    def reading(self, epoch: int, num_workers: int = 1) -> EpochReading:
        """How this epoch is read: the phases given to `set_epoch`, or one phase of this data set's shape."""
        phases = self.phases or [self.phase(num_workers)]
        if phases[-1].loader_workers != max(num_workers, 1) or not self.rank < phases[-1].world_size:
            raise ValueError(f"rank {self.rank} with {num_workers} loader workers does not read {phases[-1]}")
        return EpochReading(self.sizes, self.seed, epoch, self.shuffle_buffer, phases)

    def rank_samples(self, accumulation: int | None = None) -> int:
        """Samples this rank trains on per epoch (every rank the same)."""
        return len(plan.rank_range(self.num_samples, self.world_size, self.batch_size,
                                   accumulation or self.accumulation, self.rank))

    # ---- what one loader worker reads ----------------------------------------------------------------
    def _segment_records(self, fs, base: str, segment: plan.Segment) -> Iterator[Record]:
        """Exactly `segment.count` records: a shard that ends early is padded with error records."""
        shard = self.shards[segment.shard]
        if self.offsets[segment.shard] is None and segment.start:
            self.offsets[segment.shard] = np.asarray(sample_offsets(fs, join(base, shard["name"])), np.int64)
        offsets = self.offsets[segment.shard]
        got = 0
        for record in read_shard(fs, join(base, shard["name"]), shard["name"], len(self.classes),
                                 segment.start, segment.count, offsets):
            yield record
            got += 1
        for missing in range(got, segment.count):
            yield Record(shard["name"], f"(sample {segment.start + missing})", -1, b"", "missing: shard ended early")

    def records(self, epoch: int, worker: int = 0, num_workers: int = 1,
                reading: EpochReading | None = None) -> Iterator[Record]:
        """One loader worker's records in stream order (shuffle buffer applied when training), not decoded."""
        fs, base = filesystem(self.root, self.storage_options)
        if not self.train:
            segments = plan.eval_segments(self.sizes, self.world_size, self.rank, num_workers, worker)
            return (r for s in segments for r in self._segment_records(fs, base, s))
        reading = reading or self.reading(epoch, num_workers)
        stream = (r for batch in reading.batches(self.rank, worker) for s in batch
                  for r in self._segment_records(fs, base, s))
        seed = shuffle_seed(self.seed, epoch, self.rank, worker, len(reading.phases) - 1)
        return shuffled(stream, self.shuffle_buffer, random.Random(seed))

    def stream(self, epoch: int, worker: int = 0, num_workers: int = 1, skip: int = 0) -> Iterator:
        """One worker's samples after its first `skip` (those are read from the tars, not decoded)."""
        records = self.records(epoch, worker, num_workers)
        for _ in zip(range(skip), records, strict=False):
            pass
        for record in records:
            sample = self._sample(record, epoch)
            if sample is not None:
                yield sample

    def worker_batches(self, epoch: int, worker: int = 0, num_workers: int = 1, done: int = 0) -> Iterator[list]:
        """Training: loader worker `worker`'s micro-batches (lists of samples, each of the size the plan gives
        it) after the rank's first `done` micro-batches, whose records are read from the tars, not decoded."""
        reading = self.reading(epoch, num_workers)
        sizes = reading.batch_sizes(len(reading.phases) - 1, self.rank, worker)
        taken = len(range(worker, done, max(num_workers, 1)))
        records = self.records(epoch, worker, num_workers, reading)
        for _ in zip(range(sum(sizes[:taken])), records, strict=False):
            pass
        for size in sizes[taken:]:
            batch = [sample for sample in (self._sample(r, epoch) for r in islice(records, size)) if sample is not None]
            if batch:
                yield batch

    def rank_batches(self, epoch: int, num_workers: int = 1, consumed: int = 0,
                     phases: list[Phase] | None = None) -> Iterator[list]:
        """This rank's batches in the order its DataLoader delivers them (`num_workers` workers taking turns),
        resumed after `consumed` samples, computed in this process: the reference for order and resume."""
        self.set_epoch(epoch, consumed, phases=phases)
        workers, done = max(num_workers, 1), self.batches_done()
        order = [(done + i) % workers for i in range(workers)]
        streams = {w: self.worker_batches(epoch, w, workers, done) for w in order}
        while order:
            for w in list(order):
                batch = next(streams[w], None)
                if batch is None:
                    order.remove(w)
                else:
                    yield batch

    def rank_stream(self, epoch: int, num_workers: int = 1, consumed: int = 0,
                    phases: list[Phase] | None = None) -> Iterator:
        """`rank_batches`, one sample at a time."""
        return (x for batch in self.rank_batches(epoch, num_workers, consumed, phases) for x in batch)

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.train:
            return self.stream(self.epoch, worker, num_workers)  # samples: the DataLoader batches them
        done = self.batches_done()
        logical = (done + worker) % num_workers  # the worker preparing the next batch runs as worker 0
        return self.worker_batches(self.epoch, logical, num_workers, done)  # whole micro-batches

    def layout_warning(self, loader_workers: int) -> str | None:
        """One line when this directory's layout makes the run read more than it needs (a format-1 index, no
        sample offsets, with readers starting inside shards), with the command that fixes it; else None."""
        readers = self.world_size * max(loader_workers, 1)
        if self.has_offsets or readers <= 1:
            return None
        return (f"{join(self.root, INDEX)}: format-1 index without sample offsets: each of the {readers} "
                f"loader workers scans the tar headers of the shards it starts inside; repack once with "
                f"`bigbatch data pack SOURCE_FOLDER {self.root}` (format 2) to seek straight to each sample")

    def _sample(self, record: Record, epoch: int):
        error = record.error
        if error is None and not self.decode:
            return record
        if error is None:
            try:
                if self.train:
                    rng = random.Random(f"{self.seed}:{epoch}:{record.key}")
                    size = self.size_schedule.at(epoch) if self.size_schedule else self.image_size
                    image = self.augment(decode_train(record.data, size, rng, self.resize_quality,
                                                      self.decode_region), rng)
                else:
                    image = decode_eval(record.data, self.image_size, self.resize_quality, self.crop_pct,
                                        self.decode_region)
                return image, record.label
            except CorruptImage as e:
                error = f"corrupt image ({e})"
        self.skipped += 1
        name = f"{join(self.root, record.shard)}:{record.key}"
        if self.mark_skipped and self.decode:
            from bigbatch.trainer.data.loader import Skipped

            return Skipped(name, error), record.label
        warnings.warn(f"skipping {name}: {error}", CorruptSampleWarning, stacklevel=2)
        return None


def load_shard_splits(root: str, seed: int, image_size: int, batch_size: int, shuffle_buffer: int,
                      world_size: int, rank: int, accumulation: int = 1,
                      resize_quality: str = "antialias", augment: Augment = NO_AUGMENT, eval_image_size: int = 0,
                      eval_crop_pct: float = EVAL_CROP_PCT, sizes: SizeSchedule | None = None,
                      decode_region: bool = True) -> DataSplits:
    """Train and validation streams of a packed directory for one rank; the plan counts every training
    sample (an epoch is N // global batch steps, shards/plan.py)."""
    from bigbatch.trainer.data.decode import normalize_batch

    if not root:
        raise RecipeError("data.root: the shards data set needs data.root, the directory or URI of index.json")
    train = ShardedDataset(root, "train", image_size, train=True, seed=seed, world_size=world_size, rank=rank,
                           shuffle_buffer=shuffle_buffer, batch_size=batch_size, accumulation=accumulation,
                           mark_skipped=True, resize_quality=resize_quality, augment=augment, sizes=sizes,
                           decode_region=decode_region)
    val = ShardedDataset(root, "val", eval_image_size or image_size, train=False, seed=seed, world_size=world_size,
                         rank=rank, batch_size=batch_size, mark_skipped=True, verify=False,
                         resize_quality=resize_quality, crop_pct=eval_crop_pct, decode_region=decode_region)
    return DataSplits(train=train, val=val, num_classes=len(train.classes), channels=3, image_size=image_size,
                      classes=train.classes, normalize=normalize_batch)
