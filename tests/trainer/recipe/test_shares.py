"""Uneven per-rank shares of a global batch (issue 30): from the definition, at small W and at W = 1,016."""

import pytest

from bigbatch.trainer.recipe.shares import layout, micro_sizes, micro_steps, rank_shares


def test_shares_differ_by_at_most_one_and_add_up():
    assert rank_shares(64, 3) == [22, 21, 21]
    for world in (1, 7, 1016, 1024):
        shares = rank_shares(32_768, world)
        assert sum(shares) == 32_768 and max(shares) - min(shares) <= (0 if 32_768 % world == 0 else 1)
    with pytest.raises(ValueError, match="cannot share"):
        rank_shares(8, 9)


def test_micro_steps_keep_every_micro_batch_within_the_batch_size():
    for global_batch, world, batch in ((64, 3, 8), (32_768, 1016, 32), (32_768, 1024, 32), (100, 7, 5)):
        steps = micro_steps(global_batch, world, batch)
        sizes = micro_sizes(global_batch, world, steps)
        assert [sum(row) for row in sizes] == rank_shares(global_batch, world)
        assert max(map(max, sizes)) <= batch and all(max(row) - min(row) <= 1 for row in sizes)
        blocks = [sum(row[m] for row in sizes) for m in range(steps)]
        assert max(blocks) - min(blocks) <= 1  # every micro-step normalises over nearly the same count
        assert steps == 1 or max(rank_shares(global_batch, world)) > (steps - 1) * batch  # the fewest
    assert micro_sizes(64, 3, 2) == [[11, 11], [11, 10], [10, 11]]


def test_the_layout_covers_the_step_once_and_is_the_old_one_for_equal_shares():
    for global_batch, world, steps in ((64, 3, 3), (32, 4, 2), (130, 16, 2), (32_768, 1016, 2)):
        cells = sorted(cell for row in layout(global_batch, world, steps) for cell in row)
        covered = [i for offset, size in cells for i in range(offset, offset + size)]
        assert covered == list(range(global_batch))
    # equal shares: micro-step m, rank r at m x W x b + r x b (what TrainOrder has always laid out)
    assert layout(32, 4, 2) == [[(m * 16 + r * 4, 4) for r in range(4)] for m in range(2)]


def test_uneven_ranks_take_every_example_of_a_step_once_and_equal_shares_keep_their_order():
    from bigbatch.trainer.data.order import TrainOrder

    for start in (0, 2):
        seen = []
        for rank in range(3):
            order = TrainOrder(seed=1, num_examples=200, batch_size=8, world_size=3, rank=rank,
                               accumulation_steps=3, uneven_batch=64)
            batches = list(order.micro_batches(0, start))
            assert [len(b) for b in batches[:3]] == micro_sizes(64, 3, 3)[rank]
            seen += [i for b in batches for i in b.tolist()]
        assert sorted(seen) == sorted(set(seen)) and len(seen) == (3 - start) * 64  # 200 // 64 = 3 steps
    old = TrainOrder(seed=1, num_examples=200, batch_size=4, world_size=4, rank=2, accumulation_steps=2)
    same = TrainOrder(seed=1, num_examples=200, batch_size=4, world_size=4, rank=2, accumulation_steps=2,
                      uneven_batch=32)
    assert all(a.tolist() == b.tolist() for a, b in zip(old.micro_batches(1), same.micro_batches(1), strict=True))


def test_a_ranks_start_and_the_rank_holding_an_example_are_the_running_sums_of_the_shares():
    from itertools import accumulate

    from bigbatch.trainer.recipe.shares import rank_holding, rank_start

    for global_batch, world in ((64, 3), (32_768, 1016), (130_048, 1024), (100, 7)):
        starts = list(accumulate(rank_shares(global_batch, world), initial=0))
        assert [rank_start(global_batch, world, r) for r in range(world)] == starts[:-1]
        owner = [r for r, share in enumerate(rank_shares(global_batch, world)) for _ in range(share)]
        picks = range(0, global_batch, max(global_batch // 5000, 1))
        assert [rank_holding(global_batch, world, i) for i in picks] == [owner[i] for i in picks]
