"""`bigbatch report RUN_DIR` and `bigbatch runs [DIR]`: look at runs after (or while) they train.

Both only read a run directory's metrics.jsonl (and recipe.yaml); `report` writes RUN_DIR/report/.
matplotlib is imported only when a report is written, so `bigbatch --help` stays fast.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.records.report import (
    STALE_AFTER_S,  # light: matplotlib is imported only inside write_report
)


def add_commands(sub) -> dict:
    """Register `report` and `runs` on `sub`; return {command: handler}."""
    report = sub.add_parser("report", help="write RUN_DIR/report/: report.md and plots of lr, loss, top-1 "
                                           "and images/s, from RUN_DIR/metrics.jsonl")
    report.add_argument("run_dir", help="run directory written by `bigbatch train` (holds metrics.jsonl)")
    runs = sub.add_parser("runs", help="list the runs under DIR: status, steps, best top-1, wall time, start")
    runs.add_argument("directory", nargs="?", default="runs",
                      help="where to look, down to 3 levels (default: runs); may itself be a run directory")
    runs.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    runs.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                      help="a run whose last event is a start is 'running' if metrics.jsonl changed within "
                           f"this many seconds, else 'lost' (default {STALE_AFTER_S:g})")
    dashboard = sub.add_parser("dashboard", help="serve TensorBoard over every run under DIR on this machine: "
                                                 "the local dashboard (no account, no network)")
    dashboard.add_argument("directory", nargs="?", default="runs", help="where the runs are (default: runs)")
    dashboard.add_argument("--port", type=int, default=6006, help="default 6006")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                                "the network)")
    return {"report": cmd_report, "runs": cmd_runs, "dashboard": cmd_dashboard}


def cmd_report(args: argparse.Namespace) -> int:
    from bigbatch.trainer.records.report import BATCH_PLOT, PLOTS, write_report

    path = write_report(Path(args.run_dir))
    print(path)
    for name in (*PLOTS, BATCH_PLOT):  # batch.png: adaptive runs only
        if (path.parent / name).exists():
            print(path.parent / name)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from bigbatch.trainer.records.runs import format_runs, list_runs

    if not math.isfinite(args.stale_after) or args.stale_after < 0:
        raise RecipeError(f"--stale-after: must be a number of seconds >= 0, got {args.stale_after:g}")
    rows = list_runs(Path(args.directory), stale_after_s=args.stale_after)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print(f"bigbatch: no run directories (holding metrics.jsonl) under {args.directory}", file=sys.stderr)
    else:
        print(format_runs(rows))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """TensorBoard over DIR until Ctrl-C / SIGTERM; runs started later appear on their own (it rescans)."""
    import signal
    import threading

    directory = Path(args.directory)
    if not directory.is_dir():
        raise RecipeError(f"{directory}: no such directory (expected the runs' directory, e.g. runs/)")
    if not 0 < args.port < 65536:
        raise RecipeError(f"--port: expected 1-65535, got {args.port}")
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(directory), "--host", args.host, "--port", str(args.port),
                          "--reload_interval", "5", "--load_fast", "true"])  # explicit: no notice about it
    try:
        url = board.launch()
    except program.TensorBoardServerException as e:  # port taken, bad host
        raise RecipeError(f"--port/--host: {e.msg}") from None
    print(f"bigbatch: dashboard of the runs under {directory} at {url} (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    return 0
