"""What every rank must learn after each optimizer step - the global loss - kept on the device and read by the
host only at check points. (Stop requests travel on the host: trainer/run/stop.py, StopVote.)

Reading a device value (`.item()`, `.tolist()`) makes the host wait until the GPU has caught up: done every
step it leaves the GPU idle while the host prepares the next step. So each step's all-reduced
loss is only appended here (device ops, no transfer), and `settle()` reads everything gathered
since the last read in one transfer. The loop settles at log steps, checkpoints, evaluations and the end:
every rank settles at the same steps.
"""

import math
from dataclasses import dataclass

import torch


@dataclass
class Settled:
    """The steps since the last read: (step number, global mean loss) each."""

    losses: list[tuple[int, float]]

    def first_nonfinite(self) -> int | None:
        return next((step for step, loss in self.losses if not math.isfinite(loss)), None)

    def finite_losses(self) -> list[float]:
        return [loss for _, loss in self.losses if math.isfinite(loss)]


class StepOutcomes:
    def __init__(self, world_size: int):
        self.world_size = world_size
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []  # each the loss summed over ranks, shape [1]

    def add(self, step: int, reduced: torch.Tensor) -> None:
        self._steps.append(step)
        self._values.append(reduced)

    def __len__(self) -> int:
        return len(self._steps)

    def settle(self) -> Settled:
        """One device-to-host read of everything added since the last call."""
        if not self._values:
            return Settled([])
        table = torch.stack(self._values).tolist()
        settled = Settled([(step, row[0] / self.world_size) for step, row in zip(self._steps, table, strict=True)])
        self._steps, self._values = [], []
        return settled
