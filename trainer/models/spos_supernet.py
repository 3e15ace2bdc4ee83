"""The Single-Path One-Shot supernet (Guo et al. 2019, section 3): every choice block of the SPOS space at
every position, one path trained per step.

- Each of the 20 positions holds the four choice blocks of `spos.py`; the stem, the 1x1 conv to 1024
  channels and the classifier are shared. BatchNorm has no affine parameters, as in the authors' supernet
  (megvii-model/SinglePathOneShot): a block's statistics belong to the path it is trained on, and are
  recalibrated before a candidate is scored.
- The path of a step is drawn from (seed, step) alone (`draw_path`), so every rank of any world size, and a
  resumed run, trains the same path: the authors' uniform sampling restricted to a multiply-add range, in
  their form: pick one of `macs_bins` equal bins of `macs_range_m` uniformly, then draw uniform paths until
  one falls in that bin (500 tries, then another bin). Their range was 290-360M FLOPs in 7 bins; for the
  small-image stem the sizes differ, so the range is the recipe's (`model.kwargs.macs_range_m`; none =
  every path).
- Multiply-adds of a path are a sum over a table: the stem, head and classifier, plus each position's
  chosen block counted at that position's input shape, by the catalogue's counter (`complexity.py`), so a
  path costs a lookup, not a forward pass.
- Parameters of blocks off the step's path must get no update: the authors set their exactly-zero gradients
  to None, so momentum and weight decay skip them. Here the path is known, so `drop_off_path_grads` does that
  after the gradient all-reduce. For DDP every parameter must take part in the backward pass or it waits
  for gradients that never come; `find_unused_parameters=True` would walk the autograd graph every step to
  find them. Instead the forward adds 0 x (sum of the off-path parameters) to the logits: their gradients
  are exact zeros, DDP all-reduces them in its buckets as it would with find_unused_parameters (the same
  traffic), and no graph walk is needed. Horovod all-reduces every parameter's gradient anyway.
"""

import functools

import numpy as np
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.complexity import count_macs_of, count_params
from bigbatch.trainer.models.registry import register
from bigbatch.trainer.models.spos import (
    CHOICE_NAMES,
    HEAD_CHANNELS,
    SMALL_INPUT_MAX,
    STAGE_CHANNELS,
    STAGE_REPEATS,
    STEM_CHANNELS,
    ChoiceBlock,
    SPOSNet,
    block_layout,
    check_stages,
    conv_bn_layers,
    parse_choices,
)

SAMPLE_TRIES = 500  # the authors' timeout: uniform draws per bin before another bin is picked
BIN_REDRAWS = 100  # bins tried before a range that holds almost no path is reported


class SPOSSupernet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, stage_channels: tuple[int, ...] = STAGE_CHANNELS,
                 stage_repeats: tuple[int, ...] = STAGE_REPEATS, small_input: bool = False, drop_rate: float = 0.1,
                 macs_range: tuple[int, int] | None = None, macs_bins: int = 7):
        super().__init__()
        self.config = dict(num_classes=num_classes, in_chans=in_chans, stage_channels=stage_channels,
                           stage_repeats=stage_repeats, small_input=small_input, drop_rate=drop_rate)
        self.macs_range, self.macs_bins = macs_range, macs_bins
        self.stem = nn.Sequential(*conv_bn_layers(in_chans, STEM_CHANNELS, 3, 1 if small_input else 2, affine=False))
        self.blocks = nn.ModuleList(
            nn.ModuleList(ChoiceBlock(in_ch, out_ch, stride, choice, affine=False) for choice in range(len(CHOICE_NAMES)))
            for in_ch, out_ch, stride in block_layout(stage_channels, stage_repeats))
        self.head = nn.Sequential(*conv_bn_layers(stage_channels[-1], HEAD_CHANNELS, affine=False))
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self.set_path([0] * len(self.blocks))  # until the first set_path: the all-3x3 network

    # ---- the path ----------------------------------------------------------------------------------
    def set_path(self, path: list[int]) -> None:
        """Also lists the parameters off the path once, not at every forward pass and gradient drop."""
        self.path = parse_choices(list(path), len(self.blocks), "path")
        self._off_path = [p for position, chosen in zip(self.blocks, self.path, strict=True)
                          for choice, block in enumerate(position) if choice != chosen for p in block.parameters()]

    def off_path_parameters(self) -> list[nn.Parameter]:
        return self._off_path

    def drop_off_path_grads(self) -> None:
        """After the all-reduce: no gradient (so no momentum, no weight decay) for blocks off the path."""
        for p in self.off_path_parameters():
            p.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for position, chosen in zip(self.blocks, self.path, strict=True):
            x = position[chosen](x)
        logits = self.tail(x)
        if self.training and torch.is_grad_enabled():  # exact-zero gradients for the blocks off the path
            off = self.off_path_parameters()
            if off:
                logits = logits + 0.0 * torch.stack([p.sum() for p in off]).sum()
        return logits

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the choice blocks: head convolution, pooling, classifier."""
        x = self.head(x)
        return self.classifier(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))

    # ---- multiply-adds ---------------------------------------------------------------------------
    def macs_table(self, image_size: int) -> tuple[int, np.ndarray]:
        """(shared multiply-adds, [position, choice] multiply-adds) of one image at `image_size`."""
        return _macs_table(tuple(sorted(self.config.items())), image_size)

    def path_macs(self, path: list[int], image_size: int) -> int:
        shared, table = self.macs_table(image_size)
        return int(shared + table[np.arange(len(path)), np.asarray(path)].sum())

    def path_params(self, path: list[int]) -> int:
        """Parameters of the stand-alone network of `path` (catalogue `spos`: BatchNorm with affine parameters)."""
        shared, table = _params_table(tuple(sorted(self.config.items())))
        return int(shared + table[np.arange(len(path)), np.asarray(path)].sum())

    def draw_path(self, seed: int, step: int, image_size: int) -> list[int]:
        """The path of optimizer step `step`: a function of (seed, step) only (the same on every rank)."""
        rng = np.random.default_rng([seed, step, 0x5905])
        positions, choices = len(self.blocks), len(CHOICE_NAMES)
        if self.macs_range is None:
            return rng.integers(choices, size=positions).tolist()
        shared, table = self.macs_table(image_size)
        low, high = self.macs_range
        edges = np.linspace(low, high, self.macs_bins + 1)
        for _ in range(BIN_REDRAWS):
            b = rng.integers(self.macs_bins)
            paths = rng.integers(choices, size=(SAMPLE_TRIES, positions))
            macs = shared + table[np.arange(positions), paths].sum(axis=1)
            hits = np.flatnonzero((macs >= edges[b]) & (macs <= edges[b + 1]))
            if hits.size:
                return paths[hits[0]].tolist()
        least = shared + table.min(axis=1).sum()
        most = shared + table.max(axis=1).sum()
        raise RecipeError(f"model.kwargs.macs_range_m: {low / 1e6:g}-{high / 1e6:g}M holds almost no path of this "
                          f"space at image size {image_size} (paths span {least / 1e6:.2f}-{most / 1e6:.2f}M)")


@functools.cache
def _macs_table(config: tuple, image_size: int) -> tuple[int, np.ndarray]:
    """Counted once per (architecture, image size) on a meta-device twin: no arithmetic is done."""
    kwargs = dict(config)
    with torch.device("meta"):
        twin = SPOSSupernet(**kwargs).eval()
    shapes = []
    hooks = [position[0].register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
             for position in twin.blocks]
    total = count_macs_of(twin, (1, kwargs["in_chans"], image_size, image_size))  # the all-choice-0 path
    for hook in hooks:
        hook.remove()
    table = np.array([[count_macs_of(block, shape) for block in position]
                      for position, shape in zip(twin.blocks, shapes, strict=True)], dtype=np.int64)
    return int(total - table[:, 0].sum()), table


@functools.cache
def _params_table(config: tuple) -> tuple[int, np.ndarray]:
    kwargs = dict(config)
    layout = block_layout(kwargs["stage_channels"], kwargs["stage_repeats"])
    with torch.device("meta"):
        table = np.array([[count_params(ChoiceBlock(in_ch, out_ch, stride, choice)) for choice in range(len(CHOICE_NAMES))]
                          for in_ch, out_ch, stride in layout], dtype=np.int64)
        total = count_params(SPOSNet([0] * len(layout), **kwargs))
    return int(total - table[:, 0].sum()), table


def _macs_range(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    key = "model.kwargs.macs_range_m"
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
            or value[0] >= value[1]):
        raise RecipeError(f"{key}: expected [low, high] multiply-adds in millions with low < high (the authors: "
                          f"[290, 360]), got {value!r}")
    return round(value[0] * 1e6), round(value[1] * 1e6)


@register("spos_supernet", "nas", "SPOS supernet (Guo et al. 2019): all 4 choices at each of 20 blocks, one path "
          "per step from (seed, step); kwargs: macs_range_m [low, high], macs_bins")
def spos_supernet(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                  stage_channels: list[int] | None = None, stage_repeats: list[int] | None = None,
                  small_input: bool | None = None, drop_rate: float = 0.1, macs_range_m: list[float] | None = None,
                  macs_bins: int = 7) -> SPOSSupernet:
    """The supernet of the SPOS block search; image_size <= 64 selects the stride-1 stem, as `spos` does."""
    channels, repeats = check_stages(STAGE_CHANNELS if stage_channels is None else stage_channels,
                                     STAGE_REPEATS if stage_repeats is None else stage_repeats, drop_rate)
    if not isinstance(macs_bins, int) or isinstance(macs_bins, bool) or macs_bins < 1:
        raise RecipeError(f"model.kwargs.macs_bins: expected a positive integer (the authors: 7), got {macs_bins!r}")
    if small_input is None:
        small_input = image_size <= SMALL_INPUT_MAX
    net = SPOSSupernet(num_classes, in_chans, channels, repeats, bool(small_input), float(drop_rate),
                       _macs_range(macs_range_m), macs_bins)
    if net.macs_range is not None:
        shared, table = net.macs_table(image_size)
        least, most = shared + table.min(axis=1).sum(), shared + table.max(axis=1).sum()
        if net.macs_range[1] < least or net.macs_range[0] > most:
            raise RecipeError(f"model.kwargs.macs_range_m: {macs_range_m} holds no path of this space at image size "
                              f"{image_size}: its paths span {least / 1e6:.2f}-{most / 1e6:.2f}M multiply-adds")
    return net
