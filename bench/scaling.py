"""Data-parallel scaling through Ray Train, and the cost of cross-replica BatchNorm, in one run.

Why: on 2 cores, 2 workers with 1 thread each should train close to twice as
fast as 1 worker with 1 thread at the same per-worker batch; what is lost goes
to the gradient all-reduce (gloo) and the per-step collectives. SyncBN adds one
all-reduce per BatchNorm layer forward and one backward.

How: one embedded Ray instance; runs of the same synthetic recipe (resnet_small,
3x32x32, per-worker batch `--batch-size`, `train.threads: 1`) are interleaved
(1 worker, 2 workers, 2 workers + SyncBN, repeated). A run's throughput is the
median images/s of its metrics.jsonl step records after the first. Scaling
efficiency = images/s(2 workers) / (2 x images/s(1 worker)); SyncBN overhead =
step time with SyncBN / step time with local BN - 1. On a machine with a GPU
it also measures one GPU worker (bf16 autocast, channels_last) against one CPU
worker in the same run. Results go to bench/results/scaling.txt.

Ray's own cost: the same recipe as a plain DDP script under `torchrun` with 1
and 2 processes (bench/plain_ddp.py: same model, data, batch, threads,
optimizer and parameter groups, throughput measured the same way), interleaved
with the Ray runs. bigbatch on Ray / torchrun at 2 workers is what Ray and
bigbatch's loop cost together (target >= 0.95); torchrun's own 2 / (2 x 1) is
what two processes on this machine allow without either.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = """
seed: 0
model: {name: resnet_small}
data: {name: synthetic, batch_size: %(batch)d, train_examples: %(examples)d, val_examples: 64, image_size: 32}
train: {epochs: 1, max_steps: %(steps)d, eval_every_epochs: 0, log_every_steps: 5, threads: 1, progress_bar: false}
optim: {name: sgd, base_lr: 0.1, warmup_epochs: 0}
cluster: {workers: 1, backend: torch}
"""


def torchrun(recipe_path: Path, processes: int, out: Path) -> float:
    """bench/plain_ddp.py under torchrun (rendezvous on 127.0.0.1); its images/s."""
    from bigbatch.cluster.local_cluster import free_ports

    port = free_ports(1)[0]
    runner = Path(sys.executable).with_name("torchrun")
    subprocess.run([str(runner), "--nnodes", "1", f"--nproc-per-node={processes}", "--master-addr", "127.0.0.1",
                    "--master-port", str(port), str(REPO / "bench" / "plain_ddp.py"), str(recipe_path), str(out)],
                   check=True, cwd=REPO, capture_output=True, text=True)
    return json.loads(out.read_text())["images_per_s"]


def throughput(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if "loss" in r][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from bigbatch.cluster.launch import launch
    from bigbatch.trainer.recipe import load_recipe

    work = Path(tempfile.mkdtemp(prefix="bigbatch-scaling-"))
    recipe_path = work / "recipe.yaml"
    examples = args.batch_size * 2 * args.steps + 64
    recipe_path.write_text(textwrap.dedent(RECIPE % {"batch": args.batch_size, "examples": examples,
                                                     "steps": args.steps}))
    variants = {"1 worker": ["cluster.workers=1"], "2 workers": ["cluster.workers=2"],
                "2 workers + SyncBN": ["cluster.workers=2", "bn.sync=all"]}
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        variants["1 GPU worker (bf16, NHWC)"] = ["cluster.workers=1", "cluster.gpus_per_worker=1",
                                                 "train.precision=bf16", "train.channels_last=true"]
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    plain = {"torchrun, 1 process": 1, "torchrun, 2 processes": 2}
    rates: dict[str, list[float]] = {name: [] for name in [*variants, *plain]}
    try:
        for repeat in range(args.repeats):
            for name, overrides in variants.items():
                run_dir = work / f"{name.replace(' ', '_').replace('+', 'p')}-{repeat}"
                launch(load_recipe(recipe_path, overrides), run_dir)
                rates[name].append(throughput(run_dir))
            for name, processes in plain.items():
                rates[name].append(torchrun(recipe_path, processes, work / f"plain-{processes}-{repeat}.json"))
    finally:
        ray.shutdown()
    med = {name: statistics.median(v) for name, v in rates.items()}
    efficiency = med["2 workers"] / (2 * med["1 worker"])
    syncbn_overhead = med["2 workers"] / med["2 workers + SyncBN"] - 1
    lines = [f"Ray Train scaling: resnet_small, synthetic 3x32x32, per-worker batch {args.batch_size}, "
             f"1 thread per worker, {args.steps} steps, median of {args.repeats} interleaved runs", "",
             f"{'run':22} {'images/s':>10}   runs", "-" * 50]
    lines += [f"{name:22} {med[name]:10.1f}   {', '.join(f'{r:.0f}' for r in rates[name])}" for name in rates]
    ray_cost = med["2 workers"] / med["torchrun, 2 processes"]
    plain_efficiency = med["torchrun, 2 processes"] / (2 * med["torchrun, 1 process"])
    lines += ["", f"bigbatch on embedded Ray / plain torchrun, 2 workers: {ray_cost:.3f} (target >= 0.95)",
              f"bigbatch / plain torchrun, 1 worker: {med['1 worker'] / med['torchrun, 1 process']:.3f}",
              f"plain torchrun 2 processes / (2 x 1 process): {plain_efficiency:.3f} (what 2 processes on this "
              "machine allow without Ray or bigbatch)",
              f"scaling efficiency 2 workers / (2 x 1 worker): {efficiency:.3f} (target >= 0.85)",
              f"SyncBN overhead (step time, 2 workers): {syncbn_overhead * 100:.1f}% (target <= 15%)",
              f"command: python bench/scaling.py --batch-size {args.batch_size} --steps {args.steps} "
              f"--repeats {args.repeats}"]
    if gpus:
        lines.append(f"1 GPU worker / 1 CPU worker: {med['1 GPU worker (bf16, NHWC)'] / med['1 worker']:.1f}x "
                     f"({torch.cuda.get_device_name(0)})")
    text = "\n".join(lines)
    print(text)
    out = REPO / "bench" / "results" / "scaling.txt"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
