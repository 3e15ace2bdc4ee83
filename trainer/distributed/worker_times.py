"""Per-worker step, communication and wait times, so a straggler is visible in the metrics.

Each rank keeps its own window; at a logging step every rank contributes its
means to one small all-reduce and rank 0 writes them. `comm` is the time this
rank's collectives were in flight (DDP buckets, SyncBN, the loss), as counted by
the backend; `wait` is the time spent blocked at the end of a step for the
other ranks. The slowest rank is the one that waits least. Times are host-side.
"""

import time

import torch

from bigbatch.trainer.distributed.collective import Collective


class WorkerTimes:
    def __init__(self, collective: Collective):
        self.collective = collective
        self.reset()

    def _comm_total(self) -> float:
        return float(getattr(self.collective, "comm_seconds", 0.0))

    def reset(self) -> None:
        self.start, self.comm_start, self.wait, self.steps = time.perf_counter(), self._comm_total(), 0.0, 0

    def add_step(self, wait_s: float) -> None:
        self.steps += 1
        self.wait += wait_s

    def gather(self) -> dict:
        """Collective: every rank calls it at the same step. Means per step, one list entry per rank."""
        world, rank, steps = self.collective.world_size, self.collective.rank, max(self.steps, 1)
        mine = [(time.perf_counter() - self.start) / steps, (self._comm_total() - self.comm_start) / steps,
                self.wait / steps]
        table = torch.zeros(3, world, dtype=torch.float64)
        table[:, rank] = torch.tensor(mine, dtype=torch.float64)
        if world > 1:
            table = self.collective.all_reduce(table.to(self.collective.device), op="sum").cpu()
        self.reset()
        step_s, comm_s, wait_s = (row.tolist() for row in table)
        return {"worker_step_s": step_s, "worker_comm_s": comm_s, "worker_wait_s": wait_s,
                "slowest_rank": int(table[2].argmin())}
