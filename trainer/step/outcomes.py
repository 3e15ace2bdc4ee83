"""What every rank must learn after each optimizer step - the global loss and whether any rank was asked to
stop - kept on the device and read by the host only at check points.

Reading a device value (`.item()`, `.tolist()`) makes the host wait until the GPU has caught up: done every
step it leaves the GPU idle while the host prepares the next step. So each step's all-reduced
[loss, stop] pair is only appended here (device ops, no transfer), and `settle()` reads everything gathered
since the last read in one transfer. The loop settles at log steps, checkpoints, evaluations and the end:
every rank settles at the same steps, so every rank sees a stop request at the same step.
"""

import math
from dataclasses import dataclass

import torch


@dataclass
class Settled:
    """The steps since the last read: (step number, global mean loss) each, the stop flag, and whether the stop
    is some worker's leaving (a signal to it in an elastic run: the group restarts without it)."""

    losses: list[tuple[int, float]]
    stop_requested: bool
    leaving: bool = False

    def first_nonfinite(self) -> int | None:
        return next((step for step, loss in self.losses if not math.isfinite(loss)), None)

    def finite_losses(self) -> list[float]:
        return [loss for _, loss in self.losses if math.isfinite(loss)]


class StepOutcomes:
    def __init__(self, world_size: int):
        self.world_size = world_size
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []  # each [loss sum, stop requests, leave requests] over ranks

    def add(self, step: int, reduced: torch.Tensor) -> None:
        self._steps.append(step)
        self._values.append(reduced)

    def __len__(self) -> int:
        return len(self._steps)

    def settle(self) -> Settled:
        """One device-to-host read of everything added since the last call."""
        if not self._values:
            return Settled([], False)
        table = torch.stack(self._values).tolist()
        settled = Settled([(step, row[0] / self.world_size) for step, row in zip(self._steps, table, strict=True)],
                          any(row[1] or row[2] for row in table), any(row[2] for row in table))
        self._steps, self._values = [], []
        return settled
