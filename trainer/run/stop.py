"""Graceful stop requests: a signal to this process, or a STOP file in the run directory.

Any rank may see a request (a spot node's SIGTERM reaches only its own workers;
the driver of a Ray run writes the STOP file). After every step each rank posts
its requests to an asynchronous sum over a host-side group (`StopVote`) and
collects the sum posted after the step before, which has crossed while this
step computed: every rank learns of a request at the same step, at most one
step after the one it arrived in, without reading the device, and stops after
it with one checkpoint instead of hanging in a collective. (Cloud spot notices
give ~30 s; a step is seconds at most.)

Python runs signal handlers on the main thread only, and only the main thread
may install them. A training loop on another thread (Ray Train V2 runs the
training function in a thread of its worker actor) has the launcher run
`install_process_handler` on the main thread; the handler records the signal
here, where `StopRequests` in any thread of the process sees it.
"""

import signal
import threading
import time
from pathlib import Path

from bigbatch.trainer.atomic import write_atomic

STOP_FILE = "STOP"


def request_stop(run_dir: Path, signum: int = signal.SIGTERM) -> None:
    """Ask the run in `run_dir` to checkpoint and stop (within a step or two: rank 0 polls the file each second)."""
    write_atomic(Path(run_dir) / STOP_FILE, f"{int(signum)}\n")


def clear_stop(run_dir: Path) -> None:
    """Forget an old request before a run (re)starts, so it does not stop at once."""
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


_process_signals: list[int] = []  # signals caught by install_process_handler's handler, in arrival order
_listeners = 0  # StopRequests instances that read them now
_previous_handlers: dict[int, object] = {}


def install_process_handler() -> bool:
    """On the main thread: SIGINT/SIGTERM become stop requests for StopRequests on any thread of this process
    while one is listening; a second signal, or one while nobody listens, goes to the handler that was there
    before (a Ray worker's exits). Returns False when called off the main thread (nothing installed)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum not in _previous_handlers:
            _previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, _on_process_signal)
    return True


def _on_process_signal(signum, frame) -> None:
    if _listeners and not _process_signals:
        _process_signals.append(signum)
        return
    previous = _previous_handlers.get(signum)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


class StopRequests:
    """Signals caught in this process plus (when `stop_file` is given) a polled STOP file."""

    def __init__(self, stop_file: Path | None = None, poll_interval_s: float = 1.0):
        self.stop_file = stop_file
        self.poll_interval_s = poll_interval_s
        self.signum: int | None = None
        self.by_signal = False  # the request came to this process (a signal), not through the STOP file
        self._next_poll = 0.0
        self._previous: dict = {}
        self._listening = False  # reading install_process_handler's signals (installed off the main thread)

    def install(self) -> None:
        """SIGINT/SIGTERM become a request; a second one stops at once (KeyboardInterrupt). Off the main thread,
        requests come from install_process_handler's handler, which the launcher installs on the main thread."""
        global _listeners
        if threading.current_thread() is not threading.main_thread():
            _listeners += 1
            _process_signals.clear()
            self._listening = True
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        global _listeners
        if self._listening:
            _listeners -= 1
            self._listening = False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum, self.by_signal = signum, True

    def requests(self, leave_on_signal: bool) -> tuple[bool, bool]:
        """(a stop was requested, this worker is leaving): with `leave_on_signal` (an elastic run) a signal to
        this worker is it leaving, not a stop of the run."""
        requested = self.pending() > 0
        leave = requested and self.by_signal and leave_on_signal
        return requested and not leave, leave

    def pending(self) -> int:
        """The signal number of a request seen by this process (0 if none); polls the file at most once per interval."""
        if self.signum is None and self._listening and _process_signals:
            self.signum, self.by_signal = _process_signals[0], True
        if self.signum is None and self.stop_file is not None and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_interval_s
            try:
                self.signum = int(self.stop_file.read_text().strip() or signal.SIGTERM)
            except FileNotFoundError:
                pass
            except ValueError:
                self.signum = int(signal.SIGTERM)
        return self.signum or 0


class StopVote:
    """The world's stop and leave requests, one step late and never from the device: `exchange` after each
    step posts this rank's and returns those posted after the previous step, the same on every rank."""

    def __init__(self, collective):
        self.collective = collective
        self._pending = None  # the vote in flight: a call that waits for its sums

    def exchange(self, stop: bool, leave: bool) -> tuple[bool, bool]:
        if self.collective.world_size == 1:
            return stop, leave  # nobody else to hear from: no lag
        previous = self._pending() if self._pending is not None else [0, 0]
        self._pending = self.collective.start_vote([int(stop), int(leave)])
        return previous[0] > 0 and previous[1] == 0, previous[1] > 0

    def close(self) -> None:
        """Wait for the vote in flight (every rank posted it: it completes) before the group may end."""
        if self._pending is not None:
            self._pending()
            self._pending = None
