"""Learning-rate schedules as pure functions of the global optimizer step.

A function of the step (not a stateful scheduler object) survives resume and a
change of world size: the checkpoint only needs the step.
"""

import math

SCHEDULES = ("cosine", "constant")


def warmup_then_decay(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start_lr: float = 0.0,
    schedule: str = "cosine",
    end_lr: float = 0.0,
) -> float:
    """lr for optimizer step `step` (0-based).

    Gradual warmup (Goyal et al. 2017, section 2.2): a per-iteration linear ramp
    from `warmup_start_lr` at step 0 to `peak_lr` at step `warmup_steps`; then
    `schedule` from `peak_lr` down to `end_lr` at `total_steps`.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_lr + (peak_lr - warmup_start_lr) * step / warmup_steps
    if schedule == "constant":
        return peak_lr
    if schedule == "cosine":
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return end_lr + 0.5 * (peak_lr - end_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
