"""Wall time an elastic run loses to a node loss, and to growing back when a node joins.

The scenario of tests/cluster/test_submit.py, with the recipe's default keys: a real 2-node local cluster
(`bigbatch cluster up --local`, one CPU per node), the smoke recipe as a long elastic run asking 3 workers (it
trains on 2, one per node). Once step 8 is recorded, the second node's process group and its Ray workers are
SIGKILLed: the figure is the time from the kill to the first step record on 1 worker. Then a node joins
(`bigbatch cluster add-node`): the figure is the time from its start to the first step record on 2 workers, and
the steps the grown group trained again. Each repetition runs with `cluster.watch_nodes: true` (the default:
cluster/node_loss.py) and with `false` (Ray Train's own timing: its resize monitor looks every 60 s and restarts
from the last reported checkpoint, one every 6 steps here), alternately, each on a fresh cluster. Both sides run
the same recipe, the same cluster, the same kill and the same join.

    .venv/bin/python bench/node_loss.py --runs 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.publish import publish  # noqa: E402
from tests.run_files import kill_node, records, wait_for_step  # noqa: E402

BIGBATCH = [str(Path(sys.executable).parent / "bigbatch")]
KEYS = ["model.name=mlp", "model.kwargs={}", "cluster.workers=3", "cluster.min_workers=1", "cluster.max_failures=4",
        "train.epochs=1000", "train.max_steps=100000", "bn.sync=none", "train.checkpoint_every_steps=6",
        "train.log_every_steps=1"]


def one_cycle(state: Path, watch: bool) -> tuple[float, float, int]:
    """(seconds from the kill to a step on 1 worker, seconds from the join to a step on 2, steps redone)."""
    subprocess.run([*BIGBATCH, "cluster", "up", "--local", "--nodes", "2", "--cpus-per-node", "1", "--state-dir",
                    str(state)], check=True, capture_output=True)
    cluster = json.loads((state / "cluster.json").read_text())
    run = Path(cluster["storage"]) / "smoke"
    try:
        sets = [arg for key in [*KEYS, f"cluster.watch_nodes={str(watch).lower()}"] for arg in ("--set", key)]
        job = subprocess.run([*BIGBATCH, "submit", str(REPO / "recipes" / "smoke.yaml"), "--state-dir", str(state),
                              *sets], check=True, capture_output=True, text=True).stdout.splitlines()[0]
        wait_for_step(run, 8, timeout_s=180, world_size=2)
        ranks = [json.loads((run / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        kill_node(cluster["process_groups"][1], [r["pid"] for r in ranks])
        killed = time.time()
        lost = wait_for_step(run, 0, 240, world_size=1, after=killed)["time"] - killed
        joined = time.time()
        subprocess.run([*BIGBATCH, "cluster", "add-node", "--state-dir", str(state)], check=True, capture_output=True)
        grown = wait_for_step(run, 0, 240, world_size=2, after=joined)
        before = max(r["step"] for r in records(run) if "loss" in r and r["time"] < grown["time"]
                     and r.get("world_size") == 1)
        subprocess.run([*BIGBATCH, "jobs", "stop", job, "--state-dir", str(state)], capture_output=True)
        subprocess.run([*BIGBATCH, "jobs", "logs", job, "--state-dir", str(state), "--follow"], capture_output=True)
        return lost, grown["time"] - joined, max(before - (grown["step"] - 1), 0)
    finally:
        subprocess.run([*BIGBATCH, "cluster", "down", "--state-dir", str(state)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cycles: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bb-node-loss-") as tmp:
        for i in range(args.runs):
            for watch in (True, False):
                cycles[watch].append(one_cycle(Path(tmp) / f"c{i}-{watch}", watch))
                lost, grew, redone = cycles[watch][-1]
                print(f"run {i + 1} watch_nodes={str(watch).lower():5}: node loss {lost:5.1f} s, grow back "
                      f"{grew:5.1f} s, {redone} steps redone", flush=True)
    lines = ["| cluster.watch_nodes | kill -> first step on 1 worker (s) | median | join -> first step on 2 "
             "workers (s) | median | steps redone by the grow |", "|---|---|---|---|---|---|"]
    for watch in (True, False):
        lost, grew, redone = zip(*cycles[watch], strict=True)
        lines.append(f"| {str(watch).lower()} | {', '.join(f'{t:.1f}' for t in lost)} | {statistics.median(lost):.1f}"
                     f" | {', '.join(f'{t:.1f}' for t in grew)} | {statistics.median(grew):.1f} | "
                     f"{', '.join(map(str, redone))} |")
    ratios = [statistics.median(c[k] for c in cycles[False]) / statistics.median(c[k] for c in cycles[True])
              for k in (0, 1)]
    publish("\n".join([*lines, "", f"ratio (false / true, medians): node loss {ratios[0]:.2f}x, grow back "
                                    f"{ratios[1]:.2f}x"]), REPO / "bench" / "results" / "node_loss.txt")


if __name__ == "__main__":
    main()
