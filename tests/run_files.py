"""Reading a run directory while a run writes it (tests that act mid-run)."""

import json
import os
import signal
import time
from pathlib import Path


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl so far (a line still being written is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for_step(run_dir: Path, step: int, timeout_s: float = 120, world_size: int | None = None,
                  after: float = 0.0) -> dict:
    """Until a step record at or past `step` appears (trained by `world_size` workers, and written after time
    `after`, if given); returns the first such."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for r in records(run_dir):
            if (r.get("step", 0) >= step and "loss" in r and world_size in (None, r.get("world_size"))
                    and r.get("time", 0.0) > after):
                return r
        time.sleep(0.05)
    raise AssertionError(f"run in {run_dir} did not reach step {step}"
                         f"{f' on {world_size} workers' if world_size else ''} in {timeout_s} s")


def launch_and_kill_rank_1(recipe, run_dir: Path, at_step: int, timeout_s: float,
                           signum: int = 9) -> tuple[dict, int]:
    """Launch `recipe` in a thread, send `signum` (SIGKILL by default) to rank 1's process once the run
    reaches `at_step`, wait for the launch to return; (its summary - or {"raised": the exception} - and the
    signalled pid)."""
    import os
    import threading

    from bigbatch.cluster.launch import launch

    outcome: dict = {}

    def run() -> None:
        try:
            outcome.update(summary=launch(recipe, run_dir))
        except Exception as e:
            outcome.update(summary={"raised": e})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for_step(run_dir, at_step)
    victim = json.loads((Path(run_dir) / "workers" / "rank_1.json").read_text())["pid"]
    os.kill(victim, signum)
    thread.join(timeout=timeout_s)
    return outcome["summary"], victim


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a worker's data loader workers), from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        # per thread: a Ray worker forks its loader workers from the thread that runs the training function
        kids = [int(c) for task in Path(f"/proc/{parent}/task").glob("*") if (task / "children").exists()
                for c in (task / "children").read_text().split()]
        found += kids
        todo += kids
    return found


def trace_lines(run_dir: Path, rank: int = 0) -> list[str]:
    """The micro-batches rank `rank` has trained on so far (BIGBATCH_TRACE_LABELS)."""
    trace = Path(run_dir) / "trace" / f"labels.rank-{rank}.txt"
    return trace.read_text().splitlines() if trace.exists() else []


def kill_node(pgid: int, worker_pids: list[int]) -> list[int]:
    """SIGKILL a local node at once: its process group (ray start, raylet, agents) and the Ray workers its raylet
    started, which run in sessions of their own and would otherwise train on for a moment after their raylet
    died (a fast run could even finish first). Returns the worker pids it killed (those on that node)."""
    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    killed = []
    for pid in worker_pids:
        try:
            if os.getpgid(parent(pid)) == pgid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    os.killpg(pgid, signal.SIGKILL)
    return killed
