"""Graceful stop requests: a signal to this process, or a STOP file in the run directory.

Any rank may see a request (a spot node's SIGTERM reaches only its own workers;
the driver of a Ray run writes the STOP file). The loop all-reduces the request
together with the step's loss, so every rank stops after the same step, writes
one checkpoint and exits cleanly instead of hanging in a collective.
"""

import signal
import threading
import time
from pathlib import Path

from trainer.atomic import write_atomic

STOP_FILE = "STOP"


def request_stop(run_dir: Path, signum: int = signal.SIGTERM) -> None:
    """Ask the run in `run_dir` to checkpoint and stop after its current step."""
    write_atomic(Path(run_dir) / STOP_FILE, f"{int(signum)}\n")


def clear_stop(run_dir: Path) -> None:
    """Forget an old request before a run (re)starts, so it does not stop at once."""
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


class StopRequests:
    """Signals caught in this process plus (when `stop_file` is given) a polled STOP file."""

    def __init__(self, stop_file: Path | None = None, poll_interval_s: float = 1.0):
        self.stop_file = stop_file
        self.poll_interval_s = poll_interval_s
        self.signum: int | None = None
        self._next_poll = 0.0
        self._previous: dict = {}

    def install(self) -> None:
        """SIGINT/SIGTERM become a request; a second one stops at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def pending(self) -> int:
        """The signal number of a request seen by this process (0 if none); polls the file at most once per interval."""
        if self.signum is None and self.stop_file is not None and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_interval_s
            try:
                self.signum = int(self.stop_file.read_text().strip() or signal.SIGTERM)
            except FileNotFoundError:
                pass
            except ValueError:
                self.signum = int(signal.SIGTERM)
        return self.signum or 0
