"""Where metrics go: metrics.jsonl (the run's record) and the console (progress bar with ETA).

Only rank 0 writes. wandb plugs in beside these in its own issue.
"""

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from trainer.atomic import write_atomic


class MetricsFile:
    """Append-only JSON lines. Opening repairs the file first: a line a crash left half-written is dropped
    (with a warning naming it) and, on resume, so are records past the resumed step, so neither can block a
    resume nor glue itself to the next record."""

    def __init__(self, path: Path, resume_step: int | None = None, mirror=None):
        self.path = Path(path)
        self.mirror = mirror  # also receives every record (the wandb tracker)
        if self.path.exists():
            self._repair(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair(self, resume_step: int | None) -> None:
        raw = self.path.read_bytes()
        kept, changed = [], not raw.endswith(b"\n") and bool(raw)
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            record = parse_record(line)
            if record is None:
                print(f"bigbatch: warning: {self.path}, line {number}: not a whole JSON record (a write cut "
                      "short by a crash?); dropped", file=sys.stderr)
                changed = True
            elif resume_step is not None and record.get("step", 0) > resume_step:
                changed = True
            else:
                kept.append(line + b"\n")
        if changed:
            write_atomic(self.path, b"".join(kept))

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()
        if self.mirror is not None:
            self.mirror(record)

    def close(self) -> None:
        self._file.close()


def parse_record(line: bytes | str) -> dict | None:
    """One metrics.jsonl line as a dict, or None if it is not a whole JSON object."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


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
