"""Which examples each rank sees, as a pure function of (seed, epoch, step).

One shuffle per epoch (Goyal et al. 2017: "a single random shuffling of the
training data, then divided amongst all workers"); optimizer step s takes the
global batch perm[s*G : (s+1)*G], laid out as [micro-step][rank][example].
Resuming at step s needs no replay of the batches before it. The remainder of
an epoch (fewer than G examples) is dropped.

Repeated augmentation (`data.aug_repeats` R > 1; Hoffer et al. 2020, DeiT's
RASampler, timm's RepeatAugSampler): step s takes G/R distinct examples,
perm[s*G/R : (s+1)*G/R], and lays out R copies of that list one after another,
copy c of each example carrying the key c so its augmentation is drawn apart
from the other copies'. Copies of one example are G/R positions apart, so they
fall in different micro-batches (other ranks, or other micro-steps) whenever
workers x accumulation >= R, as the stride sharding of those samplers puts
them on other GPUs. An epoch keeps its N // G steps, so it visits N/R distinct
examples, each R times (those samplers do the same).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bigbatch.trainer.recipe.shares import layout


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> torch.Tensor:
    state = np.random.SeedSequence([seed, epoch]).generate_state(2)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(num_examples, generator=generator)


@dataclass(frozen=True)
class TrainOrder:
    seed: int
    num_examples: int
    batch_size: int  # per rank, per micro-step
    world_size: int = 1
    rank: int = 0
    accumulation_steps: int = 1
    repeats: int = 1  # data.aug_repeats; divides the global batch
    uneven_batch: int = 0  # a global batch the ranks share unevenly (recipe/shares.py); batch_size is then the largest
    offset: int = 0  # examples of the epoch read before step 0 here, at other batches (an adaptive batch's stretch)

    @property
    def global_batch(self) -> int:
        return self.uneven_batch or self.batch_size * self.world_size * self.accumulation_steps

    @property
    def steps_per_epoch(self) -> int:
        """Steps left in the epoch from `offset` (all of it for a fixed batch)."""
        return (self.num_examples - self.offset) // self.global_batch

    def micro_batches(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """This rank's index tensors for steps start_step.. of `epoch`, accumulation_steps per step."""
        for indices, _ in self.keyed_micro_batches(epoch, start_step):
            yield indices

    def keyed_micro_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, copy numbers) of this rank's micro-batches; the copy numbers are all 0 without repeats."""
        perm = epoch_permutation(self.seed, epoch, self.num_examples)
        per_micro, distinct = self.batch_size * self.world_size, self.global_batch // self.repeats
        copies = torch.arange(self.repeats).repeat_interleave(distinct)
        cells = ([row[self.rank] for row in layout(self.uneven_batch, self.world_size, self.accumulation_steps)]
                 if self.uneven_batch else
                 [(micro * per_micro + self.rank * self.batch_size, self.batch_size)
                  for micro in range(self.accumulation_steps)])
        first = self.offset // self.repeats  # the repeats divide every global batch, so the offset too
        for step in range(start_step, self.steps_per_epoch):
            batch = perm[first + step * distinct:first + (step + 1) * distinct].repeat(self.repeats)
            for offset, size in cells:
                yield batch[offset: offset + size], copies[offset: offset + size]


def eval_shard(num_examples: int, world_size: int, rank: int) -> range:
    """Contiguous, disjoint, covering: every held-out example on exactly one rank, none repeated."""
    return range(num_examples * rank // world_size, num_examples * (rank + 1) // world_size)
