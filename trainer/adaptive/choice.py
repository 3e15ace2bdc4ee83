"""Which global batch to run next: the candidate with the highest predicted goodput, if it beats the current
batch by a margin (a switch costs a re-plan of the data and a change of lr, and the predictions are noisy)."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def candidate_batches(min_batch: int, max_batch: int, multiple: int = 1) -> list[int]:
    """min_batch x 2^j up to max_batch, and max_batch itself, each rounded down to a multiple of `multiple` (the
    batch the ranks can share; never below one `multiple`), sorted and without repeats."""
    if not 0 < min_batch <= max_batch or multiple < 1:
        raise ValueError(f"candidate batches: needs 0 < min <= max and multiple >= 1, got {min_batch}, "
                         f"{max_batch}, {multiple}")
    sizes, batch = {max_batch}, min_batch
    while batch <= max_batch:
        sizes.add(batch)
        batch *= 2
    return sorted({max(multiple, size // multiple * multiple) for size in sizes})


@dataclass(frozen=True)
class BatchChoice:
    """The batch to run, every batch's predicted goodput, and one line for the run's records saying why."""
    batch: int
    predicted: dict[int, float]
    reason: str


def choose_batch(current: int, candidates: Sequence[int], goodput_of: Callable[[int], float],
                 min_improvement: float) -> BatchChoice:
    """The best of the candidates and the current batch (ties: the smaller batch; a nan prediction never
    wins); switches only if it predicts at least `min_improvement` x the current batch's goodput."""
    predicted = {batch: goodput_of(batch) for batch in sorted({*candidates, current})}
    best = max(predicted, key=lambda b: -math.inf if math.isnan(predicted[b]) else predicted[b])
    now, then = predicted[current], predicted[best]
    ratio = then / now if now > 0 else math.inf
    if best == current:
        return BatchChoice(current, predicted, f"kept {current}: it predicts the highest goodput ({now:,.0f} "
                                               f"examples/s)")
    if then >= min_improvement * now:
        return BatchChoice(best, predicted, f"goodput {ratio:.2f}x: {current} -> {best} (predicted {then:,.0f} "
                                            f"vs {now:,.0f} examples/s)")
    return BatchChoice(current, predicted, f"kept {current}: the best, {best}, predicts {ratio:.2f}x, below the "
                                           f"{min_improvement:.2f}x margin")
