"""The gradient noise scale against its definition: softmax regression on the bundled digits, where every
example's gradient is exact, so the true B_simple = tr(Sigma) / |G|^2 comes from the per-example gradients'
mean and covariance. Simulated data-parallel steps (8 ranks x 16 examples, drawn i.i.d.) feed the estimator
the two squared norms the loop has: each rank's micro-batch gradient and the global average."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bigbatch.trainer.step.noise_scale import GradientNoiseScale

RANKS, PER_RANK = 8, 16


@pytest.fixture(scope="module")
def per_example_gradients() -> torch.Tensor:
    """Row i: the gradient of example i's cross-entropy w.r.t. (W, b) at weights after a few descent steps."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float64)
    y = torch.tensor(y)
    w = torch.zeros(64, 10, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    for _ in range(30):  # off the starting point, where the mean gradient dwarfs the noise
        loss = torch.nn.functional.cross_entropy(x @ w + b, y)
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w -= 0.5 * gw
            b -= 0.5 * gb
    with torch.no_grad():
        residual = torch.softmax(x @ w + b, dim=1) - torch.nn.functional.one_hot(y, 10)
        return torch.cat([(x[:, :, None] * residual[:, None, :]).flatten(1), residual], dim=1)


def test_b_simple_from_a_rank_and_the_global_batch_matches_the_per_example_covariance(per_example_gradients):
    g = per_example_gradients
    mean = g.mean(0)
    true_b_simple = ((g - mean) ** 2).sum(1).mean().item() / (mean @ mean).item()
    tracker = GradientNoiseScale(decay=0.999)
    rng = np.random.default_rng(0)
    for _ in range(4000):
        batch = g[torch.from_numpy(rng.integers(len(g), size=RANKS * PER_RANK))]
        local = batch.view(RANKS, PER_RANK, -1).mean(1)  # each rank's micro-batch gradient
        small = (local ** 2).sum(1).mean().item()  # averaged over ranks, as one all-reduced scalar
        big = (batch.mean(0) ** 2).sum().item()
        tracker.update(small, PER_RANK, big, RANKS * PER_RANK)
    assert 10 < true_b_simple < 10_000  # a regime where the estimate is informative
    assert tracker.b_simple == pytest.approx(true_b_simple, rel=0.10)
    assert tracker.grad_sq_norm_est == pytest.approx((mean @ mean).item(), rel=0.10)


def test_nothing_before_the_first_update_a_resumed_tracker_continues_exactly_and_bad_sizes_fail():
    assert math.isnan(GradientNoiseScale().b_simple)
    straight, first = GradientNoiseScale(), GradientNoiseScale()
    steps = [(2.0 + i, 4, 1.0 + i / 2, 32) for i in range(6)]
    for s in steps:
        straight.update(*s)
    for s in steps[:3]:
        first.update(*s)
    resumed = GradientNoiseScale()
    resumed.load_state_dict(first.state_dict())
    for s in steps[3:]:
        resumed.update(*s)
    assert resumed.b_simple == straight.b_simple
    with pytest.raises(ValueError, match="small batch < big batch"):
        straight.update(1.0, 32, 1.0, 32)
