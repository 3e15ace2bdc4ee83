"""LR scaling and schedules, checked against the formulas of Goyal et al. 2017 (and MLPerf's poly) written out here."""

import math

import pytest

from bigbatch.optim import LRSchedule, noise_scale, scale_lr


def test_scaling_rules():
    # Goyal et al. section 2.1: batch k*n -> lr k*eta. ResNet-50 at 8k: 0.1 * 8192/256 = 3.2
    assert scale_lr(0.1, 8192, 256, "linear") == pytest.approx(3.2)
    assert scale_lr(0.1, 8192, 256, "sqrt") == pytest.approx(0.1 * (8192 / 256) ** 0.5)
    assert scale_lr(0.1, 8192, 256, "none") == 0.1
    with pytest.raises(ValueError):
        scale_lr(0.1, 8192, 256, "cubic")


def test_linear_warmup_values_at_start_middle_and_end():
    eta, k_eta, warmup = 0.1, 3.2, 10  # start at the base lr, reach k*eta (Goyal section 2.2)
    s = LRSchedule(peak_lr=k_eta, total_steps=100, warmup_steps=warmup, warmup_start_lr=eta, decay="constant")
    assert s(0) == eta
    assert s(5) == pytest.approx(eta + (k_eta - eta) * 5 / 10)
    assert s(9) == pytest.approx(eta + (k_eta - eta) * 9 / 10)
    assert s(10) == s(50) == k_eta


def test_constant_warmup_holds_then_jumps():
    s = LRSchedule(peak_lr=3.2, total_steps=100, warmup_steps=10, warmup_start_lr=0.1, warmup="constant",
                   decay="constant")
    assert [s(t) for t in (0, 9, 10)] == [0.1, 0.1, 3.2]


@pytest.mark.parametrize("decay,power", [("cosine", None), ("poly", 2.0), ("linear", 1.0)])
def test_decays_after_warmup(decay, power):
    peak, end, warmup, total = 1.0, 0.01, 5, 105
    s = LRSchedule(peak_lr=peak, total_steps=total, warmup_steps=warmup, end_lr=end, decay=decay, power=2.0)
    for t in (5, 30, 55, 104, 105, 200):
        p = min(1.0, (t - warmup) / (total - warmup))
        if decay == "cosine":
            expected = end + (peak - end) * (1 + math.cos(math.pi * p)) / 2
        else:
            expected = end + (peak - end) * (1 - p) ** power
        assert s(t) == pytest.approx(expected)


def test_multistep_multiplies_by_factor_at_milestones():
    s = LRSchedule(peak_lr=3.2, total_steps=90, warmup_steps=5, warmup_start_lr=0.1, decay="multistep",
                   milestones=(30, 60, 80), factor=0.1)
    assert s(29) == 3.2 and s(30) == pytest.approx(0.32) and s(60) == pytest.approx(0.032)
    assert s(85) == pytest.approx(0.0032)


def test_bad_schedule_names():
    with pytest.raises(ValueError, match="unknown decay"):
        LRSchedule(peak_lr=1, total_steps=1, decay="exp")
    with pytest.raises(ValueError, match="unknown warmup"):
        LRSchedule(peak_lr=1, total_steps=1, warmup="cubic")


def test_noise_scale_formula():
    # Smith et al. 2018: g = lr / (1 - m) * (N / B - 1)
    assert noise_scale(0.1, 0.9, 50000, 128) == pytest.approx(0.1 / 0.1 * (50000 / 128 - 1))
