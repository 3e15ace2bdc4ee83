"""A run's history as metrics.jsonl holds it: reading the records back and what they say about the run's
course (its restarts and resizes). Light: the training loop's summary reads it; plots live in report.py."""

import json
from pathlib import Path

from bigbatch.trainer.errors import RecipeError


def metrics_path(run_dir: Path) -> Path:
    """RUN_DIR/metrics.jsonl, or RecipeError naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: run directory not found (expected a directory written by "
                          f"`bigbatch train`, holding metrics.jsonl)")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RecipeError(f"{run_dir}: no metrics.jsonl in it; expected a run directory written by "
                          f"`bigbatch train`")
    return path


def read_history(path: Path) -> list[dict]:
    """Every record of a metrics.jsonl, in order; a line that is not a JSON object is a RecipeError naming it.

    An unfinished last line (no newline yet, not parseable: the run is writing it) is left out.
    """
    records = []
    raws = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(raws, 1):
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if number == len(raws):
                break  # being written
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise RecipeError(f"{path}, line {number}: not a JSON record ({reason})") from None
        if not isinstance(record, dict):
            raise RecipeError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def step_records(records: list[dict]) -> list[dict]:
    return [r for r in records if "event" not in r and "loss" in r and "step" in r]


def eval_records(records: list[dict]) -> list[dict]:
    return [r for r in records if "event" not in r and "top1" in r]


def wall_time(records: list[dict]) -> float:
    """Seconds summed over (re)starts: from each start event to the last record before the next start."""
    total, start, last = 0.0, None, None
    for r in records:
        t = r.get("time")
        if not isinstance(t, int | float):
            continue
        if r.get("event") == "start":
            if start is not None:
                total += last - start
            start = last = t
        elif start is not None:
            last = t
    if start is not None:
        total += last - start
    return total


def resizes(records: list[dict]) -> list[dict]:
    """Each change of world size between a run's (re)starts: {step, from, to, why}. An elastic group that Ray
    restarted with the workers it could place, or a resume on another machine, shows here; the global batch
    stays the recipe's (the start records carry it)."""
    out, previous, cause = [], None, ""
    for record in records:
        if record.get("event") in ("attempt_failed", "interrupted"):
            cause = (f"step {record.get('step', '?')}: "
                     + (record.get("error") or f"stopped by signal {record.get('signal', '?')}") + "; ")
        if record.get("event") != "start" or not isinstance(record.get("world_size"), int):
            continue
        if previous is not None and record["world_size"] != previous:
            out.append({"step": record.get("step", 0), "from": previous, "to": record["world_size"],
                        "why": f"{cause}resumed from {record.get('resumed_from') or 'a checkpoint'} with "
                               f"{record['world_size']} workers"})
        previous, cause = record["world_size"], ""
    return out
