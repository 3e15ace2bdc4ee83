"""Shard directories at the users' scale without the data: an index's shard sizes, as `bigbatch data pack`
would cut them, and what the plan (shards/plan.py) makes of them at any world size. For tests and
bench/shard_coverage.py: ImageNet's 1,281,167 images at 1 GB per shard are ~147 shards."""

import numpy as np

from bigbatch.trainer.data.shards import plan

IMAGENET_TRAIN, IMAGENET_VAL, IMAGENET_MEAN_BYTES = 1_281_167, 50_000, 115_000


def packed_sizes(num_samples: int, shard_bytes: int, seed: int = 0, mean_bytes: int = IMAGENET_MEAN_BYTES,
                 spread: float = 0.6) -> list[int]:
    """Samples per shard when images of lognormal sizes (mean `mean_bytes`, plus a 1 KB tar header each) are
    packed greedily into shards of at most `shard_bytes`, the last one a remainder."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(np.log(mean_bytes) - 0.5 * spread ** 2, spread, num_samples) + 1024
    shard_of = np.floor(np.cumsum(sizes) / shard_bytes).astype(np.int64)
    return np.bincount(shard_of).tolist()


def epoch_reads(sizes: list[int], seed: int, epoch: int, world_size: int, batch_size: int,
                accumulation: int = 1, loader_workers: int = 1) -> np.ndarray:
    """How many times the epoch's plan reads each sample (all ranks and loader workers), shard by shard."""
    counts = [np.zeros(n, np.int32) for n in sizes]
    for rank in range(world_size):
        for worker in range(loader_workers):
            for batch in plan.train_segments(sizes, seed, epoch, world_size, rank, batch_size, accumulation,
                                             loader_workers, worker):
                for s in batch:
                    counts[s.shard][s.start:s.start + s.count] += 1
    return np.concatenate(counts)
