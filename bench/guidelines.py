"""The four guideline experiments of ShuffleNet V2 (Ma et al. 2018, Tables 1-4), rerun on this CPU.

Multiply-adds are not speed: within each table every row has (nearly) the same multiply-adds, and only the
shape of the computation changes. Each experiment stacks 10 blocks on a 56 x 56 input (the captions' size;
Table 4's gives none and uses the same here), timed by trainer/models/speed.py (eval mode, no gradients,
median of timed passes) at batch 1 on 1 torch thread, as the paper's ARM column was single-threaded and
batch 1. Printed beside the paper's CPU/ARM column (Snapdragon 810), both as images/s and as the ratio to
the table's first row, so that the comparison is of shape, not of hardware.

Readings of the paper where it is silent, fixed before any run:
- x1 / x2 / x4: channels multiplied by 1, 2 and 4 (the paper prints only the x1 channels; its CPU
  throughput falls about 4x per step, as multiply-adds growing 4x per doubling of channels would).
- Table 2: at x1, g = 8 with c = 180 is not divisible; c = 184 (c^2/g within 3.3 % of the g = 1 row).
- Table 3: a fragment is a 1x1 convolution; n fragments in series or in parallel (branches on the same
  input, summed) have round(c / sqrt(n)) channels, the whole stack at that width, so multiply-adds match
  the 1-fragment block (to rounding).
- Table 4: the ResNet bottleneck (1x1 to c/4, 3x3, 1x1 back to c), convolutions without BatchNorm, so the
  only element-wise operations are the ReLUs and the shortcut add under test.

    .venv/bin/python bench/guidelines.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/guidelines.py --quick    # fewer timed passes (a smoke run)

Writes bench/results/guidelines.md.
"""

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.publish import publish  # noqa: E402
from bigbatch.trainer.models.complexity import count_macs_of  # noqa: E402
from bigbatch.trainer.models.speed import device_name, images_per_second  # noqa: E402

SIZE, BLOCKS, MULTIPLIERS = 56, 10, (1, 2, 4)

# The paper's CPU/ARM images/s (Tables 1-4) at x1, x2, x4 (Tables 3 and 4: at the three channel counts).
PAPER = {
    "G1: equal channel width (c1:c2)": {"1:1": (76.2, 21.7, 5.3), "1:2": (72.9, 20.5, 5.1),
                                        "1:6": (69.1, 17.9, 4.6), "1:12": (57.6, 15.1, 4.4)},
    "G2: group convolution (g)": {"g=1": (40.0, 10.2, 2.3), "g=2": (35.0, 9.5, 2.2), "g=4": (32.9, 8.7, 2.1),
                                  "g=8": (27.8, 7.5, 1.8)},
    "G3: fragmentation": {"1-fragment": (40.2, 10.1, 2.3), "2-fragment-series": (38.6, 10.1, 2.2),
                          "4-fragment-series": (38.4, 10.1, 2.3), "2-fragment-parallel": (33.4, 9.1, 2.2),
                          "4-fragment-parallel": (35.0, 8.4, 2.1)},
    "G4: element-wise operations (ReLU, shortcut)": {"ReLU + shortcut": (56.7, 16.9, 5.0),
                                                     "ReLU only": (61.9, 18.8, 5.2),
                                                     "shortcut only": (57.3, 18.2, 5.1),
                                                     "neither": (66.3, 20.2, 5.4)},
}
G1_CHANNELS = {"1:1": (32, 32), "1:2": (22, 44), "1:6": (13, 78), "1:12": (9, 108)}
G2_CHANNELS = {1: 64, 2: 90, 4: 128, 8: 184}
G3_CHANNELS, G4_CHANNELS = (64, 128, 256), (32, 64, 128)


def conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False)


class Parallel(nn.Module):
    """Branches on the same input, summed."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class Bottleneck(nn.Module):
    def __init__(self, c: int, relu: bool, shortcut: bool):
        super().__init__()
        inner = c // 4
        self.convs = nn.ModuleList([conv1x1(c, inner), nn.Conv2d(inner, inner, 3, padding=1, bias=False),
                                    conv1x1(inner, c)])
        self.relu, self.shortcut = relu, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if self.relu and i < 2:
                y = torch.relu(y)
        if self.shortcut:
            y = y + x
        return torch.relu(y) if self.relu else y


def fragments(width: int, n: int, parallel: bool) -> nn.Module:
    """n 1x1 convolutions of `width` channels, in series or as branches on the same input (summed)."""
    convs = [conv1x1(width, width) for _ in range(n)]
    return Parallel(convs) if parallel and n > 1 else nn.Sequential(*convs)


def fragment_width(c: int, n: int) -> int:
    """The width at which n fragments do the multiply-adds of one c-channel 1x1 convolution."""
    return round(c / math.sqrt(n))


def networks() -> dict[str, dict[str, list[tuple[nn.Module, int]]]]:
    """table: row: [(10 stacked blocks, input channels) at each column]."""
    g1 = {row: [(nn.Sequential(*[nn.Sequential(conv1x1(c1 * k, c2 * k), conv1x1(c2 * k, c1 * k))
                                 for _ in range(BLOCKS)]), c1 * k) for k in MULTIPLIERS]
          for row, (c1, c2) in G1_CHANNELS.items()}
    g2 = {f"g={g}": [(nn.Sequential(*[conv1x1(c * k, c * k, g) for _ in range(BLOCKS)]), c * k)
                     for k in MULTIPLIERS] for g, c in G2_CHANNELS.items()}
    g3 = {f"{n}-fragment{'' if n == 1 else '-parallel' if parallel else '-series'}":
          [(nn.Sequential(*[fragments(fragment_width(c, n), n, parallel) for _ in range(BLOCKS)]),
            fragment_width(c, n)) for c in G3_CHANNELS]
          for n, parallel in ((1, False), (2, False), (4, False), (2, True), (4, True))}
    g4 = {label: [(nn.Sequential(*[Bottleneck(c, relu, shortcut) for _ in range(BLOCKS)]), c) for c in G4_CHANNELS]
          for label, relu, shortcut in (("ReLU + shortcut", True, True), ("ReLU only", True, False),
                                        ("shortcut only", False, True), ("neither", False, False))}
    return dict(zip(PAPER, (g1, g2, g3, g4), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed passes (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "guidelines.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device("cpu")
    timing = {"repeats": 3, "min_seconds": 0.05} if args.quick else {"repeats": 7, "min_seconds": 1.0}
    lines = ["# ShuffleNet V2's four guidelines on this CPU", "",
             f"10 stacked blocks at {SIZE} x {SIZE}, batch 1, 1 torch thread, on {device_name(device)}. "
             "ours: images/s measured here; paper: the CPU/ARM column of Ma et al. 2018 (Snapdragon 810, one "
             "thread). Ratios: each row over the table's first row, column by column. Readings of the paper "
             "where it is silent: bench/guidelines.py's docstring.", ""]
    for table, rows in networks().items():
        columns = ["x1", "x2", "x4"] if table.startswith(("G1", "G2")) else \
            [f"c={c}" for c in (G3_CHANNELS if table.startswith("G3") else G4_CHANNELS)]
        lines += [f"## {table}", "", "| row | MACs M (" + ", ".join(columns) + ") | ours img/s | paper img/s | "
                  "ours ratio | paper ratio |", "|---|---|---|---|---|---|"]
        measured = {}
        for row, cells in rows.items():
            measured[row] = [images_per_second(net, 1, c_in, SIZE, device, **timing) for net, c_in in cells]
            macs = [count_macs_of(net, (1, c_in, SIZE, SIZE)) / 1e6 for net, c_in in cells]
            print(f"{table} {row}: {measured[row]}", file=sys.stderr, flush=True)
            first, paper_first = next(iter(measured.values())), next(iter(PAPER[table].values()))
            paper = PAPER[table][row]
            lines.append(f"| {row} | {' / '.join(f'{m:.0f}' for m in macs)} | "
                         f"{' / '.join(f'{v:.1f}' for v in measured[row])} | {' / '.join(map(str, paper))} | "
                         f"{' / '.join(f'{v / f:.2f}' for v, f in zip(measured[row], first, strict=True))} | "
                         f"{' / '.join(f'{v / f:.2f}' for v, f in zip(paper, paper_first, strict=True))} |")
        lines.append("")
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
