"""The AdaScale gain against its definition, r = E|g_G0|^2 / E|g_G|^2 (Johnson et al. 2020: a step at G = S G0
averages S reference-batch gradients and is worth r of them), measured by Monte Carlo on a finite population of
per-example gradients; and Pollux's statistical efficiency written from its paper, (B + G0) / (B + G)."""

import math

import pytest
import torch

from bigbatch.optim import adascale_gain, statistical_efficiency


@pytest.fixture(scope="module")
def population() -> torch.Tensor:
    """2,000 per-example gradients in 16 dimensions: a mean of norm 1 plus noise, so tr(Sigma) / |G|^2 ~ 50."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(16, generator=gen, dtype=torch.float64)
    return mean / mean.norm() + 1.8 * torch.randn(2000, 16, generator=gen, dtype=torch.float64)


def mean_sq_norm(population: torch.Tensor, batch: int, draws: int, gen: torch.Generator) -> float:
    """E|g_batch|^2 by Monte Carlo: batches drawn with replacement, in chunks to bound memory."""
    total = 0.0
    for _ in range(draws // 1000):
        idx = torch.randint(len(population), (1000, batch), generator=gen)
        total += population[idx].mean(1).square().sum().item()
    return total / draws


@pytest.mark.parametrize(("reference", "batch"), [(8, 128), (32, 4)])
def test_the_gain_is_the_ratio_of_expected_squared_gradient_norms(population, reference, batch):
    mean = population.mean(0)
    grad_sq = (mean @ mean).item()
    trace = (population - mean).square().sum(1).mean().item()  # the population's covariance, 1/N
    gen = torch.Generator().manual_seed(1)
    measured = mean_sq_norm(population, reference, 20_000, gen) / mean_sq_norm(population, batch, 20_000, gen)
    # E|g_B|^2 = |G|^2 + tr(Sigma) / B for draws with replacement, so the ratio is exact in expectation; 20,000
    # draws of each leave about 0.3% (one standard deviation) of Monte Carlo error in it
    assert adascale_gain(trace / grad_sq, batch, reference) == pytest.approx(measured, rel=0.02)


def test_the_gain_lies_between_1_and_s_and_has_the_limits_of_pure_noise_and_no_noise():
    for batch, reference in [(1024, 256), (256, 256), (100, 800)]:
        s = batch / reference
        low, high = min(1.0, s), max(1.0, s)
        for b in [1e-3, 1.0, 37.0, 256.0, 1e4, 1e9]:
            assert low - 1e-12 <= adascale_gain(b, batch, reference) <= high + 1e-12
        assert adascale_gain(math.inf, batch, reference) == s
        assert adascale_gain(1e12, batch, reference) == pytest.approx(s)
        for unresolved in [0.0, -5.0, math.nan]:
            assert adascale_gain(unresolved, batch, reference) == 1.0
    # S = 4, B = G0: (B / G0 + 1) / (B / G + 1) = 2 / 1.25
    assert adascale_gain(256.0, 1024, 256) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="positive"):
        adascale_gain(10.0, 0, 256)


def test_statistical_efficiency_is_pollux_formula():
    for b in [1.0, 100.0, 3000.0, 1e6]:
        for batch, reference in [(4096, 256), (128, 512)]:
            assert statistical_efficiency(b, batch, reference) == pytest.approx((b + reference) / (b + batch))
    assert statistical_efficiency(math.inf, 4096, 256) == 1.0  # all noise: every example as useful as at G0
    assert statistical_efficiency(math.nan, 4096, 256) == pytest.approx(256 / 4096)  # no gain assumed
