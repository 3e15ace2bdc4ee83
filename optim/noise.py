"""SGD noise scale (Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size").

    g = lr / (1 - m) * (N / B - 1)

for lr `lr`, momentum `m`, `N` training examples and batch `B`. Decaying the lr
by a factor and growing the batch by the same factor lower g alike.
"""


def noise_scale(lr: float, momentum: float, train_examples: int, batch: int) -> float:
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return lr / (1.0 - momentum) * (train_examples / batch - 1.0)
