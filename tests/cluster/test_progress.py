"""One console for many workers: events from Ray worker processes reach the driver in order, each distinct
note once; off a terminal the bar becomes a line per log interval with an ETA."""

import io
import re

import pytest

from bigbatch.trainer.records.track import ConsoleView


def test_off_a_terminal_the_view_prints_a_line_per_log_step_with_eta():
    stream = io.StringIO()  # not a terminal
    view = ConsoleView(total_steps=40, start_step=0, show_bar=True, stream=stream)
    assert view.bar is None
    view.step(3)  # not a log step: nothing
    view.step(10, {"loss": 0.5, "lr": 0.1})
    view.say("epoch 1.00 step 10: top1 0.5")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"step 10/40 \(25%\) loss 0\.5 lr 0\.1 ETA \d\d:\d\d:\d\d", lines[0]), lines[0]
    assert lines[1] == "epoch 1.00 step 10: top1 0.5"


@pytest.mark.timeout(120)
def test_the_driver_shows_rank_0s_progress_in_order_and_each_note_once(ray_cluster):
    from bigbatch.cluster.progress import DriverConsole

    def worker(sink, rank: int) -> None:  # defined here: Ray ships it by value
        """What a worker process does: route its console to the driver, warn, and (rank 0) draw the bar."""
        import warnings

        from bigbatch.cluster.progress import install_worker_channel
        from bigbatch.trainer.records.track import Console, notice, set_channel

        shown = warnings.showwarning
        install_worker_channel(sink)
        notice("bigbatch: warning: the same on every rank")
        warnings.warn("a Python warning in a worker", stacklevel=1)
        console = Console(total_steps=20, start_step=0, enabled=rank == 0, show_bar=True)
        for step in range(1, 21):
            console.step(step, {"loss": 1.0 / step} if step % 5 == 0 else None)
        console.say("epoch 1.00 step 20: top1 0.9")
        console.close()
        set_channel(None)  # this Ray worker process may run other tests' tasks next
        warnings.showwarning = shown

    stream = io.StringIO()
    console = DriverConsole(stream=stream)
    try:
        task = ray_cluster.remote(num_cpus=0)(worker)
        ray_cluster.get([task.remote(console.sink, rank) for rank in range(2)], timeout=60)
    finally:
        console.close()
    lines = stream.getvalue().splitlines()
    assert lines.count("bigbatch: warning: the same on every rank") == 1
    assert len([line for line in lines if "a Python warning in a worker" in line]) == 1
    steps = [int(m.group(1)) for line in lines if (m := re.match(r"step (\d+)/20 ", line))]
    assert steps == [5, 10, 15, 20]  # every log step, in order
    assert lines.index("epoch 1.00 step 20: top1 0.9") > max(i for i, line in enumerate(lines) if "step 20/20" in line)


def test_a_forwarded_console_always_sends_the_last_step_so_the_driver_bar_finishes():
    from bigbatch.trainer.records.track import Console, set_channel

    events = []
    set_channel(lambda event, wait: events.append(event))
    try:
        console = Console(total_steps=7, start_step=0, enabled=True, show_bar=True)
        for step in range(1, 8):  # faster than STEP_EVENTS_EVERY_S: only the first would go
            console.step(step)
        console.close()
    finally:
        set_channel(None)
    steps = [event[1] for event in events if event[0] == "step"]
    assert steps[-1] == 7, events
