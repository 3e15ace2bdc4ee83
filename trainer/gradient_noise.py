"""The gradient noise scale of McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): the batch
size beyond which a larger batch stops buying proportionally fewer steps, from gradient statistics that
data-parallel training already has.

A gradient averaged over B examples has E|g_B|^2 = |G|^2 + tr(Sigma) / B (G the true gradient, Sigma the
per-example covariance). Two batch sizes give two equations; their Appendix A.1 solves them for unbiased
estimates of |G|^2 and tr(Sigma). One estimate is noisy, so each is averaged over steps with an exponential
moving average (separately, as the paper does: the ratio of averages, not the average of ratios), and
B_simple = tr(Sigma) / |G|^2.

In bigbatch the small batch is one rank's micro-batch (its local gradient, before the all-reduce) and the
big batch is the global batch (the all-reduced gradient): no extra forward or backward pass. This module is
the arithmetic; the loop supplies the two squared norms.
"""

import math
from dataclasses import dataclass


def unbiased_estimates(small_sq_norm: float, small_batch: int, big_sq_norm: float,
                       big_batch: int) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from |g|^2 at two batch sizes (McCandlish et al. 2018, Appendix A.1)."""
    if not 0 < small_batch < big_batch:
        raise ValueError(f"gradient noise scale: needs 0 < small batch < big batch, got {small_batch} and "
                         f"{big_batch}")
    grad_sq = (big_batch * big_sq_norm - small_batch * small_sq_norm) / (big_batch - small_batch)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / small_batch - 1.0 / big_batch)
    return grad_sq, trace


@dataclass
class GradientNoiseScale:
    """Exponential moving averages of the two estimates (bias-corrected as Adam's moments, so the first
    steps are not pulled towards zero) and their ratio, B_simple. Its state goes into checkpoints."""
    decay: float = 0.95
    grad_sq: float = 0.0
    trace: float = 0.0
    updates: int = 0

    def update(self, small_sq_norm: float, small_batch: int, big_sq_norm: float, big_batch: int) -> None:
        grad_sq, trace = unbiased_estimates(small_sq_norm, small_batch, big_sq_norm, big_batch)
        self.grad_sq = self.decay * self.grad_sq + (1 - self.decay) * grad_sq
        self.trace = self.decay * self.trace + (1 - self.decay) * trace
        self.updates += 1

    def _corrected(self, value: float) -> float:
        return value / (1 - self.decay ** self.updates) if self.updates else math.nan

    @property
    def grad_sq_norm_est(self) -> float:
        return self._corrected(self.grad_sq)

    @property
    def grad_var_est(self) -> float:
        return self._corrected(self.trace)

    @property
    def b_simple(self) -> float:
        """tr(Sigma) / |G|^2; nan before any update or while the |G|^2 average is not positive."""
        grad_sq = self.grad_sq_norm_est
        return self.grad_var_est / grad_sq if grad_sq > 0 else math.nan

    def state_dict(self) -> dict:
        return {"decay": self.decay, "grad_sq": self.grad_sq, "trace": self.trace, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.grad_sq, self.trace, self.updates = (state["decay"], state["grad_sq"], state["trace"],
                                                              state["updates"])
