"""The AdaScale gain (Johnson et al. 2020, "AdaScale SGD"; fairscale's optim/adascale.py) and Pollux's statistical
efficiency (Qiao et al. 2021, AdaptDL), from the gradient noise scale B = tr(Sigma) / |G|^2.

A step at batch G = S x G0 (G0 the reference batch the lr was tuned at) averages S reference-batch gradients, so
E|g_G|^2 = |G|^2 + tr(Sigma) / G. AdaScale's gain is how many reference steps that one step is worth:

    r = E|g_G0|^2 / E|g_G|^2 = (sigma^2 + mu^2) / (sigma^2 / S + mu^2),  sigma^2 = tr(Sigma) / G0, mu^2 = |G|^2
      = (B / G0 + 1) / (B / G + 1)

It lies between 1 (no noise: averaging more examples buys nothing) and S (all noise: every example counts as if
it were in its own reference step); for S < 1 it lies in [S, 1]. Pollux's efficiency is the same progress per
example, relative to the reference batch: EFF = r G0 / G = (B + G0) / (B + G).
"""

import math


def adascale_gain(noise_scale: float, batch: float, reference_batch: float) -> float:
    """Reference-batch steps one step at `batch` is worth. B = +inf gives S = batch / reference_batch.

    B <= 0 or nan (not measured yet, or a |G|^2 or tr(Sigma) estimate still at or below zero) gives 1.0: with
    no resolvable noise the safe assumption is that a bigger batch buys no extra progress per step, so nothing
    grows the batch or the lr on a number that is not there (B = 0 is also the formula's own limit)."""
    if batch <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got batch={batch} reference={reference_batch}")
    if math.isnan(noise_scale) or noise_scale <= 0:
        return 1.0
    if math.isinf(noise_scale):
        return batch / reference_batch
    return (noise_scale / reference_batch + 1.0) / (noise_scale / batch + 1.0)


def statistical_efficiency(noise_scale: float, batch: float, reference_batch: float) -> float:
    """Progress per example at `batch`, relative to the reference batch (Pollux's EFF, (B + G0) / (B + G))."""
    return adascale_gain(noise_scale, batch, reference_batch) * reference_batch / batch
