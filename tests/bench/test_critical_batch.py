"""bench/critical_batch.py's fit and choice: S = S_min (1 + B_noise / B) recovered from exact points; per batch
the fewest steps over the lr grid, runs that never reached the target left out."""

import pytest

from bench.critical_batch import best_per_batch, fit


def test_the_fit_recovers_s_min_and_b_noise_from_the_model_s_own_curve():
    s_min, b_noise = 120.0, 700.0
    points = [(b, s_min * (1 + b_noise / b)) for b in (256, 1024, 2048, 8192)]
    assert fit(points) == pytest.approx((s_min, b_noise))


def test_the_fewest_steps_per_batch_over_the_grid_and_unreached_runs_ignored():
    cells = [{"batch": 256, "lr_mult": 1.0, "steps_to_target": 400}, {"batch": 256, "lr_mult": 0.5, "steps_to_target": 300},
             {"batch": 8192, "lr_mult": 1.0, "steps_to_target": None}, {"batch": 8192, "lr_mult": 0.5, "steps_to_target": 90}]
    best = best_per_batch(cells)
    assert {b: c["lr_mult"] for b, c in best.items()} == {256: 0.5, 8192: 0.5}
