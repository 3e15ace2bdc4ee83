"""Latency in the search loop (the lecture's platform-aware NAS: MnasNet, FBNet, ProxylessNAS): a table of the
measured time of every choice block at every position, on the device that will run the network, so that a
candidate's latency is a lookup (stem + its blocks + tail) rather than a measurement.

The table is measured once per device, image size and space - each block alone at its position's input
shape, at batch 1 and at the recipe's batch - and the sum is checked against whole networks measured end to
end on the same device (`checks`: the relative error a user should know before trusting the cap). Blocks run
back to back in a network overlap nothing on one CPU stream or one CUDA stream, so the sum is a fair model;
what it misses (allocator and cache effects between blocks) is what the error reports.
"""

import dataclasses
import statistics
from collections.abc import Sequence

import torch
import torch.nn as nn

from bigbatch.trainer.models.speed import device_name, forward_seconds


@dataclasses.dataclass
class LatencyTable:
    """Milliseconds per forward pass at each batch: `fixed_ms[b]` (stem and tail) and `blocks_ms[b][position]
    [choice]`; `checks` holds whole networks measured end to end beside the table's prediction."""
    device: str
    image_size: int
    batches: list[int]
    fixed_ms: dict[str, float]
    blocks_ms: dict[str, list[list[float]]]
    checks: list[dict] = dataclasses.field(default_factory=list)

    def predict(self, choices: Sequence[int], batch: int = 1) -> float:
        key = str(batch)
        return self.fixed_ms[key] + sum(self.blocks_ms[key][i][c] for i, c in enumerate(choices))

    def errors(self, batch: int) -> list[float]:
        """|table - measured| / measured of every checked network at `batch`."""
        return [abs(c["predicted_ms"] - c["measured_ms"]) / c["measured_ms"] for c in self.checks
                if c["batch"] == batch]

    def summary(self) -> str:
        parts = [f"batch {b}: mean error {100 * statistics.fmean(self.errors(b)):.1f} % over "
                 f"{len(self.errors(b))} networks" for b in self.batches if self.errors(b)]
        return f"latency table on {self.device}: " + "; ".join(parts)


class _Tail(nn.Module):
    """The supernet's tail (`SPOSSupernet.tail`) as a module the timer can run."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet.tail(x)


def block_input_shapes(supernet: nn.Module, in_chans: int, image_size: int, device: torch.device) -> list:
    """(C, H, W) entering each position and entering the tail: one forward pass of any path (the shapes of a
    position do not depend on the choices)."""
    shapes: list = []
    x = torch.zeros(1, in_chans, image_size, image_size, device=device)
    was_training = supernet.training
    supernet.eval()
    with torch.no_grad():
        x = supernet.stem(x)
        for position in supernet.blocks:
            shapes.append(tuple(x.shape[1:]))
            x = position[0](x)
        shapes.append(tuple(x.shape[1:]))
    supernet.train(was_training)
    return shapes


def measure_latency_table(supernet: nn.Module, in_chans: int, image_size: int, batches: Sequence[int],
                          device: torch.device, check_paths: Sequence[Sequence[int]] = (), **timing) -> LatencyTable:
    """Time every block, the stem and the tail at each batch, then the whole networks of `check_paths`."""
    shapes = block_input_shapes(supernet, in_chans, image_size, device)
    tail = _Tail(supernet).train(supernet.training)  # the timer restores this mode on the supernet too
    fixed, blocks = {}, {}
    def ms(module: nn.Module, batch: int, shape: tuple) -> float:
        return 1e3 * forward_seconds(module, (batch, *shape), device, **timing)

    for b in batches:
        fixed[str(b)] = ms(supernet.stem, b, (in_chans, image_size, image_size)) + ms(tail, b, shapes[-1])
        blocks[str(b)] = [[ms(block, b, shapes[i]) for block in position]
                          for i, position in enumerate(supernet.blocks)]
    table = LatencyTable(device_name(device), image_size, list(batches), fixed, blocks)
    saved_path = list(supernet.path)
    try:
        for path in check_paths:
            supernet.set_path(list(path))
            for b in batches:
                measured = 1e3 * forward_seconds(supernet, (b, in_chans, image_size, image_size), device, **timing)
                table.checks.append({"choices": list(path), "batch": b, "predicted_ms": table.predict(path, b),
                                     "measured_ms": measured})
    finally:
        supernet.set_path(saved_path)
    return table
