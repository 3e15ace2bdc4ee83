"""Learning-rate schedules as pure functions of the global optimizer step.

A function of the step (not a stateful scheduler object) survives resume and a
change of world size: the checkpoint only needs the step.

Warmup (Goyal et al. 2017, section 2.2): "linear" ramps per iteration from
`warmup_start_lr` at step 0 towards `peak_lr`, reached at step `warmup_steps`;
"constant" holds `warmup_start_lr` for the warmup steps, then jumps. After
warmup, with p = (step - warmup_steps) / (total_steps - warmup_steps):

    constant   peak_lr
    cosine     end_lr + (peak_lr - end_lr) * (1 + cos(pi * p)) / 2
    poly       end_lr + (peak_lr - end_lr) * (1 - p) ** power   (MLPerf ResNet-50: power 2)
    linear     poly with power 1
    multistep  peak_lr * factor ** (number of milestones <= step)   (x0.1 at given epochs)
"""

import bisect
import math
from dataclasses import dataclass

DECAYS = ("cosine", "constant", "poly", "linear", "multistep")
WARMUPS = ("linear", "constant")


@dataclass(frozen=True)
class LRSchedule:
    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    warmup: str = "linear"
    decay: str = "cosine"
    end_lr: float = 0.0
    milestones: tuple[int, ...] = ()  # optimizer steps at which multistep multiplies the lr by `factor`
    factor: float = 0.1
    power: float = 2.0

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; expected one of {', '.join(DECAYS)}")
        if self.warmup not in WARMUPS:
            raise ValueError(f"unknown warmup {self.warmup!r}; expected one of {', '.join(WARMUPS)}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            if self.warmup == "constant":
                return self.warmup_start_lr
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * step / self.warmup_steps
        if self.decay == "constant":
            return self.peak_lr
        if self.decay == "multistep":
            return self.peak_lr * self.factor ** bisect.bisect_right(self.milestones, step)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.decay == "cosine":
            return self.end_lr + (self.peak_lr - self.end_lr) * (1.0 + math.cos(math.pi * progress)) / 2
        power = 1.0 if self.decay == "linear" else self.power
        return self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - progress) ** power
