"""Where metrics go: metrics.jsonl (the run's record) and the console (progress bar with ETA).

Only rank 0 writes. wandb plugs in beside these in its own issue.
"""

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class MetricsFile:
    """Append-only JSON lines; on resume, records past the resumed step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None = None, mirror=None):
        self.path = Path(path)
        self.mirror = mirror  # also receives every record (the wandb tracker)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line.strip()
                    and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()
        if self.mirror is not None:
            self.mirror(record)

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Console:
    """A tqdm bar over optimizer steps (ETA, loss, lr, images/s) when stderr is a terminal; lines otherwise."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, show_bar: bool):
        self.enabled = enabled
        self.bar = None
        if enabled and show_bar and sys.stderr.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            file=sys.stderr)

    def step(self, step: int, fields: dict | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        if fields:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in fields.items()}, refresh=False)

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
