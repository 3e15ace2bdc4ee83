"""Where metrics go: metrics.jsonl (the run's record) and the console (progress bar with ETA).

Only rank 0 writes. wandb plugs in beside these in its own issue.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from bigbatch.trainer.atomic import write_atomic

FALLBACK_SIZE = os.terminal_size((80, 24))  # the bar's terminal where it reports no size
KEPT = ("attempt_failed",)  # history a resume keeps though it lies past the resumed step (why the group restarted)


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
                notice(f"bigbatch: warning: {self.path}, line {number}: not a whole JSON record (a write cut "
                       "short by a crash?); dropped")
                changed = True
            elif resume_step is not None and record.get("step", 0) > resume_step and record.get("event") not in KEPT:
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


class ConsoleView:
    """What a person sees: a tqdm bar over optimizer steps (ETA, loss, lr, images/s) when stderr is a
    terminal; otherwise one line per log interval (step/total, the same fields, ETA). Notes print above it."""

    def __init__(self, total_steps: int, start_step: int, show_bar: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.start_step, self.started = total_steps, start_step, time.monotonic()
        self.bar, self.hidden = None, False
        if show_bar and self.stream.isatty():
            # A terminal that reports its size as 0 x 0 (under `script`, some CI and container ptys): tqdm would
            # take it as -1 columns and rows and draw nothing until the end; draw it as on an 80 x 24 one (one
            # column short of the edge, as tqdm does on a sized terminal).
            size = ({"dynamic_ncols": True} if terminal_size(self.stream)
                    else {"ncols": FALLBACK_SIZE.columns - 1, "nrows": FALLBACK_SIZE.lines - 1})
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", file=self.stream, **size)

    def step(self, step: int, fields: dict | None = None) -> None:
        if self.bar is not None:
            if fields:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in fields.items()}, refresh=False)
            self.bar.update(step - self.bar.n)  # draws at most every tqdm.mininterval
            if fields and self.bar.last_print_n != self.bar.n:  # a log step is always drawn, once
                self.bar.refresh()
            self.hidden = False
        elif fields:  # a log step: one line
            shown = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
            self.say(f"step {step}/{self.total} ({100 * step / self.total:.0f}%) {shown} ETA {self.eta(step)}")

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        left = (time.monotonic() - self.started) / done * (self.total - step)
        return time.strftime("%H:%M:%S", time.gmtime(left)) if left < 86400 else f"{left / 3600:.0f} h"

    def say(self, message: str) -> None:
        if self.bar is None:
            print(message, file=self.stream, flush=True)
        elif self.bar.n < self.total:
            self.bar.write(message, file=self.stream)  # clears the bar, prints, draws the bar again under it
        else:  # the closing notes: the finished bar comes off and is drawn once, by close, under the last
            if not self.hidden:
                self.bar.clear()
                self.hidden = True
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def terminal_size(stream) -> os.terminal_size | None:
    """The size of the terminal `stream` writes to, or None where it reports none (0 columns or rows)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal
        return None
    return size if size.columns > 0 and size.lines > 0 else None


# Where the console goes in a worker process launched by Ray or Horovod: a function that sends each event to
# the driver (cluster/progress.py), which draws the one bar. None: this process draws its own.
_channel: Callable[[tuple, bool], None] | None = None
STEP_EVENTS_EVERY_S = 0.25  # a bar needs no more; a log step's fields always go


def set_channel(send: Callable[[tuple, bool], None] | None) -> None:
    """Route this process's console (bar, notes) to `send(event, wait)`; None draws locally again."""
    global _channel
    _channel = send


def notice(message: str) -> None:
    """A warning or note for the person at the console, from any rank: printed here, or sent to the driver
    (which shows each distinct message once)."""
    if _channel is not None:
        _channel(("say", message), False)
    else:
        print(message, file=sys.stderr, flush=True)


def tracker_off(name: str, error: BaseException) -> None:
    """The one warning a dashboard tracker (wandb, TensorBoard) gives when it fails and turns itself off."""
    why = str(error).splitlines()[0] if str(error) else ""
    notice(f"bigbatch: warning: {name} is off for this run ({error.__class__.__name__}: {why}); metrics.jsonl "
           "still has everything")


class Console:
    """Rank 0's console: drawn here (a ConsoleView), or forwarded to the driver when this process runs under
    Ray or Horovod (see set_channel); `enabled` False (other ranks) shows nothing."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, show_bar: bool):
        self.enabled, self.send, self.view, self.total = enabled, _channel, None, total_steps
        self.last_sent = 0.0
        if not enabled:
            return
        if self.send is not None:
            self.send(("open", total_steps, start_step, show_bar), False)
        else:
            self.view = ConsoleView(total_steps, start_step, show_bar)

    def step(self, step: int, fields: dict | None = None) -> None:
        if self.view is not None:
            self.view.step(step, fields)
        elif self.enabled and self.send is not None:
            now = time.monotonic()
            if fields or step >= self.total or now - self.last_sent >= STEP_EVENTS_EVERY_S:  # the bar ends full
                self.send(("step", step, fields), False)
                self.last_sent = now

    def say(self, message: str) -> None:
        if self.view is not None:
            self.view.say(message)
        elif self.enabled and self.send is not None:
            self.send(("say", message), False)

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        elif self.enabled and self.send is not None:
            self.send(("close",), True)  # waits: every event before it has reached the driver
