"""Which samples each rank reads in an epoch whose world shape changed part-way: an elastic run that lost or
regained workers, or a resume with another number of loader workers. Pure arithmetic on the plan
(shards/plan.py) and on the shuffle buffers, so a resized epoch still trains on every planned sample once.

An epoch is read in phases. Phase 0 starts at the epoch's first step and is the plan: rank r reads the
contiguous range r of the epoch's sequence. When the shape changes at step s of the epoch (a resume), a new
phase starts there. What every rank of the old phase consumed is known exactly: rank r's loader worker w read
its batches (t = w, w + L, ...) through a shuffle buffer seeded by (seed, epoch, rank, worker[, phase]) and
the steps taken fix how many samples each buffer emitted; the buffer's choices depend only on counts, so
replaying it over positions instead of records gives the consumed positions without reading any data. Every
old rank consumed the same number, so what is left of each old rank's range has the same length: the
leftovers, in sequence order, are dealt out to the new ranks as contiguous pieces of (steps - s) x share
each. A new rank needs the leftovers of the one to three old ranks its piece overlaps, not the whole epoch:
memory and work per rank stay O(its share), at W = 1,024 as at W = 2. A later resize in the same epoch
repeats the argument on the previous phase's pieces.

The global batch G is the same in every phase (an elastic run keeps it), so the epoch keeps its N // G steps.
When the world size does not divide G, rank r takes its share s_r (G // W or G // W + 1, recipe/shares.py) a
step, in micro-batches of the sizes shares.py gives it: the phase's ranges and the leftovers then have the
lengths of the shares, and the same argument holds with running sums of them in place of multiples (closed
forms, so a rank's plan is still O(its share)).
"""

import random
from dataclasses import dataclass
from itertools import islice

import numpy as np

from bigbatch.trainer.data.shards import plan
from bigbatch.trainer.recipe.shares import rank_holding, rank_micro_sizes, rank_start


@dataclass(frozen=True)
class Phase:
    """Steps from `first_step` of the epoch on, read by `world_size` ranks in batches of `micro_batch`,
    `accumulation` per step, each rank with `loader_workers` loader workers (at least 1). With `global_batch`
    (ranks sharing it unevenly), rank r's micro-batches are shares.py's, `micro_batch` the largest."""

    first_step: int
    world_size: int
    micro_batch: int
    accumulation: int
    loader_workers: int = 1
    global_batch: int = 0  # 0: world_size x micro_batch x accumulation, every rank the same

    @property
    def batch(self) -> int:
        """Samples a step takes, over all ranks."""
        return self.global_batch or self.world_size * self.micro_batch * self.accumulation

    def sizes(self, rank: int) -> list[int]:
        """Rank `rank`'s micro-batches of one step."""
        if not self.global_batch:
            return [self.micro_batch] * self.accumulation
        return rank_micro_sizes(self.global_batch, self.world_size, self.accumulation, rank)

    def share(self, rank: int) -> int:
        """Samples rank `rank` takes per step."""
        return sum(self.sizes(rank))

    def start(self, rank: int) -> int:
        """Samples of a step the ranks before `rank` take."""
        return rank_start(self.batch, self.world_size, rank)

    def holder(self, example: int) -> int:
        """The rank whose share holds example `example` of a step (ranks in order)."""
        return rank_holding(self.batch, self.world_size, example)

    def same_shape(self, other: "Phase") -> bool:
        return (self.world_size, self.micro_batch, self.accumulation, self.loader_workers, self.batch) == (
            other.world_size, other.micro_batch, other.accumulation, other.loader_workers, other.batch)


def shuffle_seed(seed: int, epoch: int, rank: int, worker: int, phase: int = 0) -> str:
    """The shuffle buffer's seed; phase 0 keeps the key streams had before phases existed."""
    key = f"{seed}:{epoch}:{rank}:{worker}"
    return key if phase == 0 else f"{key}:{phase}"


def shuffled(items, size: int, rng: random.Random):
    """A shuffle buffer: hold `size` items, emit a random one as each new one arrives, then the rest. Its
    choices depend only on how many items arrive, never on what they are."""
    if size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


class EpochReading:
    """The phases of one epoch over a split of shards with `sizes` samples each."""

    def __init__(self, sizes: list[int], seed: int, epoch: int, shuffle_buffer: int, phases: list[Phase]):
        self.sizes, self.seed, self.epoch, self.shuffle_buffer = sizes, seed, epoch, shuffle_buffer
        self.phases = list(phases)
        batch = self.phases[0].batch
        self.steps = plan.train_steps(sum(sizes), 1, batch)
        firsts = [p.first_step for p in self.phases]
        if firsts[0] != 0 or firsts != sorted(set(firsts)) or firsts[-1] > max(self.steps - 1, 0):
            raise ValueError(f"phases must start at step 0 of the epoch, in order, before its step {self.steps}: "
                             f"{firsts}")
        if any(p.batch != batch for p in self.phases):
            raise ValueError(f"every phase of an epoch has the same global batch {batch}: {self.phases}")
        self.order = plan.shard_order(len(sizes), seed, epoch)
        self.starts = plan.sequence_starts(sizes, self.order)
        self._pieces: dict[tuple[int, int], np.ndarray] = {}
        self._left: dict[tuple[int, int], np.ndarray] = {}

    def piece(self, phase: int, rank: int) -> np.ndarray:
        """Positions of the epoch's sequence that `rank` reads in `phase`, ascending (its reading order)."""
        key = (phase, rank)
        if key not in self._pieces:
            self._pieces[key] = self._make_piece(phase, rank)
        return self._pieces[key]

    def _make_piece(self, phase: int, rank: int) -> np.ndarray:
        """Phase 0: the rank's contiguous range. Later: its stretch of the old ranks' leftovers laid end to end
        in rank order (old rank q's are `remaining` x its share long, so they start at remaining x start(q))."""
        current, remaining = self.phases[phase], self.steps - self.phases[phase].first_step
        lo = remaining * current.start(rank)
        hi = lo + remaining * current.share(rank)
        if phase == 0:
            return np.arange(lo, hi, dtype=np.int64)
        if hi == lo:
            return np.zeros(0, np.int64)
        old = self.phases[phase - 1]
        parts = [self.leftover(phase - 1, q)[max(lo - remaining * old.start(q), 0):hi - remaining * old.start(q)]
                 for q in range(old.holder(lo // remaining), old.holder((hi - 1) // remaining) + 1)]
        return np.concatenate(parts)

    def leftover(self, phase: int, rank: int) -> np.ndarray:
        """What `rank` had not consumed of its piece when `phase` ended (ascending)."""
        key = (phase, rank)
        if key not in self._left:
            piece = self.piece(phase, rank)
            done = (self.phases[phase + 1].first_step - self.phases[phase].first_step) * self.phases[phase].accumulation
            taken = np.zeros(len(piece), bool)
            for worker in range(self.phases[phase].loader_workers):
                taken[self.emitted(phase, rank, worker, done)] = True
            self._left[key] = piece[~taken]
        return self._left[key]

    def emitted(self, phase: int, rank: int, worker: int, batches: int) -> list[int]:
        """Indices into `piece(phase, rank)` of the samples loader worker `worker` had delivered when the rank
        had taken its first `batches` batches, in delivery order."""
        p = self.phases[phase]
        mine = self.worker_indices(phase, rank, worker)
        count = sum(self.batch_sizes(phase, rank, worker)[:len(range(worker, batches, p.loader_workers))])
        rng = random.Random(shuffle_seed(self.seed, self.epoch, rank, worker, phase))
        return list(islice(shuffled(iter(mine.tolist()), self.shuffle_buffer, rng), count))

    def _batch_numbers(self, phase: int, rank: int, worker: int) -> np.ndarray:
        """The rank's batches (numbered in its piece) that loader worker `worker` prepares: every L-th."""
        p = self.phases[phase]
        batches = len(self.piece(phase, rank)) // p.share(rank) * p.accumulation if p.share(rank) else 0
        return np.asarray(plan.worker_batches(batches, p.loader_workers, worker), np.int64)

    def batch_sizes(self, phase: int, rank: int, worker: int) -> list[int]:
        """The sizes of the batches loader worker `worker` of `rank` prepares in `phase`, in order."""
        sizes = self.phases[phase].sizes(rank)
        return [sizes[t % len(sizes)] for t in self._batch_numbers(phase, rank, worker).tolist()]

    def worker_indices(self, phase: int, rank: int, worker: int) -> np.ndarray:
        """Indices into `piece(phase, rank)` that loader worker `worker` reads, in order (before its shuffle):
        batch t is step t // A's micro-batch t % A, at step x share + the micro-batches before it."""
        p = self.phases[phase]
        sizes = np.asarray(p.sizes(rank), np.int64)
        before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        numbers = self._batch_numbers(phase, rank, worker)
        if not len(numbers):
            return np.zeros(0, np.int64)
        starts = numbers // p.accumulation * sizes.sum() + before[numbers % p.accumulation]
        lengths = sizes[numbers % p.accumulation]
        return np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())

    def batches(self, rank: int, worker: int) -> list[list[plan.Segment]]:
        """The last phase's batches that loader worker `worker` of `rank` prepares, as shard segments: one per
        run of consecutive positions (a piece has holes where the previous phase consumed samples)."""
        phase = len(self.phases) - 1
        piece = self.piece(phase, rank)
        indices = self.worker_indices(phase, rank, worker)
        bounds = np.cumsum(self.batch_sizes(phase, rank, worker))[:-1]
        return [self._segments(piece[row]) for row in np.split(indices, bounds)]

    def _segments(self, positions: np.ndarray) -> list[plan.Segment]:
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        out: list[plan.Segment] = []
        for run in np.split(positions, breaks):
            if len(run):
                out += plan.segments(self.sizes, self.order, int(run[0]), int(run[-1]) + 1, self.starts)
        return out
