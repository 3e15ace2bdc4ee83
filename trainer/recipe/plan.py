"""Values derived from a recipe and the real world size: the numbers `bigbatch show` prints.

The global batch may grow during a run (`train.batch_growth_epochs`, Smith et
al. 2018), so the plan keeps the accumulation steps and optimizer steps of every
epoch and maps between epochs and global steps. The run loop reads data in
stretches: steps of one epoch at one global batch. A fixed recipe has one
stretch per epoch; an adaptive batch (trainer/adaptive) changes the batch at
any step, which splits an epoch into stretches (`adaptive_plan`).
"""

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from bigbatch.optim import LRSchedule, noise_scale, scale_lr
from bigbatch.trainer.adaptive.choice import candidate_batches
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.recipe.shares import micro_steps, rank_shares


@dataclass(frozen=True)
class Stretch:
    """Steps [first_step, end_step) of epoch `epoch` at one global batch, the unit the run loop reads data in.
    `offset` is where they start in the epoch's order, in examples (steps x global batch) read before them."""

    first_step: int
    steps: int
    epoch: int
    offset: int
    global_batch: int
    micro_batch: int  # the largest micro-batch
    accumulation: int
    uneven: bool  # the world size does not divide the global batch (recipe/shares.py)

    @property
    def end_step(self) -> int:
        return self.first_step + self.steps

    @property
    def uneven_batch(self) -> int:
        """The global batch when the ranks share it unevenly, else 0 (WorldShape's and StepContext's field)."""
        return self.global_batch if self.uneven else 0


@dataclass(frozen=True)
class Plan:
    world_size: int
    per_worker_batch: int
    accumulation_steps: int  # at epoch 0
    global_batch: int  # at epoch 0
    train_examples: int
    steps_per_epoch: int  # at epoch 0
    scaled_lr: float
    warmup_start_lr: float
    warmup_steps: int
    schedule_steps: int  # the lr schedule spans every epoch
    total_steps: int  # optimizer steps this run performs (train.max_steps caps it)
    noise_scale: float  # SGD noise scale at the peak lr and the first global batch
    momentum: float = field(repr=False)
    epoch_accumulation: tuple[int, ...] = field(repr=False)
    epoch_steps: tuple[int, ...] = field(repr=False)
    schedule: LRSchedule = field(repr=False)
    epoch_batches: tuple[int, ...] = field(repr=False, default=())  # the global batch of each epoch
    uneven: bool = False  # the world size does not divide the global batch: ranks take G // W or G // W + 1
    stretches: tuple[Stretch, ...] = field(repr=False, default=())

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in
               ("momentum", "epoch_accumulation", "epoch_steps", "schedule", "epoch_batches", "uneven",
                         "stretches")}
        out["epoch_coverage"] = round(self.steps_per_epoch * self.global_batch / self.train_examples, 6)
        if self.uneven:
            shares = rank_shares(self.global_batch, self.world_size)
            out["rank_shares"] = f"{max(shares)} examples on {shares.count(max(shares))} ranks, {min(shares)} on " \
                                 f"{shares.count(min(shares))}"
        if len(set(self.epoch_accumulation)) > 1:
            out["batch_phases"] = self.batch_phases()
        return out


    def batch_phases(self) -> list[dict]:
        """Each stretch of epochs with one global batch: where it starts, its steps and noise scale."""
        phases = []
        for epoch, accum in enumerate(self.epoch_accumulation):
            if phases and phases[-1]["accumulation_steps"] == accum:
                continue
            batch = self.epoch_batches[epoch]
            phases.append({"from_epoch": epoch, "accumulation_steps": accum, "global_batch": batch,
                           "steps_per_epoch": self.epoch_steps[epoch], "first_step": self.epoch_start(epoch),
                           "noise_scale": noise_scale(self.scaled_lr, self.momentum, self.train_examples, batch)})
        return phases

    def epoch_start(self, epoch: int) -> int:
        return sum(self.epoch_steps[:epoch])

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within that epoch) of global optimizer step `step`."""
        starts = list(accumulate(self.epoch_steps, initial=0))
        epoch = min(bisect.bisect_right(starts, step) - 1, len(self.epoch_steps) - 1)
        return epoch, step - starts[epoch]

    def epoch_progress(self, step: int) -> float:
        """Epochs done before step `step`, with the fraction of the current one (for records)."""
        epoch, in_epoch = self.locate(step)
        if step >= self.epoch_start(epoch + 1):
            return float(epoch + 1)
        return epoch + in_epoch / self.epoch_steps[epoch]

    def global_batch_at(self, epoch: int) -> int:
        """The global batch epoch `epoch` starts with."""
        return self.epoch_batches[epoch]

    def stretch_at(self, step: int) -> Stretch:
        """The stretch step `step` (0-based) belongs to; past the last step, the last stretch."""
        firsts = [s.first_step for s in self.stretches]
        return self.stretches[max(bisect.bisect_right(firsts, step) - 1, 0)]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, examples of its order read) before step `step`: what a checkpoint keeps of the data."""
        stretch = self.stretch_at(step)
        return stretch.epoch, stretch.offset + min(step - stretch.first_step, stretch.steps) * stretch.global_batch

    def step_of(self, epoch: int, offset: int) -> int:
        """The step at `offset` examples into epoch `epoch` (rounded down to a step); past the plan, its end."""
        inside = [s for s in self.stretches if s.epoch == epoch and s.offset <= offset]
        if not inside:
            return self.stretches[-1].end_step if epoch > self.stretches[-1].epoch else self.epoch_start(epoch)
        stretch = inside[-1]
        return stretch.first_step + min((offset - stretch.offset) // stretch.global_batch, stretch.steps)

    def uneven_batch_at(self, epoch: int) -> int:
        """The global batch of `epoch` when the ranks share it unevenly (recipe/shares.py), else 0."""
        return self.epoch_batches[epoch] if self.uneven else 0

    def images_between(self, first: int, last: int) -> int:
        """Training examples consumed by steps [first, last): stretches may differ in global batch."""
        return sum(max(0, min(last, s.end_step) - max(first, s.first_step)) * s.global_batch
                   for s in self.stretches)

    def accumulation_of_step(self, step: int) -> int:
        """The accumulation steps optimizer step number `step` (1-based) took."""
        return self.stretch_at(max(step - 1, 0)).accumulation

    def global_batch_of_step(self, step: int) -> int:
        """The global batch optimizer step number `step` (1-based) took."""
        return self.stretch_at(max(step - 1, 0)).global_batch


def _epoch_to_step(epoch: float, epoch_steps: list[int]) -> int:
    """The global step at (possibly fractional) `epoch`."""
    whole = int(epoch)
    if whole >= len(epoch_steps):
        return sum(epoch_steps)
    return sum(epoch_steps[:whole]) + round((epoch - whole) * epoch_steps[whole])


def world_shape(recipe: Recipe, world: int, global_batch: int | None = None) -> tuple[int, int]:
    """(largest micro-batch, micro-steps) of a step of the global batch G (the recipe's, or `global_batch`) on
    `world` workers. When `world` divides G, each worker takes E = G / world examples in the fewest micro-steps
    k (a divisor of E) whose micro-batch E / k is at most data.batch_size (at cluster.workers: the recipe's own
    data.batch_size and train.accumulation_steps). Otherwise the ranks take G // W or G // W + 1 examples in
    the fewest micro-steps that keep each micro-batch within data.batch_size (recipe/shares.py)."""
    batch = global_batch or recipe.global_batch
    per_worker, remainder = divmod(batch, world)
    if remainder:
        k = micro_steps(batch, world, recipe.data.batch_size)
        return math.ceil(math.ceil(batch / world) / k), k
    k = next(k for k in range(1, per_worker + 1) if per_worker % k == 0 and per_worker // k <= recipe.data.batch_size)
    return per_worker // k, k


def elastic_sizes(recipe: Recipe) -> list[int]:
    """Every world size an elastic run may have (cluster.min_workers .. cluster.workers): each keeps the global
    batch, in equal shares or not (recipe/shares.py)."""
    return recipe.cluster.world_sizes


def make_plan(recipe: Recipe, train_examples: int, world_size: int | None = None) -> Plan:
    """Global batch = workers x per-worker batch x accumulation; lr scaled to it (Goyal et al. section 2.1).
    On another world size (an elastic run that lost or regained workers, or a resume elsewhere) the global
    batch, and so the lr schedule and the examples of every step, stay the recipe's (`world_shape`). The recipe
    was checked at load; what is left here needs the data (its size) or the real world size."""
    world = world_size or recipe.cluster.workers
    train, opt = recipe.train, recipe.optim
    if world > recipe.global_batch:
        raise RecipeError(f"cluster.workers: {world} workers cannot share the global batch {recipe.global_batch}: "
                          f"every worker needs at least one example a step")
    per_worker_batch, base_accumulation = world_shape(recipe, world)
    uneven = recipe.global_batch % world != 0
    growth = [bisect.bisect_right(sorted(train.batch_growth_epochs), e) for e in range(train.epochs)]
    batches = [recipe.global_batch * train.batch_growth_factor ** g for g in growth]
    accumulation = ([world_shape(recipe, world, b)[1] for b in batches] if uneven else
                    [base_accumulation * train.batch_growth_factor ** g for g in growth])
    epoch_steps = [train_examples // b for b in batches]
    global_batch = batches[0]
    if min(epoch_steps) == 0:
        worst = max(batches)
        raise RecipeError(f"data.batch_size: global batch {worst} (cluster.workers x data.batch_size x "
                          f"train.accumulation_steps, grown) exceeds the {train_examples} training examples")
    scaled = scale_lr(opt.base_lr, global_batch, opt.reference_batch, opt.lr_scaling)
    warmup = opt.warmup_steps or _epoch_to_step(opt.warmup_epochs, epoch_steps)
    schedule_steps = sum(epoch_steps)
    milestones = [float(e) for e in opt.decay_epochs]
    if opt.schedule == "step":
        milestones = [opt.decay_every_epochs * k for k in range(1, math.ceil(train.epochs / opt.decay_every_epochs))]
    schedule = LRSchedule(
        peak_lr=scaled, total_steps=schedule_steps, warmup_steps=warmup,
        warmup_start_lr=min(opt.base_lr, scaled) if opt.warmup_from == "base_lr" else 0.0,
        warmup=opt.warmup_mode, decay="multistep" if opt.schedule == "step" else opt.schedule,
        end_lr=opt.end_lr, milestones=tuple(_epoch_to_step(e, epoch_steps) for e in milestones),
        factor=opt.decay_factor, power=opt.poly_power)
    total = min(train.max_steps, schedule_steps) if train.max_steps else schedule_steps
    momentum = opt.momentum if opt.name != "lamb" else opt.lamb.betas[0]
    stretches, first = [], 0
    for epoch, (steps, batch, accum) in enumerate(zip(epoch_steps, batches, accumulation, strict=True)):
        stretches.append(Stretch(first, steps, epoch, 0, batch, per_worker_batch, accum, uneven))
        first += steps
    return Plan(
        world_size=world, per_worker_batch=per_worker_batch, accumulation_steps=accumulation[0],
        global_batch=global_batch, train_examples=train_examples, steps_per_epoch=epoch_steps[0],
        scaled_lr=scaled, warmup_start_lr=schedule.warmup_start_lr, warmup_steps=warmup,
        schedule_steps=schedule_steps, total_steps=total,
        noise_scale=noise_scale(scaled, momentum, train_examples, global_batch), momentum=momentum,
        epoch_accumulation=tuple(accumulation), epoch_steps=tuple(epoch_steps), schedule=schedule,
        epoch_batches=tuple(batches), uneven=uneven, stretches=tuple(stretches))


def elastic_table(recipe: Recipe, train_examples: int) -> list[dict]:
    """What `bigbatch show` prints for an elastic recipe: the shape of a step at the ends of the world sizes it
    may run at (the global batch, steps and lr schedule are the same at each; shares between differ by one)."""
    make_plan(recipe, train_examples)
    sizes = elastic_sizes(recipe)
    rows = []
    for world in dict.fromkeys((sizes[0], sizes[-1])):
        micro, steps = world_shape(recipe, world)
        shares = rank_shares(recipe.global_batch, world)
        rows.append({"world_size": world, "per_worker_batch": micro, "accumulation_steps": steps,
                     "examples_per_worker": max(shares) if min(shares) == max(shares) else
                     f"{min(shares)}-{max(shares)}", "global_batch": recipe.global_batch})
    return rows


def adaptive_plan(recipe: Recipe, base: Plan, changes: Sequence[tuple[int, int]], epochs: int) -> Plan:
    """The plan of a run whose global batch changed at the given steps ((step, batch) pairs, the first at step
    0): each change starts a stretch where the data stood (the same epoch's order, from its offset), and an epoch
    ends when fewer examples than one global batch of the stretch are left (that remainder is dropped, as a
    fixed plan drops it). Laid out over `epochs` epochs: an adaptive run ends by its progress (trainer/adaptive),
    not at a step count, so the caller passes an upper bound. The lr schedule and `schedule_steps` stay the
    base plan's: they are in steps of the recipe's global batch."""
    examples, world = base.train_examples, base.world_size
    stretches: list[Stretch] = []
    step, epoch, offset = 0, 0, 0
    ends = [start for start, _ in changes[1:]] + [None]
    for (_, batch), end in zip(changes, ends, strict=True):
        micro, accumulation = world_shape(recipe, world, batch)
        while epoch < epochs and (end is None or step < end):
            take = (examples - offset) // batch if end is None else min((examples - offset) // batch, end - step)
            if take:
                stretches.append(Stretch(step, take, epoch, offset, batch, micro, accumulation, batch % world != 0))
                step, offset = step + take, offset + take * batch
            if offset + batch > examples:  # no room for another step of this batch: the next epoch
                epoch, offset = epoch + 1, 0
    firsts = {}
    for stretch in stretches:
        firsts.setdefault(stretch.epoch, stretch)
    per_epoch = [sum(s.steps for s in stretches if s.epoch == e) for e in range(len(firsts))]
    return dataclasses.replace(
        base, stretches=tuple(stretches), total_steps=stretches[-1].end_step, epoch_steps=tuple(per_epoch),
        epoch_batches=tuple(s.global_batch for s in firsts.values()),
        epoch_accumulation=tuple(s.accumulation for s in firsts.values()))


def adaptive_batches(recipe: Recipe, world: int, train_examples: int) -> list[int]:
    """The global batches train.batch_policy adaptive may choose on `world` workers: train.adaptive's range as
    candidate_batches lays it out (min x 2^k, and max), each shared by the workers (at least W) and leaving an
    epoch of at least two steps."""
    low, high = recipe.adaptive_range
    fits = max(min(high, train_examples // 2), low)
    return [b for b in candidate_batches(low, high, recipe.data.aug_repeats) if world <= b <= fits]


def adaptive_table(recipe: Recipe, train_examples: int) -> list[dict]:
    """What `bigbatch show` prints for an adaptive recipe: each batch the policy may choose, split at
    cluster.workers (the lr of each is the recipe's times the AdaScale gain the run measures)."""
    make_plan(recipe, train_examples)
    world, rows = recipe.cluster.workers, []
    for batch in adaptive_batches(recipe, world, train_examples):
        micro, steps = world_shape(recipe, world, batch)
        rows.append({"global_batch": batch, "per_worker_batch": micro, "accumulation_steps": steps,
                     "steps_per_epoch": train_examples // batch})
    return rows

