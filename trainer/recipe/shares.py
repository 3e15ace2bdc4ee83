"""How W ranks share a global batch of G examples when W need not divide G (issue 30, work in progress).

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
    sizes, turn = [], 0
    for share in rank_shares(global_batch, world):
        base, extra = divmod(share, steps)
        sizes.append([base + ((m - turn) % steps < extra) for m in range(steps)])
        turn = (turn + extra) % steps
    return sizes


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
