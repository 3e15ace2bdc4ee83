"""`bigbatch runs DIR`: every run directory under DIR with its status, steps, best top-1 and wall time.

A run directory is any directory holding metrics.jsonl, DIR itself or one up to MAX_DEPTH levels below it.
Status and wall time follow trainer/records/report.py's `summarize`, so `runs` and `report` always agree.
"""

import os
from pathlib import Path

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.records.report import STALE_AFTER_S, hms, local_time, read_history, summarize

MAX_DEPTH = 3


def find_run_dirs(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Directories under root (root included, down to max_depth levels) that hold metrics.jsonl, sorted."""
    root = Path(root)
    found = []
    for here, dirs, files in os.walk(root):
        path = Path(here)
        if "metrics.jsonl" in files:
            found.append(path)
        if len(path.relative_to(root).parts) >= max_depth:
            dirs.clear()
        dirs.sort()
    return sorted(found)


def list_runs(root: Path, stale_after_s: float = STALE_AFTER_S) -> list[dict]:
    """One row per run directory under root, newest first: name (path relative to root, "." for root itself),
    path, run_id, status (finished / interrupted / failed / running / lost), steps_done, steps_total,
    best_top1 (None before the first evaluation), duration_s (wall time summed over (re)starts), started (unix
    time of the first record; None for an empty metrics.jsonl) and eta_s (a running run's seconds left at its
    current pace, else None)."""
    root = Path(root)
    if not root.is_dir():
        raise RecipeError(f"{root}: directory not found (expected a directory of run directories, "
                          f"each holding metrics.jsonl)")
    rows = []
    for run_dir in find_run_dirs(root):
        path = run_dir / "metrics.jsonl"
        s = summarize(read_history(path), path.stat().st_mtime, stale_after_s)
        name = run_dir.relative_to(root).as_posix()
        rows.append({"name": name, "path": str(run_dir), "run_id": s["run_id"],
                     "status": s["status"], "steps_done": s["steps_done"], "steps_total": s["steps_total"],
                     "best_top1": s["best_top1"], "duration_s": s["duration_s"], "started": s["started"],
                     "eta_s": s["eta_s"]})
    return _newest_first(rows)


def _newest_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["started"] is not None, r["started"] or 0.0, r["name"]),
                  reverse=True)


def format_runs(rows: list[dict]) -> str:
    """A plain aligned table, newest first: run, status, steps, best top1, duration (h:mm:ss), started, and
    ETA (h:mm:ss) for running runs."""
    header = ("run", "status", "steps", "best top1", "duration", "started", "eta")
    table = [header] + [
        (r["name"], r["status"], f"{r['steps_done']}/{'?' if r['steps_total'] is None else r['steps_total']}",
         "-" if r["best_top1"] is None else f"{r['best_top1']:.4f}", hms(r["duration_s"]),
         "-" if r["started"] is None else local_time(r["started"]),
         "-" if r.get("eta_s") is None else hms(r["eta_s"]))
        for r in _newest_first(rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {2, 3, 4, 6}  # numbers
    lines = []
    for row in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
