"""Learning-rate scaling rules: how the lr grows with the global batch.

Goyal et al. 2017, section 2.1 ("linear scaling rule"): when the minibatch is
multiplied by k, multiply the learning rate by k. The square-root rule suits
Adam-family optimizers (LAMB); "none" keeps the base lr.
"""

import math

RULES = ("linear", "sqrt", "none")


def scale_lr(base_lr: float, global_batch: int, reference_batch: int = 256, rule: str = "linear") -> float:
    """Return the lr for `global_batch` given `base_lr` tuned at `reference_batch`."""
    if global_batch <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got global={global_batch} reference={reference_batch}")
    ratio = global_batch / reference_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; expected one of {', '.join(RULES)}")
