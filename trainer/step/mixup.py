"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of each training micro-batch (`train.mixup`).

This follows timm's Mixup in its "batch" mode (one lambda, and for CutMix one
box, per draw; `prob` of mixing at all; `switch_prob` of CutMix when both are
on; the box clipped to the image and lambda corrected to the pasted area; soft
targets with label smoothing through timm's `one_hot`, and timm's
SoftTargetCrossEntropy as the loss) with two changes that bigbatch's exactness
needs, which is why the draw and the pairing are written here:

- timm draws from numpy's global generator, which differs between ranks and
  depends on what ran before. Here each optimizer step draws once from (seed,
  step): every rank and micro-step of the step uses the same lambda and box, and
  a run resumed at any step, with any world size, draws what an uninterrupted
  run draws.
- timm pairs each example with the batch reversed (`x.flip(0)`), so the pairs
  depend on how the step's batch is split into micro-batches. Here the example
  at position i of the step's global batch is mixed with its neighbour i XOR 1:
  a micro-batch starts at an even position whenever its size is even, so with
  an even micro-batch the pairs, and so the mixed images, are the same at every
  world size. (An odd micro-batch's last example is left unmixed.)
"""

from dataclasses import dataclass

import numpy as np
import torch

from bigbatch.trainer.recipe.schema import MixupConfig
from bigbatch.trainer.step.hooks import Hook

STREAM = 0x6D6978  # "mix": keeps these draws apart from the other (seed, step) streams


@dataclass(frozen=True)
class Mix:
    """One step's draw: lam = 1 means no mixing; `box` = (y1, y2, x1, x2) for CutMix, None for Mixup."""

    lam: float
    box: tuple[int, int, int, int] | None = None


def draw(cfg: MixupConfig, seed: int, step: int, height: int, width: int) -> Mix:
    rng = np.random.default_rng([seed, step, STREAM])
    if rng.random() >= cfg.prob:
        return Mix(1.0)
    if cfg.alpha > 0 and cfg.cutmix_alpha > 0:
        cutmix = rng.random() < cfg.switch_prob
    else:
        cutmix = cfg.cutmix_alpha > 0
    lam = float(rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha) if cutmix else rng.beta(cfg.alpha, cfg.alpha))
    if not cutmix:
        return Mix(lam)
    # CutMix's box: side ratio sqrt(1 - lam), centre uniform over the image, clipped to it (Yun et al. eq. 2)
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y1, y2 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x1, x2 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return Mix(1 - (y2 - y1) * (x2 - x1) / (height * width), (y1, y2, x1, x2))


def partners(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Index of each example's partner in its micro-batch: its neighbour (i XOR 1); an odd last one, itself."""
    return (torch.arange(batch, device=device) ^ 1).clamp_(max=batch - 1)  # no boolean mask: no sync on a GPU


def mix_batch(x: torch.Tensor, y: torch.Tensor, mix: Mix, num_classes: int,
              smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixed images and their soft targets lam * t(y) + (1 - lam) * t(y_partner), t smoothed one-hot."""
    from timm.data.mixup import one_hot

    off = smoothing / num_classes
    soft = one_hot(y, num_classes, on_value=1 - smoothing + off, off_value=off)
    if mix.lam == 1.0:
        return x, soft
    other = partners(len(y), x.device)
    if mix.box is None:
        x = x * mix.lam + x[other] * (1 - mix.lam)
    else:
        y1, y2, x1, x2 = mix.box
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[other][:, :, y1:y2, x1:x2]
    return x, soft * mix.lam + soft[other] * (1 - mix.lam)


class MixBatches(Hook):
    """Before each step of an epoch below `off_epoch`: the soft-target criterion, and every micro-batch mixed
    with the step's one draw (made at the first micro-batch, which gives the image size)."""

    def __init__(self, cfg: MixupConfig, seed: int, num_classes: int, smoothing: float, soft_criterion):
        self.cfg, self.seed, self.num_classes, self.smoothing = cfg, seed, num_classes, smoothing
        self.soft_criterion = soft_criterion
        self.step, self.mix = 0, None

    def before_step(self, ctx) -> None:
        if self.cfg.off_epoch and ctx.epoch >= self.cfg.off_epoch:
            return
        self.step, self.mix = ctx.step, None
        ctx.criterion, ctx.transform = self.soft_criterion, self.mixed

    def mixed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.mix = self.mix or draw(self.cfg, self.seed, self.step, x.shape[-2], x.shape[-1])
        return mix_batch(x, y, self.mix, self.num_classes, self.smoothing)
