"""LR scaling and warmup, checked against the formulas of Goyal et al. 2017 written out here."""

import math

import pytest

from optim import scale_lr, warmup_then_decay


def test_linear_scaling_rule():
    # Goyal et al. section 2.1: batch k*n -> lr k*eta. ResNet-50 at 8k: 0.1 * 8192/256 = 3.2
    assert scale_lr(0.1, 8192, 256, "linear") == pytest.approx(3.2)
    assert scale_lr(0.1, 8192, 256, "sqrt") == pytest.approx(0.1 * (8192 / 256) ** 0.5)
    assert scale_lr(0.1, 8192, 256, "none") == 0.1
    with pytest.raises(ValueError):
        scale_lr(0.1, 8192, 256, "cubic")


def test_gradual_warmup_ramps_linearly_per_iteration():
    eta, k_eta, warmup = 0.1, 3.2, 10
    lrs = [warmup_then_decay(t, peak_lr=k_eta, total_steps=100, warmup_steps=warmup, warmup_start_lr=eta,
                             schedule="constant") for t in range(12)]
    for t in range(warmup):
        assert lrs[t] == pytest.approx(eta + (k_eta - eta) * t / warmup)
    assert lrs[10] == lrs[11] == k_eta


def test_cosine_after_warmup():
    peak, end, warmup, total = 1.0, 0.01, 5, 105
    for t in (5, 30, 55, 104, 105, 200):
        p = min(1.0, (t - warmup) / (total - warmup))
        expected = end + (peak - end) * (1 + math.cos(math.pi * p)) / 2
        assert warmup_then_decay(t, peak_lr=peak, total_steps=total, warmup_steps=warmup, end_lr=end) == \
            pytest.approx(expected)
