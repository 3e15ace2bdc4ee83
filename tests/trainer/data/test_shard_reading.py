"""An epoch of packed shards read by several world shapes in turn (an elastic resize, or other loader workers
on resume): what the earlier shapes' ranks really delivered, counted from their streams, and what the later
shapes read, together cover the epoch's planned samples exactly once."""

from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from bigbatch.trainer.data.shards import ShardedDataset, plan
from bigbatch.trainer.data.shards.reading import EpochReading, Phase
from bigbatch.trainer.data.shards.simulate import IMAGENET_TRAIN, packed_sizes
from tests.images import write_packed_shards


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return write_packed_shards(tmp_path_factory.mktemp("reading"), 12_000, classes=5, per_class=10,
                               val_per_class=1, size=(48, 64))


def dataset(packed, world_size: int, rank: int, batch_size: int = 4) -> ShardedDataset:
    return ShardedDataset(packed, "train", seed=3, world_size=world_size, rank=rank, batch_size=batch_size,
                          shuffle_buffer=5, decode=False)


def keys(batches) -> list[str]:
    return [record.key for batch in batches for record in batch]


def test_three_shapes_in_one_epoch_read_every_planned_sample_once(packed):
    # 50 samples, global batch 12: 4 steps read 48. Step 0 on 3 ranks x 4 (2 loader workers), step 1 on
    # 2 ranks x 2 micro-steps of 3 (1 worker), steps 2-3 on 4 ranks x 3 (3 workers); each shuffle buffer of 5
    phases = [Phase(0, 3, 4, 1, 2), Phase(1, 2, 3, 2, 1), Phase(2, 4, 3, 1, 3)]
    epoch, read = 1, Counter()
    for rank in range(3):  # what each rank of the first shape delivered in its one step: counted, not derived
        batches = dataset(packed, 3, rank).rank_batches(epoch, num_workers=2)
        read.update(keys(next(batches) for _ in range(1)))
    for rank in range(2):
        batches = dataset(packed, 2, rank).rank_batches(epoch, num_workers=1, phases=phases[:2])
        read.update(keys(next(batches) for _ in range(2)))
    for rank in range(4):
        rest = list(dataset(packed, 4, rank).rank_batches(epoch, num_workers=3, phases=phases))
        assert [len(b) for b in rest] == [3, 3]  # 2 steps x 1 micro-step of 3, every batch full
        read.update(keys(rest))
    assert len(read) == 48 and set(read.values()) == {1}
    index_keys = {r.key for r in dataset(packed, 1, 0).records(epoch, 0, 1)}  # the whole epoch's sequence
    assert set(read) <= index_keys and len(index_keys) == 48  # 50 // 12 x 12 of them


def test_a_resized_rank_resumes_inside_its_phase_and_its_loader_delivers_the_same_batches(packed):
    phases = [Phase(0, 3, 4, 1, 2), Phase(1, 2, 3, 2, 3)]
    reference = dataset(packed, 2, 1)
    whole = keys(reference.rank_batches(0, num_workers=3, phases=phases))
    assert len(whole) == 3 * 6  # steps 1-3 of the epoch, 6 samples each
    assert keys(reference.rank_batches(0, num_workers=3, consumed=9, phases=phases)) == whole[9:]
    ds = dataset(packed, 2, 1)
    ds.set_epoch(0, 9, 2, phases=phases)  # 9 = 1.5 steps: a whole number of micro-batches of 3
    loader = DataLoader(ds, batch_size=None, num_workers=3, collate_fn=lambda batch: batch)  # whole batches
    assert keys(loader) == whole[9:]
    with pytest.raises(ValueError, match="not a whole number of batches of 3"):
        ds.set_epoch(0, 4, 2, phases=phases)


def test_one_phase_reads_what_the_plan_says(packed):
    sizes = dataset(packed, 1, 0).sizes
    reading = EpochReading(sizes, 3, 2, 5, [Phase(0, 2, 4, 3, 2)])
    for rank in range(2):
        for worker in range(2):
            assert reading.batches(rank, worker) == plan.train_segments(sizes, 3, 2, 2, rank, 4, 3, 2, worker)


def test_phases_that_change_the_global_batch_or_start_out_of_order_are_refused():
    with pytest.raises(ValueError, match="same global batch"):
        EpochReading([100], 0, 0, 1, [Phase(0, 4, 4, 1), Phase(1, 2, 4, 1)])
    with pytest.raises(ValueError, match="in order"):
        EpochReading([100], 0, 0, 1, [Phase(0, 4, 4, 1), Phase(0, 2, 8, 1)])


def test_imagenet_epoch_resized_from_1024_to_1016_workers_reads_every_sample_once():
    # G must stay: 1,024 x 127 = 1,016 x 128 = 130,048 images a step, 9 steps an epoch; the node of 8 GPUs
    # is lost after step 4. Every rank has 2 loader workers with the default shuffle buffer of 1,000.
    sizes = packed_sizes(IMAGENET_TRAIN, 1 << 30)
    phases = [Phase(0, 1024, 127, 1, 2), Phase(4, 1016, 128, 1, 2)]
    reading = EpochReading(sizes, 0, 5, 1000, phases)
    assert reading.steps == IMAGENET_TRAIN // 130_048 == 9
    counts = np.zeros(9 * 130_048, np.int32)
    for rank in range(1024):
        piece = reading.piece(0, rank)
        for worker in range(2):  # what each old worker's shuffle buffer had emitted after 4 steps
            np.add.at(counts, piece[reading.emitted(0, rank, worker, 4)], 1)
    for rank in range(1016):
        piece = reading.piece(1, rank)
        assert len(piece) == 5 * 128  # each new rank takes its share of the 5 steps left, nothing more
        np.add.at(counts, piece, 1)
    assert counts.min() == counts.max() == 1
    # a new rank's piece is the leftovers of at most 2 old ranks (1,143 positions each): O(its share) to plan
    fresh = EpochReading(sizes, 0, 5, 1000, phases)
    piece = fresh.piece(1, 700)
    assert len(np.unique(piece // (9 * 127))) <= 2
    assert sum(len(batch) for batch in fresh.batches(700, 1)) >= 1  # segments: runs of consecutive positions
    covered = sum(s.count for batch in fresh.batches(700, 0) + fresh.batches(700, 1) for s in batch)
    assert covered == 5 * 128


def test_ranks_sharing_the_global_batch_unevenly_read_every_planned_sample_once(packed):
    # 50 samples, G = 12, 4 steps. Step 0 on 3 ranks x 4 (2 loader workers); step 1 on 5 ranks taking 3, 3, 2,
    # 2, 2 (1 worker); steps 2-3 on 5 ranks in 2 micro-steps of at most 2 (2 workers): 2 + 1, 1 + 2, 1 + 1, ...
    phases = [Phase(0, 3, 4, 1, 2), Phase(1, 5, 3, 1, 1, 12), Phase(2, 5, 2, 2, 2, 12)]
    assert [phases[1].share(r) for r in range(5)] == [3, 3, 2, 2, 2]
    epoch, read = 2, Counter()
    for rank in range(3):
        read.update(keys([next(dataset(packed, 3, rank).rank_batches(epoch, num_workers=2))]))
    for rank in range(5):
        batches = dataset(packed, 5, rank).rank_batches(epoch, num_workers=1, phases=phases[:2])
        first = next(batches)
        assert len(first) == phases[1].share(rank)
        read.update(keys([first]))
    for rank in range(5):
        rest = list(dataset(packed, 5, rank).rank_batches(epoch, num_workers=2, phases=phases))
        assert [len(b) for b in rest] == phases[2].sizes(rank) * 2  # each micro-batch of its planned size
        read.update(keys(rest))
    assert len(read) == 48 and set(read.values()) == {1}


def test_an_uneven_rank_resumes_between_micro_batches_of_different_sizes_through_a_dataloader(packed):
    phases = [Phase(0, 3, 4, 1, 2), Phase(1, 5, 2, 2, 2, 12)]
    sizes = phases[1].sizes(0)
    assert sizes == [2, 1]  # rank 0 takes 3 a step
    reference = dataset(packed, 5, 0)
    whole = keys(reference.rank_batches(2, num_workers=2, phases=phases))
    assert len(whole) == 3 * 3
    ds = dataset(packed, 5, 0)
    ds.set_epoch(2, 5, 2, phases=phases)  # a step and a micro-batch of 2
    loader = DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda batch: batch)
    assert keys(loader) == whole[5:]
    with pytest.raises(ValueError, match=r"not a whole number of batches of 2 \+ 1"):
        ds.set_epoch(2, 4, 2, phases=phases)


def test_imagenet_epoch_on_1024_workers_then_1016_sharing_32768_unevenly_reads_every_sample_once():
    # 1,024 GPUs x 32 images: G = 32,768 = 2^15, which 1,016 does not divide: 256 ranks take 33, 760 take 32, in
    # 2 micro-steps (17 + 16 or 16 + 16, at most data.batch_size 32). 39 steps an epoch; a node lost after step 4.
    sizes = packed_sizes(IMAGENET_TRAIN, 1 << 30)
    phases = [Phase(0, 1024, 32, 1, 2), Phase(4, 1016, 32, 2, 2, 32_768)]
    reading = EpochReading(sizes, 0, 5, 1000, phases)
    assert reading.steps == IMAGENET_TRAIN // 32_768 == 39
    counts = np.zeros(39 * 32_768, np.int32)
    for rank in range(1024):
        piece = reading.piece(0, rank)
        for worker in range(2):
            np.add.at(counts, piece[reading.emitted(0, rank, worker, 4)], 1)
    shares = [phases[1].share(r) for r in range(1016)]
    assert sorted(set(shares)) == [32, 33] and shares.count(33) == 32_768 - 1016 * 32
    for rank in range(1016):
        piece = reading.piece(1, rank)
        assert len(piece) == 35 * shares[rank]  # its share of the 35 steps left, nothing more
        np.add.at(counts, piece, 1)
    assert counts.min() == counts.max() == 1
    fresh = EpochReading(sizes, 0, 5, 1000, phases)
    assert len(np.unique(fresh.piece(1, 700) // (39 * 32))) <= 2  # the leftovers of at most 2 old ranks
    batches = fresh.batches(700, 0) + fresh.batches(700, 1)
    assert sorted(sum(s.count for s in batch) for batch in batches) == sorted(
        fresh.batch_sizes(1, 700, 0) + fresh.batch_sizes(1, 700, 1)) and len(batches) == 35 * 2
    # a run that starts on 1,016: contiguous ranges of 39 x the share, covering the epoch's steps x G
    start = EpochReading(sizes, 0, 5, 1000, [Phase(0, 1016, 32, 2, 2, 32_768)])
    ends = [(int(start.piece(0, r)[0]), int(start.piece(0, r)[-1]) + 1) for r in range(1016)]
    assert ends[0][0] == 0 and ends[-1][1] == 39 * 32_768
    assert all(a[1] == b[0] for a, b in zip(ends[:-1], ends[1:], strict=True))
    assert [b - a for a, b in ends] == [39 * s for s in shares]
