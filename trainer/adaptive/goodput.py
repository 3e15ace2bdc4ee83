"""Goodput: training progress per second at a global batch, Pollux's throughput x statistical efficiency.

Step time model. A data-parallel step at global batch G on W workers runs forward and backward on G / W examples
per worker, which grow with that per-worker batch, and then an all-reduce of the gradients and the optimizer's
update, which do not (their size is the model's). So

    step_s(G, W) = fixed_s + per_example_s x G / W

fitted to the median step time of each global batch the run has logged on W workers (medians, so a window with
a checkpoint or a straggler does not move the line). With one batch seen the line has one point; the measured
collective time per step stands in for the fixed part.

Goodput, in reference-batch examples per second: throughput G / step_s times Pollux's efficiency
EFF = r G0 / G (r the AdaScale gain) is G0 r / step_s.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bigbatch.optim.adascale import adascale_gain


@dataclass(frozen=True)
class StepReading:
    """One log window: the group's mean step time at global batch `batch` on `world` workers, and its mean
    collective (all-reduce) time per step."""
    world: int
    batch: int
    step_s: float
    comm_s: float = 0.0


@dataclass(frozen=True)
class StepTimeModel:
    """fixed_s + per_example_s x per-worker batch. `source` says where it came from: "assumed" (given, not
    measured), "fitted" (a line through two or more batches) or "one batch: fixed part = measured collective
    time"."""
    fixed_s: float
    per_example_s: float
    source: str

    def step_s(self, batch: int, world: int) -> float:
        return self.fixed_s + self.per_example_s * batch / world


ONE_BATCH = "one batch: fixed part = measured collective time"


def _one_batch(batch: int, world: int, step_s: float, comm_s: float) -> StepTimeModel:
    """The collective's time is the part that does not grow with the batch (capped at the whole step, as an
    all-reduce that overlaps the backward pass can take longer than what is left of the step); the rest is
    per example."""
    fixed = min(comm_s, step_s)
    return StepTimeModel(fixed, (step_s - fixed) / (batch / world), ONE_BATCH)


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = fixed + slope x with fixed >= 0: the free fit, or through the origin when its intercept
    would be negative (the constrained optimum then lies on fixed = 0)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    if my - slope * mx >= 0:
        return my - slope * mx, slope
    return 0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)


def fit_step_times(readings: Sequence[StepReading], world: int) -> StepTimeModel | None:
    """The step-time model on `world` workers from the readings at that world size; None without any.

    One point per batch (the medians), so a batch the run stayed at for long does not outweigh the others. A line
    that does not rise with the batch (noise between close batches) says nothing about the per-example part; the
    batch with the most readings then gets the one-batch rule (ties: the larger batch, whose step time holds the
    most compute)."""
    by_batch: dict[int, list[StepReading]] = {}
    for reading in readings:
        if reading.world == world:
            by_batch.setdefault(reading.batch, []).append(reading)
    if not by_batch:
        return None
    medians = {batch: (statistics.median(r.step_s for r in rs), statistics.median(r.comm_s for r in rs))
               for batch, rs in by_batch.items()}
    if len(medians) >= 2:
        batches = sorted(medians)
        fixed, slope = _line([b / world for b in batches], [medians[b][0] for b in batches])
        if slope > 0:
            return StepTimeModel(fixed, slope, "fitted")
    batch = max(by_batch, key=lambda b: (len(by_batch[b]), b))
    return _one_batch(batch, world, *medians[batch])


def goodput(batch: int, world: int, noise_scale: float, reference_batch: int, model: StepTimeModel) -> float:
    """Progress per second in reference-batch examples: G0 x AdaScale gain / step time."""
    return reference_batch * adascale_gain(noise_scale, batch, reference_batch) / model.step_s(batch, world)
