"""Candidate batches and the choice among them, on a fixed step-time model whose goodputs are worked out by hand:
step_s(G) = 0.2 + 0.001 G / 8 on 8 workers, B = 1000, G0 = 256, so goodput(G) = 256 (1000/256 + 1) / (1000/G + 1)
/ step_s(G) = 1256 G / (1000 + G) / step_s(G)."""

import math

import pytest

from bigbatch.trainer.adaptive.choice import candidate_batches, choose_batch
from bigbatch.trainer.adaptive.goodput import StepTimeModel, goodput

MODEL = StepTimeModel(0.2, 0.001, "assumed")
BY_HAND = {  # 1256 G / (1000 + G) / (0.2 + G / 8000)
    256: 256.0 / 0.232,  # 1,103.4
    512: 1256 * 512 / 1512 / 0.264,  # 1,611.0
    1024: 1256 * 1024 / 2024 / 0.328,  # 1,937.3: the best
    2048: 1256 * 2048 / 3048 / 0.456,  # 1,850.7
    4096: 1256 * 4096 / 5096 / 0.712,  # 1,417.9
}


def goodput_of(batch: int) -> float:
    return goodput(batch, 8, 1000.0, 256, MODEL)


def test_candidates_double_from_the_smallest_and_end_at_the_largest():
    assert candidate_batches(256, 4096) == [256, 512, 1024, 2048, 4096]
    assert candidate_batches(256, 3000) == [256, 512, 1024, 2048, 3000]
    assert candidate_batches(100, 1000, multiple=64) == [64, 192, 384, 768, 960]
    assert candidate_batches(10, 40, multiple=32) == [32]  # never below one multiple
    assert candidate_batches(512, 512) == [512]
    with pytest.raises(ValueError):
        candidate_batches(0, 512)


def test_the_choice_is_the_hand_computed_best():
    choice = choose_batch(256, candidate_batches(256, 4096), goodput_of, 1.05)
    assert choice.batch == 1024
    assert choice.predicted == pytest.approx(BY_HAND, rel=1e-9)
    assert choice.reason == "goodput 1.76x: 256 -> 1024 (predicted 1,937 vs 1,103 examples/s)"


def test_the_margin_keeps_below_it_and_switches_above_it():
    kept = choose_batch(512, [256, 1024, 2048], goodput_of, 1.25)  # 1,937.3 / 1,611.0 = 1.2026
    assert kept.batch == 512
    assert kept.reason == "kept 512: the best, 1024, predicts 1.20x, below the 1.25x margin"
    at_margin = {512: 2.0, 1024: 2.5}
    assert choose_batch(512, [1024], at_margin.__getitem__, 1.25).batch == 1024  # exactly at the margin
    assert choose_batch(512, [256, 1024, 2048], goodput_of, 1.15).batch == 1024
    best = choose_batch(1024, [256, 512, 2048], goodput_of, 1.05)
    assert best.batch == 1024 and best.reason.startswith("kept 1024: it predicts the highest")


def test_ties_go_to_the_smaller_batch_and_the_current_batch_need_not_be_a_candidate():
    flat = {256: 1.0, 300: 2.0, 512: 3.0, 1024: 3.0}
    choice = choose_batch(300, [256, 512, 1024], flat.__getitem__, 1.05)
    assert sorted(choice.predicted) == [256, 300, 512, 1024]
    assert choice.batch == 512
    best_now = {256: 1.0, 300: 5.0, 512: 3.0}
    assert choose_batch(300, [256, 512], best_now.__getitem__, 1.05).batch == 300
    with_nan = {256: math.nan, 512: 2.0}
    assert choose_batch(512, [256], with_nan.__getitem__, 1.0).batch == 512
