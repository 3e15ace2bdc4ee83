"""Reading a run directory while a run writes it (tests that act mid-run)."""

import json
import time
from pathlib import Path


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl so far (a line still being written is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for_step(run_dir: Path, step: int, timeout_s: float = 120) -> None:
    """Until a step record at or past `step` appears."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(r.get("step", 0) >= step and "loss" in r for r in records(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"run in {run_dir} did not reach step {step} in {timeout_s} s")
