"""The standard error of the averaged |G|^2 and the lower noise scale built on it. The estimator is fed the two
squared norms of exact (|G|^2, tr(Sigma)) pairs, from E|g_B|^2 = |G|^2 + tr(Sigma) / B (McCandlish et al.
2018), so each update's |G|^2 estimate is known; the standard error is checked against the weighted variance
of those estimates under the bias-corrected EMA's weights, computed directly."""

import math

import numpy as np
import pytest

from bigbatch.trainer.step.noise_scale import GradientNoiseScale

SMALL, BIG = 4, 32


def feed(tracker: GradientNoiseScale, grad_sq: float, trace: float) -> None:
    tracker.update(grad_sq + trace / SMALL, SMALL, grad_sq + trace / BIG, BIG)


def test_the_standard_error_is_the_spread_of_the_estimates_under_the_ema_weights():
    rng = np.random.default_rng(0)
    decay, estimates = 0.9, 3.0 + rng.normal(size=40)
    tracker = GradientNoiseScale(decay)
    for i, x in enumerate(estimates):
        feed(tracker, x, 50.0)
        n = i + 1
        if n < 2:
            assert math.isnan(tracker.grad_sq_stderr)
            continue
        weights = decay ** np.arange(n - 1, -1, -1.0)  # update i weighs d^(n-i); normalised below
        weights /= weights.sum()
        mean = np.average(estimates[:n], weights=weights)
        variance = np.average((estimates[:n] - mean) ** 2, weights=weights)
        assert tracker.grad_sq_norm_est == pytest.approx(mean, rel=1e-9)
        assert tracker.grad_sq_stderr == pytest.approx(math.sqrt(variance * (weights ** 2).sum()), rel=1e-6)


def test_the_standard_error_matches_the_spread_of_the_average_over_independent_runs():
    """Var(sum w_i x_i) = s^2 sum w_i^2 for independent estimates of variance s^2; the weighted spread is biased
    low by a factor 1 - sum w_i^2 (~5% here), inside the tolerance."""
    rng = np.random.default_rng(1)
    averages, squared_errors = [], []
    for _ in range(1500):
        tracker = GradientNoiseScale(0.9)
        for x in 2.0 + 0.5 * rng.normal(size=50):
            feed(tracker, x, 50.0)
        averages.append(tracker.grad_sq_norm_est)
        squared_errors.append(tracker.grad_sq_stderr ** 2)
    assert np.mean(squared_errors) == pytest.approx(np.var(averages), rel=0.12)


def test_the_lower_noise_scale_stays_below_b_simple_and_finite_when_g_sq_is_not_resolved():
    rng = np.random.default_rng(2)
    tracker = GradientNoiseScale(0.95)
    for _ in range(200):
        feed(tracker, 0.5 + rng.normal(), 40.0 + 10.0 * rng.normal())
        if tracker.updates < 2:
            assert math.isnan(tracker.noise_scale_lower())
        elif tracker.b_simple > 0:  # a positive |G|^2 and tr(Sigma) average
            lower = tracker.noise_scale_lower()
            assert 0 < lower <= tracker.b_simple
            expected = tracker.grad_var_est / (tracker.grad_sq_norm_est + 2.0 * tracker.grad_sq_stderr)
            assert lower == pytest.approx(expected)
            assert tracker.noise_scale_lower(z=0.0) == pytest.approx(tracker.b_simple)
    unresolved = GradientNoiseScale(0.95)
    for x in [-1.0, 0.5, -0.8, 0.2, -0.4]:  # the average of |G|^2 ends below 0; B_simple has nothing
        feed(unresolved, x, 40.0)
    assert unresolved.grad_sq_norm_est < 0 and math.isnan(unresolved.b_simple)
    lower = unresolved.noise_scale_lower()
    assert math.isfinite(lower) and lower == pytest.approx(unresolved.grad_var_est / (2 * unresolved.grad_sq_stderr))


def test_the_lower_noise_scale_without_noise_or_without_a_bound():
    no_noise = GradientNoiseScale()
    for x in [1.0, 2.0, 3.0]:
        feed(no_noise, x, -8.0)
    assert no_noise.noise_scale_lower() == 0.0
    flat = GradientNoiseScale()
    for _ in range(3):
        feed(flat, 0.0, 64.0)  # every |G|^2 estimate exactly 0: no spread, no upper bound above 0
    assert flat.grad_sq_stderr == 0.0 and math.isnan(flat.noise_scale_lower())
    with pytest.raises(ValueError, match="z must be"):
        flat.noise_scale_lower(z=-1.0)


def test_the_state_round_trips_and_an_old_state_without_the_squares_loads():
    straight, first = GradientNoiseScale(0.9), GradientNoiseScale(0.9)
    pairs = [(1.0 + 0.3 * i * (-1) ** i, 30.0 + i) for i in range(10)]
    for pair in pairs:
        feed(straight, *pair)
    for pair in pairs[:5]:
        feed(first, *pair)
    resumed = GradientNoiseScale()
    resumed.load_state_dict(first.state_dict())
    for pair in pairs[5:]:
        feed(resumed, *pair)
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.grad_sq_stderr == straight.grad_sq_stderr
    old = {key: value for key, value in first.state_dict().items() if key != "grad_sq_sq"}
    from_old = GradientNoiseScale()
    from_old.load_state_dict(old)
    assert from_old.grad_sq_sq == 0.0 and from_old.updates == 5
    # no spread kept yet: the error reads 0 and the lower bound is B_simple until the squares refill
    assert from_old.grad_sq_stderr == 0.0
    assert from_old.noise_scale_lower() == pytest.approx(from_old.b_simple)
