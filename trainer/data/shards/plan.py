"""Which samples of a shard directory each rank and loader worker reads in an epoch: pure arithmetic on the
index's shard sizes, so tests can check it at W = 1,024 on an ImageNet-shaped index without any data.

Training: each epoch the shards are shuffled from (seed, epoch) and read as one
sequence of N samples. The run's global batch G = world x batch x accumulation
fixes steps = N // G; the first steps x G samples of the sequence are dealt out
as W contiguous, equal ranges, one per rank (when W does not divide G, ranges of
steps x each rank's share: shards/reading.py; the last N - steps x G, fewer than
one global batch, are left for this epoch; another epoch's shuffle leaves
others). A rank reads its range as batches of exactly `batch` samples,
batch t = range[t x batch : (t + 1) x batch], and loader worker t % L prepares
batch t: the DataLoader's round-robin over its workers then delivers the
rank's batches in order, every batch full, and a resumed rank restarts at batch
t = consumed / batch with worker t % L first. Ranks reading contiguous ranges
spread the read load over the whole directory (at W = 1,024 on ImageNet a 1 GB
shard holds ~8,800 samples and a rank's range 1,248, so a shard is read by
about 8 ranks, at most 8 in the test, which bounds it by shard / range + 2 = 9;
each one seek and one sequential read per batch), where one shared
order per step would send every rank to the same shard at once.

Evaluation: the validation shards in their stored order, dealt out as W
contiguous ranges differing by at most one sample, each split into L
contiguous pieces; every sample is evaluated exactly once.
"""

import bisect
from dataclasses import dataclass
from itertools import accumulate

from bigbatch.trainer.data.order import epoch_permutation


@dataclass(frozen=True)
class Segment:
    """`count` consecutive samples of shard number `shard` (its index in the split's list), from `start`."""

    shard: int
    start: int
    count: int


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order the shards are read in `epoch` (training: a fresh shuffle each epoch)."""
    if not shuffle:
        return list(range(num_shards))
    return epoch_permutation(seed, epoch, num_shards).tolist()


def segments(sizes: list[int], order: list[int], begin: int, end: int,
             starts: list[int] | None = None) -> list[Segment]:
    """Samples begin..end-1 of the sequence that reads shards `order` (sizes[i] samples each) end to end;
    `starts` (the sequence position of each shard in `order`, see `sequence_starts`) may be passed in."""
    starts = sequence_starts(sizes, order) if starts is None else starts
    out: list[Segment] = []
    position = bisect.bisect_right(starts, begin) - 1
    while begin < end and position < len(order):
        shard = order[position]
        first = begin - starts[position]
        count = min(sizes[shard] - first, end - begin)
        if count > 0:
            out.append(Segment(shard, first, count))
        begin += count
        position += 1
    return out


def sequence_starts(sizes: list[int], order: list[int]) -> list[int]:
    return list(accumulate((sizes[i] for i in order), initial=0))


def train_steps(num_samples: int, world_size: int, batch_size: int, accumulation: int = 1) -> int:
    """Optimizer steps in an epoch: every one takes a whole global batch."""
    return num_samples // (world_size * batch_size * accumulation)


def rank_range(num_samples: int, world_size: int, batch_size: int, accumulation: int, rank: int) -> range:
    """Positions of the epoch's sequence that `rank` trains on."""
    per_rank = train_steps(num_samples, world_size, batch_size, accumulation) * accumulation * batch_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def worker_batches(num_batches: int, loader_workers: int, worker: int, first_batch: int = 0) -> range:
    """The rank's batches (numbers first_batch..num_batches-1) that loader worker `worker` prepares, when the
    loader was started at `first_batch`: every L-th, starting at first_batch + worker."""
    return range(first_batch + worker, num_batches, max(loader_workers, 1))


def train_segments(sizes: list[int], seed: int, epoch: int, world_size: int, rank: int, batch_size: int,
                   accumulation: int = 1, loader_workers: int = 1, worker: int = 0,
                   first_batch: int = 0) -> list[list[Segment]]:
    """The batches (each a list of segments of exactly `batch_size` samples) one loader worker of one rank
    prepares in `epoch`, in the order it prepares them."""
    order = shard_order(len(sizes), seed, epoch)
    starts = sequence_starts(sizes, order)
    mine = rank_range(sum(sizes), world_size, batch_size, accumulation, rank)
    num_batches = len(mine) // batch_size
    return [segments(sizes, order, mine.start + t * batch_size, mine.start + (t + 1) * batch_size, starts)
            for t in worker_batches(num_batches, loader_workers, worker, first_batch)]


def eval_range(num_samples: int, world_size: int, rank: int) -> range:
    return range(num_samples * rank // world_size, num_samples * (rank + 1) // world_size)


def eval_segments(sizes: list[int], world_size: int, rank: int, loader_workers: int = 1,
                  worker: int = 0) -> list[Segment]:
    """The validation samples one loader worker of one rank evaluates: contiguous, disjoint, covering."""
    mine = eval_range(sum(sizes), world_size, rank)
    workers = max(loader_workers, 1)
    begin = mine.start + len(mine) * worker // workers
    end = mine.start + len(mine) * (worker + 1) // workers
    return segments(sizes, list(range(len(sizes))), begin, end)


def covered_fraction(num_samples: int, world_size: int, batch_size: int, accumulation: int = 1) -> float:
    """Share of the training samples an epoch trains on."""
    steps = train_steps(num_samples, world_size, batch_size, accumulation)
    return steps * world_size * batch_size * accumulation / num_samples if num_samples else 0.0
