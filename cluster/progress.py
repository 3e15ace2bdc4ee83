"""One console for a run on many workers: rank 0's bar and every rank's notes, drawn by the driver.

Under Ray, workers' output is not a terminal and reaches the driver prefixed by
process, beside Ray's own log lines; a bar cannot be drawn that way. Instead the
driver starts a small actor (no CPU reserved) that collects console events;
each worker process routes its console there (`trainer.track.set_channel`),
and a driver thread polls it and draws the one bar (or a line per log
interval off a terminal). A note that several ranks send (a warning every
worker hits) is shown once. Python warnings raised in a worker take the same
path. Tasks from one caller to one actor run in order, so the events arrive in
the order rank 0 sent them; a worker's `close` waits until everything it sent
has arrived.
"""

import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from bigbatch.trainer.records.track import ConsoleView, set_channel

POLL_S = 0.2


def _sink_class():
    import ray

    @ray.remote(num_cpus=0)
    class ConsoleSink:
        def __init__(self):
            self.events: list[tuple] = []

        def put(self, event: tuple) -> None:
            self.events.append(event)

        def drain(self) -> list[tuple]:
            events, self.events = self.events, []
            return events

    return ConsoleSink


def install_worker_channel(sink) -> None:
    """In a worker process: send this process's console events and Python warnings to the driver's sink."""
    import ray

    def send(event: tuple, wait: bool) -> None:
        try:
            ref = sink.put.remote(event)
            if wait:
                ray.get(ref, timeout=30)
        except Exception:  # the console is not worth a run: training goes on without it
            pass

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        send(("say", f"bigbatch: warning: {category.__name__}: {message}"), False)

    set_channel(send)
    warnings.showwarning = show_warning


class DriverConsole:
    """Polls the sink and draws what it holds; shows each distinct note once."""

    def __init__(self, stream=None):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node, as Ray Train's controller: a sink on a worker node would die with that node
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.sink = _sink_class().options(scheduling_strategy=here).remote()
        self.stream = stream or sys.stderr
        self.view: ConsoleView | None = None
        self.shown: set[str] = set()
        self._lock = threading.Lock()  # the poll thread and the driver's own notes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bigbatch-console", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self.drain()

    def drain(self) -> None:
        import ray

        try:
            events = ray.get(self.sink.drain.remote(), timeout=10)
        except Exception:  # Ray shutting down: the run's outcome is reported elsewhere
            return
        for event in events:
            self.apply(event)

    def apply(self, event: tuple) -> None:
        with self._lock:
            self._apply(event)

    def _apply(self, event: tuple) -> None:
        kind = event[0]
        if kind == "open":  # a (re)started worker group: a fresh bar from its start step
            if self.view is not None:
                self.view.close()
            self.view = ConsoleView(*event[1:], stream=self.stream)
        elif kind == "step" and self.view is not None:
            self.view.step(event[1], event[2])
        elif kind == "say" and event[1] not in self.shown:
            self.shown.add(event[1])
            (self.view.say if self.view is not None else self._print)(event[1])
        elif kind == "close" and self.view is not None:
            self.view.close()
            self.view = None

    def _print(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.drain()
        if self.view is not None:
            self.view.close()


@contextmanager
def driver_console() -> Iterator[DriverConsole]:
    console = DriverConsole()
    try:
        yield console
    finally:
        console.close()
