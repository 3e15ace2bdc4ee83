"""bench/adaptive.py's accounting: examples and modelled time summed from a run's own per-step batches, the
declared cluster model the same for the policy and the score, and the issue's three conditions judged on the
means over the seeds."""

import pytest

from bench.adaptive import adaptive_overrides, cluster_model, step_s, verdicts
from bench.critical_batch import batch_at, sum_over_steps


def test_examples_and_time_are_summed_over_the_batches_each_step_took():
    changes = [(0, 256), (50, 2048), (100, 4096)]  # steps 0-49 at 256, 50-99 at 2048, then 4096
    assert [batch_at(changes, s) for s in (0, 49, 50, 99, 100)] == [256, 256, 2048, 2048, 4096]
    assert sum_over_steps(changes, 40) == 40 * 256
    assert sum_over_steps(changes, 120) == 50 * 256 + 50 * 2048 + 20 * 4096
    assert sum_over_steps([(0, 1024)], 7, lambda g: g / 1024 + 1) == 14


def test_the_policy_is_given_the_model_that_scores():
    model = cluster_model()
    assert model["fixed_s"] == pytest.approx(model["allreduce_s"] + model["step_overhead_s"])
    assert step_s(model, 8192) - step_s(model, 256) == pytest.approx(model["per_example_s"] * (8192 - 256) / 64)
    keys = adaptive_overrides(model)  # asserts the policy's step time = step_s at every candidate batch
    assert "train.batch_policy=adaptive" in keys


def runs(seconds, examples, finals):
    return {seed: {"steps": 1, "seconds": t, "examples": e, "final": f}
            for seed, (t, e, f) in enumerate(zip(seconds, examples, finals, strict=True))}


def test_the_goal_against_the_best_fixed_batch_in_hindsight():
    cells = {"256": runs((0.6, 0.7), (90e3, 100e3), (0.90, 0.91)),
             "2048": runs((0.20, 0.22), (220e3, 240e3), (0.89, 0.90)),  # the best fixed: least time
             "adaptive": runs((0.19, 0.20), (250e3, 270e3), (0.885, 0.895))}
    lines = verdicts(cells)
    assert "best fixed (2048)" in lines[0] and lines[0].endswith("met (less than every fixed batch).")
    assert lines[1].endswith("met.")  # 1.13x the examples
    assert lines[2].endswith("met.")  # 0.5 points behind, within the 1-point seed range
    cells["adaptive"] = runs((0.25, 0.25), (400e3, 400e3), (0.85, 0.85))
    lines = verdicts(cells)
    assert "missed by 19 %" in lines[0] and "missed by" in lines[1] and "missed by" in lines[2]
