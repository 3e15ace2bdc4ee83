"""The local dashboard: TensorBoard event files in RUN_DIR/tensorboard, from rank 0 only, never fatal.

Needs no account and no network: `bigbatch dashboard` serves every run under a
directory on 127.0.0.1. Every metrics.jsonl record becomes scalars at its
optimizer step - step records under `train/` (loss, lr, images/s, grad norm,
trust ratios), evaluations under `eval/` (top-1, top-5, held-out loss), the
per-worker timings under `workers/` (each rank's up to 16 workers, else the
min / median / max over ranks, so W = 1,024 writes 9 curves, not 3,072) - and
the resolved recipe is kept as text. A resumed run continues the same curves:
events past the resumed step, logged by the attempt that died, are purged
(SummaryWriter's purge_step), as metrics.jsonl drops those records.
"""

import statistics
from pathlib import Path

from bigbatch.trainer.records.track import tracker_off

PER_RANK_UP_TO = 16


def scalars(record: dict) -> dict[str, float]:
    """The tag -> value pairs one metrics.jsonl record gives."""
    group = "eval" if "top1" in record else "train"
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "time") or isinstance(value, bool) or (group == "eval" and key in ("epoch", "examples")):
            continue  # an evaluation's epoch and example count are no curves worth a chart
        if isinstance(value, (int, float)):
            out[f"{group}/{key}"] = float(value)
        elif isinstance(value, list) and key.startswith("worker_") and value:
            if len(value) <= PER_RANK_UP_TO:
                out.update({f"workers/{key}/rank_{rank}": float(v) for rank, v in enumerate(value)})
            else:
                out.update({f"workers/{key}/min": float(min(value)), f"workers/{key}/max": float(max(value)),
                            f"workers/{key}/median": float(statistics.median(value))})
    return out


class TensorBoardTracker:
    def __init__(self, enabled: bool, run_dir: Path, resume_step: int | None, recipe_yaml: str):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"),
                                        purge_step=None if resume_step is None else resume_step + 1)
            if resume_step is None:
                text = "\n".join("    " + line for line in recipe_yaml.splitlines())  # markdown code block
                self.writer.add_text("recipe", text, 0)
        except Exception as e:  # the dashboard must never be the reason a run dies
            self._off(e)

    def _off(self, error: BaseException) -> None:
        tracker_off("TensorBoard", error)
        self.writer = None

    def log(self, record: dict) -> None:
        if self.writer is None or "event" in record or "step" not in record:
            return
        try:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, int(record["step"]))
            self.writer.flush()  # a dashboard open during the run sees each record at once
        except Exception as e:
            self._off(e)

    def mark(self, step: int, name: str, text: str, value: float) -> None:
        """A run event at `step` (a resize): its line as text under `events/NAME`, and `value` as a scalar there
        too, so the world-size curve steps where it happened."""
        if self.writer is None:
            return
        try:
            self.writer.add_text(f"events/{name}", text, step)
            self.writer.add_scalar(f"events/{name}", value, step)
            self.writer.flush()
        except Exception as e:
            self._off(e)

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
