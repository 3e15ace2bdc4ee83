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
GROW_FILE = "GROW"  # beside STOP: the driver's request that an elastic group restart larger (cluster/node_loss.py)


def request_stop(run_dir: Path, signum: int = signal.SIGTERM) -> None:
    """Ask the run in `run_dir` to checkpoint and stop (within a step or two: rank 0 polls the file each second)."""
    write_atomic(Path(run_dir) / STOP_FILE, f"{int(signum)}\n")


def request_grow(run_dir: Path, workers: int) -> None:
    """Ask a running elastic group to checkpoint after its next step and restart, to come back with up to
    `workers` workers (a node joined): nothing is redone (Ray's own resize restarts from the newest checkpoint
    whenever its monitor looks)."""
    write_atomic(Path(run_dir) / GROW_FILE, f"{int(workers)}\n")


def clear_stop(run_dir: Path) -> None:
    """Forget old requests (stop, grow) before a run (re)starts, so it does not stop at once."""
    for name in (STOP_FILE, GROW_FILE):
        (Path(run_dir) / name).unlink(missing_ok=True)


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

    def __init__(self, stop_file: Path | None = None, poll_interval_s: float = 1.0, world_size: int = 1):
        self.stop_file = stop_file
        self.poll_interval_s = poll_interval_s
        self.world_size = world_size
        self.signum: int | None = None
        self.grow_to = 0  # a GROW request beside the STOP file for more than `world_size` workers
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
        leave = leave_on_signal and ((requested and self.by_signal) or self.grow_to > 0)
        return requested and not leave, leave

    def why_leaving(self, step: int) -> str:
        """The reason a leave gives (rank 0's: it reads the GROW file)."""
        done = f"every rank checkpointed at step {step}; the group restarts with"
        if self.grow_to:
            return f"the cluster grew: {done} up to {self.grow_to} workers"
        signum = self.signum or int(signal.SIGTERM)  # another rank's: a node's shutdown sends SIGTERM
        return f"signal {signum} to a worker (a node shutting down?): {done} the workers Ray can place"

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
            self._poll_grow(self.stop_file.with_name(GROW_FILE))
        return self.signum or 0

    def _poll_grow(self, path: Path) -> None:
        """A request to grow is taken once: the file is removed; one for a size the group has is dropped (the
        driver saw a node join while this group was starting on it)."""
        try:
            target = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        path.unlink(missing_ok=True)
        if target > self.world_size:
            self.grow_to = target


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
