"""The step-time model fitted from log windows, and goodput as Pollux defines it: throughput G / step time times
the statistical efficiency (B + G0) / (B + G)."""

import math

import numpy as np
import pytest

from bigbatch.trainer.adaptive.goodput import StepReading, StepTimeModel, fit_step_times, goodput

ALPHA, BETA, WORLD = 0.15, 0.002, 8  # s per step, s per example on one worker


def exact(batch: int, world: int = WORLD) -> float:
    return ALPHA + BETA * batch / world


def test_three_batches_give_the_line_back_through_outliers_and_other_world_sizes():
    readings = []
    for batch in (256, 512, 1024):
        readings += [StepReading(WORLD, batch, exact(batch)) for _ in range(3)]
        readings += [StepReading(WORLD, batch, exact(batch) + 9.0),  # a checkpoint in the window
                     StepReading(WORLD, batch, exact(batch) * 0.3)]  # a clock hiccup
    readings += [StepReading(4, 512, 50.0), StepReading(16, 256, 0.01)]  # other world sizes: not this line
    model = fit_step_times(readings, WORLD)
    assert model.source == "fitted"
    assert model.fixed_s == pytest.approx(ALPHA) and model.per_example_s == pytest.approx(BETA)
    assert model.step_s(2048, WORLD) == pytest.approx(ALPHA + BETA * 256)


def test_one_point_per_batch_however_many_windows_each_batch_had():
    medians = {128: 0.40, 256: 0.50, 512: 1.00}  # not on a line
    readings = [StepReading(WORLD, 128, 0.40)] * 9 + [StepReading(WORLD, 256, 0.50), StepReading(WORLD, 512, 1.00)]
    slope, intercept = np.polyfit([b / WORLD for b in medians], list(medians.values()), 1)
    model = fit_step_times(readings, WORLD)
    assert (model.fixed_s, model.per_example_s) == (pytest.approx(intercept), pytest.approx(slope))


def test_a_negative_intercept_puts_the_line_through_the_origin():
    points = {8: 0.1, 16: 0.5, 32: 1.4}  # a free fit crosses x = 0 below zero
    readings = [StepReading(1, b, s) for b, s in points.items()]
    model = fit_step_times(readings, 1)
    xs, ys = np.array(list(points), float), np.array(list(points.values()))
    assert model.fixed_s == 0.0 and model.per_example_s == pytest.approx((xs @ ys) / (xs @ xs))


def test_one_batch_takes_the_collective_time_as_the_fixed_part():
    readings = [StepReading(WORLD, 512, s, c) for s, c in [(0.50, 0.10), (0.52, 0.12), (0.49, 0.09)]]
    model = fit_step_times(readings, WORLD)
    assert model.source == "one batch: fixed part = measured collective time"
    assert model.fixed_s == pytest.approx(0.10) and model.per_example_s == pytest.approx(0.40 / 64)
    overlapped = fit_step_times([StepReading(WORLD, 512, 0.3, 0.5)], WORLD)  # all-reduce longer than the step
    assert (overlapped.fixed_s, overlapped.per_example_s) == (0.3, 0.0)


def test_a_line_that_falls_with_the_batch_uses_the_batch_seen_most():
    readings = ([StepReading(WORLD, 256, 0.6, 0.2)] * 2 + [StepReading(WORLD, 512, 0.5, 0.1)] * 3)
    model = fit_step_times(readings, WORLD)
    assert model.source.startswith("one batch")
    assert model.fixed_s == pytest.approx(0.1) and model.per_example_s == pytest.approx(0.4 / 64)


def test_no_readings_at_this_world_size_give_no_model():
    assert fit_step_times([], WORLD) is None
    assert fit_step_times([StepReading(4, 256, 0.3)], WORLD) is None


def test_goodput_is_throughput_times_pollux_efficiency():
    model = StepTimeModel(ALPHA, BETA, "assumed")
    for noise in (50.0, 700.0, 5e4):
        for batch in (128, 256, 1024, 8192):
            throughput = batch / (ALPHA + BETA * batch / WORLD)
            efficiency = (noise + 256) / (noise + batch)
            assert goodput(batch, WORLD, noise, 256, model) == pytest.approx(throughput * efficiency)
    # nothing measured: no gain from a bigger batch, so goodput is G0 / step time
    assert goodput(1024, WORLD, math.nan, 256, model) == pytest.approx(256 / exact(1024))
