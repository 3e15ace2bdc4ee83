"""How W ranks share a global batch of G examples when W need not divide G (issue 30).

Rank r takes G // W examples a step, plus one for the first G % W ranks. Every rank takes the same number of
micro-steps k (they all-reduce on the same one), the fewest that keep every micro-batch within data.batch_size:
k = ceil(ceil(G / W) / batch_size); a rank splits its share into k micro-batches as equal as they can be
(`micro_sizes`: so are the micro-steps' blocks, which cross-replica BatchNorm normalises over). The
step's G examples are laid out micro-step by micro-step, each micro-step's block rank by rank, so with equal
shares the layout is [micro-step][rank][example], the one equal shares always had.
"""

import math


def rank_shares(global_batch: int, world: int) -> list[int]:
    """Examples each rank takes per step: G // W, and one more for the first G % W ranks."""
    if not 1 <= world <= global_batch:
        raise ValueError(f"{world} ranks cannot share a global batch of {global_batch}")
    base, extra = divmod(global_batch, world)
    return [base + (rank < extra) for rank in range(world)]


def micro_steps(global_batch: int, world: int, batch_size: int) -> int:
    """The fewest micro-steps that keep every rank's micro-batches within `batch_size`."""
    return math.ceil(math.ceil(global_batch / world) / batch_size)


def micro_sizes(global_batch: int, world: int, steps: int) -> list[list[int]]:
    """sizes[r][m]: rank r's micro-batch m. A rank's share splits into `steps` parts that differ by at most one;
    the larger parts go round-robin over the micro-steps, rank after rank, so that every micro-step's block
    (its micro-batches over all ranks) also differs from the others by at most one: with G = 64 on 3 ranks in 2
    micro-steps, 11 + 11, 11 + 10 and 10 + 11, blocks of 32 and 32, as one process with 2 micro-steps of 32
    normalises them."""
    return [rank_micro_sizes(global_batch, world, steps, rank) for rank in range(world)]


def rank_micro_sizes(global_batch: int, world: int, steps: int, rank: int) -> list[int]:
    """Row `rank` of `micro_sizes` in O(steps), not O(world): the round-robin's turn at rank r is the larger parts
    of the ranks before it, (G // W + [r' < G % W]) % steps summed over r' < r, in closed form."""
    base, extra_ranks = divmod(global_batch, world)
    before_long = min(rank, extra_ranks)  # ranks before this one that take G // W + 1
    turn = (before_long * ((base + 1) % steps) + (rank - before_long) * (base % steps)) % steps
    share_base, extra = divmod(base + (rank < extra_ranks), steps)
    return [share_base + ((m - turn) % steps < extra) for m in range(steps)]


def rank_start(global_batch: int, world: int, rank: int) -> int:
    """How many of a step's examples the ranks before `rank` take (sum of their shares)."""
    base, extra_ranks = divmod(global_batch, world)
    return rank * base + min(rank, extra_ranks)


def rank_holding(global_batch: int, world: int, example: int) -> int:
    """The rank whose share holds example `example` of a step, counted in rank order (inverse of rank_start)."""
    base, extra_ranks = divmod(global_batch, world)
    long_part = extra_ranks * (base + 1)
    return example // (base + 1) if example < long_part else extra_ranks + (example - long_part) // base


def layout(global_batch: int, world: int, steps: int) -> list[list[tuple[int, int]]]:
    """layout[m][r] = (offset in the step's examples, size) of rank r's micro-batch m: micro-step after
    micro-step, each block rank after rank."""
    sizes = micro_sizes(global_batch, world, steps)
    out, offset = [], 0
    for m in range(steps):
        row = []
        for r in range(world):
            row.append((offset, sizes[r][m]))
            offset += sizes[r][m]
        out.append(row)
    return out
