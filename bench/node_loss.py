"""Wall time an elastic run loses to a node loss: from the SIGKILL of a node to the first step of the smaller group.

The scenario of tests/cluster/test_submit.py, with the recipe's default keys: a real 2-node local cluster
(`bigbatch cluster up --local`, one CPU per node), the smoke recipe as an elastic run asking 3 workers (it trains
on 2, one per node), the second node's process group and its Ray workers SIGKILLed once step 8 is recorded.
Each repetition runs with `cluster.watch_nodes: true` (the default: cluster/node_loss.py) and with `false`
(Ray Train's own timing), alternately, each on a fresh cluster; the figure is the time from the kill to the
first step record after it. Both sides run the same recipe, the same cluster and the same kill.

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

from tests.run_files import kill_node, records, wait_for_step  # noqa: E402

BIGBATCH = [str(Path(sys.executable).parent / "bigbatch")]
KEYS = ["model.name=mlp", "model.kwargs={}", "cluster.workers=3", "cluster.min_workers=1", "cluster.max_failures=2",
        "train.epochs=2", "train.max_steps=100", "bn.sync=none", "train.checkpoint_every_steps=6"]


def one_loss(state: Path, watch: bool) -> float:
    """Seconds from the kill to the first step record after it."""
    subprocess.run([*BIGBATCH, "cluster", "up", "--local", "--nodes", "2", "--cpus-per-node", "1", "--state-dir",
                    str(state)], check=True, capture_output=True)
    cluster = json.loads((state / "cluster.json").read_text())
    run = Path(cluster["storage"]) / "smoke"
    try:
        sets = [arg for key in [*KEYS, f"cluster.watch_nodes={str(watch).lower()}"] for arg in ("--set", key)]
        job = subprocess.run([*BIGBATCH, "submit", str(REPO / "recipes" / "smoke.yaml"), "--state-dir", str(state),
                              *sets], check=True, capture_output=True, text=True).stdout.splitlines()[0]
        wait_for_step(run, 8, timeout_s=180)
        ranks = [json.loads((run / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
        kill_node(cluster["process_groups"][1], [r["pid"] for r in ranks])
        killed = time.time()
        subprocess.run([*BIGBATCH, "jobs", "logs", job, "--state-dir", str(state), "--follow"], capture_output=True)
        after = [r for r in records(run) if "loss" in r and r["time"] > killed]
        if not after or after[0]["world_size"] != 1:
            raise SystemExit(f"node_loss: the run did not go on with 1 worker: {after[:1]}")
        return after[0]["time"] - killed
    finally:
        subprocess.run([*BIGBATCH, "cluster", "down", "--state-dir", str(state)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bb-node-loss-") as tmp:
        for i in range(args.runs):
            for watch in (True, False):
                times[watch].append(one_loss(Path(tmp) / f"c{i}-{watch}", watch))
                print(f"run {i + 1} watch_nodes={str(watch).lower():5}: {times[watch][-1]:5.1f} s", flush=True)
    print("\n| cluster.watch_nodes | kill -> first step of the smaller group (s) | median |")
    print("|---|---|---|")
    for watch in (True, False):
        print(f"| {str(watch).lower()} | {', '.join(f'{t:.1f}' for t in times[watch])} | "
              f"{statistics.median(times[watch]):.1f} |")
    print(f"\nratio (false / true, medians): {statistics.median(times[False]) / statistics.median(times[True]):.2f}x")


if __name__ == "__main__":
    main()
