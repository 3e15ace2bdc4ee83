"""The shard plan at the users' scale, without data: an ImageNet-shaped index (1,281,167 training and 50,000
validation samples, ~147 GB) packed at 1 GB and at 256 MB, on 8 to 1,024 ranks with 1 or 8 loader workers.

Every property is checked from the segments the plan hands each (rank, worker): what each reads is
enumerated sample by sample into a per-shard mark array, so coverage and duplicates are counted, not
derived from the plan's own arithmetic."""

import numpy as np
import pytest

from bigbatch.trainer.data.shards import plan
from bigbatch.trainer.data.shards.simulate import IMAGENET_TRAIN, IMAGENET_VAL, packed_sizes

BATCH = 32  # per GPU, as Goyal et al.
GB, MB = 10**9, 10**6


INDEXES = {
    "1GB": (packed_sizes(IMAGENET_TRAIN, GB, 0), packed_sizes(IMAGENET_VAL, GB, 1)),
    "256MB": (packed_sizes(IMAGENET_TRAIN, 256 * MB, 0), packed_sizes(IMAGENET_VAL, 256 * MB, 1)),
}


def test_the_imagenet_shaped_indexes_look_like_imagenet():
    train, val = INDEXES["1GB"]
    assert sum(train) == IMAGENET_TRAIN and sum(val) == IMAGENET_VAL
    assert 130 <= len(train) <= 160 and train[-1] < min(train[:-1])  # ~147 shards and a small remainder
    assert len(INDEXES["256MB"][0]) > 4 * 130


def mark(marks: list[np.ndarray], segments: list[plan.Segment]) -> int:
    n = 0
    for s in segments:
        marks[s.shard][s.start:s.start + s.count] += 1
        n += s.count
    return n


@pytest.mark.parametrize("layout", sorted(INDEXES))
@pytest.mark.parametrize("world", [8, 64, 256, 1024])
@pytest.mark.parametrize("loader_workers", [1, 8])
def test_every_epoch_trains_on_nearly_all_samples_once_with_equal_steps(layout, world, loader_workers):
    sizes, _ = INDEXES[layout]
    for epoch in (0, 1):
        marks = [np.zeros(n, np.int8) for n in sizes]
        per_rank = []
        for rank in range(world):
            batches = 0
            for worker in range(loader_workers):
                work = plan.train_segments(sizes, 7, epoch, world, rank, BATCH, 1, loader_workers, worker)
                assert all(sum(s.count for s in b) == BATCH for b in work), "every batch full"
                batches += len(work)
                mark(marks, [s for b in work for s in b])
            per_rank.append(batches)
        assert len(set(per_rank)) == 1, "every rank the same number of steps"
        seen = np.concatenate(marks)
        assert seen.max() == 1, "no sample twice in an epoch"
        assert seen.sum() / IMAGENET_TRAIN >= 0.99, f"epoch covers {seen.sum() / IMAGENET_TRAIN:.4f}"
        assert per_rank[0] == IMAGENET_TRAIN // (world * BATCH)


def test_the_samples_left_out_change_from_epoch_to_epoch():
    sizes, _ = INDEXES["1GB"]
    left_out = []
    for epoch in (0, 1):
        marks = [np.zeros(n, np.int8) for n in sizes]
        for rank in range(1024):
            mark(marks, [s for b in plan.train_segments(sizes, 7, epoch, 1024, rank, BATCH) for s in b])
        left_out.append(set(np.flatnonzero(np.concatenate(marks) == 0).tolist()))
    assert left_out[0] and left_out[0] != left_out[1]


@pytest.mark.parametrize("layout", sorted(INDEXES))
@pytest.mark.parametrize("world", [8, 64, 256, 1024])
@pytest.mark.parametrize("loader_workers", [1, 8])
def test_evaluation_covers_every_validation_sample_once_and_evenly(layout, world, loader_workers):
    _, sizes = INDEXES[layout]
    marks = [np.zeros(n, np.int8) for n in sizes]
    work = [sum(mark(marks, plan.eval_segments(sizes, world, rank, loader_workers, worker))
                for worker in range(loader_workers)) for rank in range(world)]
    seen = np.concatenate(marks)
    assert seen.min() == 1 and seen.max() == 1
    assert max(work) <= 2 * IMAGENET_VAL / world


def test_a_rank_reads_contiguous_runs_so_shards_are_shared_by_few_ranks():
    """Read load is spread: at W = 1,024 no shard is read by more than the ranks its samples fill, plus one."""
    sizes, _ = INDEXES["1GB"]
    readers = {}
    for rank in range(1024):
        for batch in plan.train_segments(sizes, 7, 0, 1024, rank, BATCH):
            for s in batch:
                readers.setdefault(s.shard, set()).add(rank)
    per_rank = IMAGENET_TRAIN // (1024 * BATCH) * BATCH
    assert max(len(r) for r in readers.values()) <= max(sizes) // per_rank + 2


def test_loader_workers_take_batches_in_turn_from_the_resume_point():
    assert list(plan.worker_batches(10, 3, 0)) == [0, 3, 6, 9]
    assert list(plan.worker_batches(10, 3, 2, first_batch=4)) == [6, 9]
    # 3 shards of 8, 2 ranks, batch 4: global batch 8, 3 steps, rank 1 reads positions 12..23 of the sequence
    order = plan.shard_order(3, 0, 0)
    got = plan.train_segments([8, 8, 8], 0, 0, 2, 1, 4)
    assert got == [[plan.Segment(order[1], 4, 4)], [plan.Segment(order[2], 0, 4)], [plan.Segment(order[2], 4, 4)]]
    got = plan.train_segments([8, 8, 8], 0, 0, 2, 1, 4, loader_workers=2, worker=1)
    assert got == [[plan.Segment(order[2], 0, 4)]]
