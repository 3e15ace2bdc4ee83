"""The console on terminals of every size (issue 29, item 10): a pty that reports 0 x 0 (under `script`, some CI
and container ptys) still shows the bar as it moves, and a sized one shows the final bar once, below the closing
notes. The bytes a pty receives are read raw and replayed onto lines as a terminal would (carriage returns
overwrite, cursor-up moves back a line)."""

import fcntl
import os
import re
import select
import struct
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bigbatch.trainer.records.track import ConsoleView
from tests.cluster.conftest import RAY_TEST_ENV

REPO = Path(__file__).resolve().parents[2]
BAR = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "n/total [elapsed<eta" field
ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def sized_pty(rows: int, columns: int) -> tuple[int, int]:
    """(master, slave) of a new pty whose window size is rows x columns (0 x 0: unknown, as under `script`)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def replay(raw: str) -> list[str]:
    """The lines a terminal shows for `raw` (no wrapping: lines are as long as written)."""
    lines, row, col = [[]], 0, 0
    i = 0
    while i < len(raw):
        if m := ESCAPE.match(raw, i):
            if m.group(2) == "A":  # cursor up
                row = max(row - int(m.group(1) or 1), 0)
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif ch >= " ":
            line = lines[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = ch
            col += 1
    return ["".join(line).rstrip() for line in lines]


def drain(master: int) -> str:
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def draw(rows: int, columns: int) -> tuple[ConsoleView, str]:
    """A 20-step run's console on a rows x columns pty: log steps, an eval note, a closing note, close."""
    master, slave = sized_pty(rows, columns)
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        view = ConsoleView(total_steps=20, start_step=0, show_bar=True, stream=stream)
        seen_mid_run = ""
        for step in range(1, 21):
            view.step(step, {"loss": 1.0 / step} if step % 5 == 0 else None)
            if step == 10:
                stream.flush()
                seen_mid_run = drain(master)
        view.say("epoch 1.00 step 20: top1 0.9")
        view.say("bigbatch: a closing note")
        view.close()
        stream.flush()
        return seen_mid_run, drain(master)
    finally:
        stream.close()
        os.close(master)


def test_a_0x0_terminal_shows_the_bar_while_it_moves_at_80_columns():
    mid_run, rest = draw(0, 0)
    assert BAR.search(mid_run), repr(mid_run)  # progress before the end
    shown = replay(mid_run + rest)
    bars = [line for line in shown if BAR.search(line)]
    assert len(bars) == 1 and "20/20 [" in bars[0] and len(bars[0]) == 79, shown
    assert shown.index(bars[0]) > shown.index("bigbatch: a closing note"), shown
    assert len(BAR.findall(rest[rest.index("epoch 1.00 step 20"):])) == 1, repr(rest)


@pytest.mark.parametrize("rows, columns", [(40, 120), (24, 80)])
def test_a_sized_terminal_shows_the_final_bar_once_below_the_notes(rows, columns):
    mid_run, rest = draw(rows, columns)
    assert BAR.search(mid_run), repr(mid_run)
    shown = [line for line in replay(mid_run + rest) if line]
    bars = [line for line in shown if BAR.search(line)]
    assert len(bars) == 1 and "20/20 [" in bars[0] and len(bars[0]) < columns, shown
    assert shown[-1] == bars[0] and shown[-3:-1] == ["epoch 1.00 step 20: top1 0.9", "bigbatch: a closing note"]
    # drawn once after the notes (tqdm.write redrew the finished bar after each note, then close drew it again:
    # twice in a log that shows each carriage return as a new line)
    after_notes = rest[rest.index("bigbatch: a closing note"):]
    assert len(BAR.findall(after_notes)) == 1, repr(after_notes)
    assert len(BAR.findall(rest[rest.index("epoch 1.00 step 20"):])) == 1, repr(rest)


@dataclass
class PtyRun:
    code: int
    output: list[tuple[float, str]]  # (seconds since the start, what arrived)

    def lines(self) -> list[str]:
        return replay("".join(text for _, text in self.output))

    def first(self, pattern: re.Pattern) -> float:
        """When the output so far first matched `pattern`."""
        seen = ""
        for at, text in self.output:
            seen += text
            if pattern.search(seen):
                return at
        return float("inf")


def run_in_pty(command: list[str], rows: int, columns: int, timeout_s: float) -> PtyRun:
    master, slave = sized_pty(rows, columns)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: the pty is its terminal (stdin, stdout, stderr)
        try:
            os.setsid()
            os.close(master)
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.chdir(REPO)
            os.execve(command[0], command, {**os.environ, **RAY_TEST_ENV})  # the same whether or not ray_cluster ran
        finally:
            os._exit(127)
    os.close(slave)
    output: list[tuple[float, str]] = []
    try:
        while time.monotonic() - started < timeout_s:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the pty's other end has closed it
                break
            if not chunk:
                break
            output.append((time.monotonic() - started, chunk.decode(errors="replace")))
        else:
            os.kill(pid, 9)
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return PtyRun(os.waitstatus_to_exitcode(status), output)


QUICKSTART_2_EPOCHS = [sys.executable, "-m", "bigbatch.cluster.cli", "train", "recipes/quickstart.yaml",
                       "--set", "train.epochs=2"]  # 2 x 22 = 44 steps, a log step every 5


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("rows, columns", [(0, 0), (40, 120)])
def test_the_quickstart_in_a_pty_shows_progress_before_its_last_line_and_the_final_bar_once(rows, columns,
                                                                                             tmp_path):
    out = tmp_path / "quickstart"
    run = run_in_pty([*QUICKSTART_2_EPOCHS, "--out", str(out)], rows, columns, timeout_s=400)
    lines = [line for line in run.lines() if line]
    assert run.code == 0, "\n".join(lines)
    assert lines[-1].startswith(f"bigbatch: finished {out} at step 44: top1 "), lines
    progress = run.first(BAR)
    finished = run.first(re.compile("bigbatch: finished"))
    first_eval = run.first(re.compile("epoch 1.00 step 22"))
    assert progress < first_eval < finished, (progress, first_eval, finished)  # it moved while the run did
    bars = [line for line in lines if BAR.search(line)]
    assert len(bars) == 1 and "44/44 [" in bars[0], lines  # the final bar, once
    assert len(bars[0]) == (columns or 80) - 1, bars[0]
    assert lines.index(bars[0]) == len(lines) - 2, lines  # below every note, above bigbatch's last line
    raw = "".join(text for _, text in run.output)
    assert len(BAR.findall(raw[raw.index("epoch 2.00 step 44"):])) == 1, raw[-2000:]  # drawn once after the notes
