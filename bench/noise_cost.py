"""What does measuring the gradient noise scale cost in training throughput? (track.noise_scale on vs off)

Why: with `track.noise_scale: true` (the default) every log step measures one micro-batch's own gradient
and sends its squared norm as one more float in the step's existing all-reduce (MeasureNoiseScale,
trainer/step/noise_scale.py). Where that happens depends on how the step is split:

- DDP comm hook (`cluster.backend: torch`, 2 gloo ranks, `train.accumulation_steps: 1`): one micro-step per
  rank, so there is no local .grad to read; the hook squares each bucket of the rank's local gradient
  (MeasureNoiseScale.tap) before the bucket's all-reduce. This is the path that runs on nccl. Noise off runs
  the same comm hook without the tap (on gloo bigbatch always installs its hook; on nccl noise off falls back
  to DDP's built-in hook, which this CPU bench cannot time).
- one process accumulating 2 micro-steps (`cluster.backend: local`): the sum of squares of micro-step 0's
  .grad, after its backward.

Both sides of each pair are Trainer.fit() on the same recipe but for `track.noise_scale`: the same model
(resnet_small, seed 0), synthetic 3x32x32 data held in memory, global batch (2 ranks x 64, or 1 process x
64 x 2 micro-steps = 128), optimizer (bigbatch's SGD, momentum 0.9, the same parameter groups and weight
decay, warmup + cosine), steps and threads (1 per gloo rank, 2 for the one process: the machine's 2 cores
either way). Each setting runs at train.log_every_steps 1 (a measurement on every step: the worst case)
and 10 (the default).

How: bench/overhead.py's timing, imported from it - its optimizer step post-hook (StepClock) records the
time after every optimizer step; after --warmup untimed steps the steps are cut into 10-step windows (hook
to hook, so with log every 10 each window holds exactly one log step, with its measurement and metrics
record), and a run's images/s (global batch per second, rank 0's clock) is the median over its windows.
Per repeat, each setting runs on, off, on, off (--pairs 1: on, off); the gloo runs of a repeat share one
pair of spawned processes (one gloo group), the accumulating runs are in this process. Reported per
setting: median images/s on and off over all runs, ratio on/off of those medians, the spread (min-max over
repeats of the paired ratio run i on / run i off, and their median), the ratio over runs without the CPU
flag, and each run's CPU utilisation (process CPU time / (wall x threads), per rank for gloo), flagged
below 90 % as bench/overhead.py does (for gloo ranks some idle time is the wait in the all-reduce, so the
flag there also catches waiting, not only other processes). Left out: build, the final evaluation and
checkpoint (one-time costs). Exit status 0 whatever the ratio: a benchmark, not a test.

    .venv/bin/python bench/noise_cost.py [--steps 60] [--repeats 6] [--warmup 10] [--quick]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.overhead import QUIET, WINDOW, StepClock  # noqa: E402
from bench.overhead import RECIPE as OVERHEAD_RECIPE  # noqa: E402
from bench.publish import publish  # noqa: E402
from bigbatch.trainer.recipe import Recipe, load_recipe  # noqa: E402

RESULTS = REPO / "bench" / "results" / "noise_cost.txt"
PER_WORKER_BATCH = 64
GLOBAL_BATCH = 128
LOG_EVERY = (1, 10)



def make_recipe(directory: Path, *, gloo: bool, log_every: int, noise: bool, steps: int) -> Recipe:
    """gloo: 2 ranks x 64, one micro-step (the DDP comm hook path); else 1 process x 64 x 2 micro-steps. The
    recipe is bench/overhead.py's (the same model, data, optimizer and schedule) with these settings on top."""
    path = directory / f"{'gloo' if gloo else 'accum'}-log{log_every}-{'on' if noise else 'off'}.yaml"
    path.write_text(OVERHEAD_RECIPE.format(batch=PER_WORKER_BATCH, train_examples=steps * GLOBAL_BATCH, steps=steps,
                                           threads=1 if gloo else 2, log_every=log_every))
    return load_recipe(path, ["description=bench/noise_cost.py - track.noise_scale on vs off",
                              f"train.accumulation_steps={1 if gloo else 2}", f"cluster.workers={2 if gloo else 1}",
                              f"cluster.backend={'torch' if gloo else 'local'}", "track.wandb=disabled",
                              "track.tensorboard=false", f"track.noise_scale={str(noise).lower()}"])


def timed_fit(recipe: Recipe, run_dir: Path, collective, warmup: int) -> dict:
    from bigbatch.trainer.run.loop import Trainer

    trainer = Trainer(recipe, run_dir, collective)
    clock = StepClock()
    trainer.optimizer.register_step_post_hook(clock)
    summary = trainer.fit()
    result = clock.measure(warmup, GLOBAL_BATCH, recipe.train.threads)
    if recipe.track.noise_scale:  # the measurement ran: B_simple's summary exists
        result["measured"] = "gradient_noise_scale" in summary
    return result


def order(pairs: int) -> list[bool]:
    return [noise for _ in range(pairs) for noise in (True, False)]


def _gloo_runs(rank: int, world: int, scratch: str, out: str, repeat: int, steps: int, warmup: int,
               pairs: int) -> None:
    """In each spawned rank: for log every 1 and 10, on, off (x pairs); rank r's results to out/rank{r}.json."""
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    results, recipes = [], Path(scratch, f"rank{rank}")  # one recipe file per rank: no rank reads a half-written one
    recipes.mkdir(exist_ok=True)
    for log_every in LOG_EVERY:
        for k, noise in enumerate(order(pairs)):
            recipe = make_recipe(recipes, gloo=True, log_every=log_every, noise=noise, steps=steps)
            run_dir = Path(scratch) / f"gloo-{repeat}-{log_every}-{k}"
            results.append(timed_fit(recipe, run_dir, TorchDistributedCollective("cpu"), warmup))
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def run_gloo(scratch: Path, repeat: int, steps: int, warmup: int, pairs: int) -> list[tuple[str, bool, dict]]:
    from tests.gloo import spawn_gloo

    out = scratch / f"gloo-out-{repeat}"
    out.mkdir()
    spawn_gloo(_gloo_runs, 2, str(scratch), str(out), repeat, steps, warmup, pairs)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    rows, i = [], 0
    for log_every in LOG_EVERY:
        for noise in order(pairs):
            r0, r1 = ranks[0][i], ranks[1][i]
            rows.append((f"gloo log{log_every}", noise, {**r0, "cpu_util": min(r0["cpu_util"], r1["cpu_util"]),
                                                         "cpu_utils": [r0["cpu_util"], r1["cpu_util"]]}))
            i += 1
    return rows


def run_accumulating(scratch: Path, repeat: int, steps: int, warmup: int, pairs: int) -> list[tuple[str, bool, dict]]:
    from bigbatch.trainer.distributed.collective import LocalCollective

    rows = []
    for log_every in LOG_EVERY:
        for k, noise in enumerate(order(pairs)):
            recipe = make_recipe(scratch, gloo=False, log_every=log_every, noise=noise, steps=steps)
            result = timed_fit(recipe, scratch / f"accum-{repeat}-{log_every}-{k}", LocalCollective("cpu"), warmup)
            rows.append((f"accum2 log{log_every}", noise, {**result, "cpu_utils": [result["cpu_util"]]}))
    return rows


SETTINGS = {f"gloo log{n}": f"2 gloo ranks x 64, 1 micro-step (DDP comm hook), log every {n}" for n in LOG_EVERY}
SETTINGS |= {f"accum2 log{n}": f"1 process, 64 x 2 micro-steps (micro-step 0's .grad), log every {n}"
             for n in LOG_EVERY}


def report(rows: list[tuple[int, str, bool, dict]], args: argparse.Namespace, wall_s: float) -> str:
    lines = [f"Gradient noise scale cost in training throughput: track.noise_scale on vs off, resnet_small, synthetic "
             f"3x32x32, global batch {GLOBAL_BATCH}, {args.steps} steps per run (first {args.warmup} untimed), "
             f"{args.repeats} repeats x {args.pairs} on/off pair(s) per setting, CPU (2 cores), torch "
             f"{torch.__version__}", "",
             "Settings (each side the same model, data, optimizer, parameter groups, batch, steps, threads; only "
             "track.noise_scale differs):"]
    lines += [f"  {name:<13} {text}" for name, text in SETTINGS.items()]
    lines += ["  on: the measurement runs on every log step (gloo: the comm hook squares each local bucket before "
              "its all-reduce; accum2: sum of squares of micro-step 0's .grad) + 1 float in the step's all-reduce",
              "  off: the same step without it", "",
              f"{'setting':<14}{'rep':>4}{'noise':>6}{'images/s':>10}{'mean img/s':>12}{'cpu util':>14}",
              "-" * 60]
    for repeat, name, noise, r in rows:
        util = "/".join(f"{u:.0%}" for u in r["cpu_utils"])
        flag = "" if r["cpu_util"] >= QUIET else "  *"
        lines.append(f"{name:<14}{repeat:>4}{'on' if noise else 'off':>6}{r['images_per_s']:>10.1f}"
                     f"{r['mean_images_per_s']:>12.1f}{util:>14}{flag}")
    lines += ["-" * 60, "",
              "| setting | on images/s | off images/s | ratio on/off | paired ratios: median (min-max) | "
              "ratio, runs without * | on spread | off spread |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for name in SETTINGS:
        on = [(rep, r) for rep, n, noise, r in rows if n == name and noise]
        off = [(rep, r) for rep, n, noise, r in rows if n == name and not noise]
        med_on = statistics.median(r["images_per_s"] for _, r in on)
        med_off = statistics.median(r["images_per_s"] for _, r in off)
        paired = [a["images_per_s"] / b["images_per_s"] for (_, a), (_, b) in zip(on, off, strict=True)]
        quiet_on = [r["images_per_s"] for _, r in on if r["cpu_util"] >= QUIET]
        quiet_off = [r["images_per_s"] for _, r in off if r["cpu_util"] >= QUIET]
        quiet = (f"{statistics.median(quiet_on) / statistics.median(quiet_off):.3f} ({len(quiet_on)} on, "
                 f"{len(quiet_off)} off)" if quiet_on and quiet_off else "n/a")
        spread = [f"{min(r['images_per_s'] for _, r in side):.0f}-{max(r['images_per_s'] for _, r in side):.0f}"
                  for side in (on, off)]
        summary[name] = med_on / med_off
        lines.append(f"| {name} | {med_on:.1f} | {med_off:.1f} | {med_on / med_off:.3f} | "
                     f"{statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f}) | {quiet} | "
                     f"{spread[0]} | {spread[1]} |")
    not_measured = [n for _, n, noise, r in rows if noise and not r.get("measured", True)]
    lines += ["",
              f"images/s: global batch x steps / time, median over the run's {WINDOW}-step windows after the warm-up "
              "(optimizer step to optimizer step, rank 0's clock; with log every 10 each window holds one log step).",
              "  mean img/s: all timed steps as one interval. cpu util: process CPU time / (wall x threads) over the "
              "timed steps, rank 0/rank 1 for gloo;",
              f"  * = under {QUIET:.0%} (for gloo the lower rank): the run shared its cores or waited; its speed is "
              "less reliable. ratio on/off: of the medians over all runs (1.000 = no cost;",
              "  0.990 = 1 % fewer images/s with the noise scale on). paired ratios: on/off of the runs made next to "
              "each other, median and min-max over repeats (the spread).",
              "  on spread / off spread: min-max images/s over that side's runs.",
              "measurement check: " + ("every noise-on run logged B_simple's summary" if not not_measured else
                                       f"NO gradient_noise_scale in the summary of: {sorted(set(not_measured))}"),
              "ratio on/off by setting: " + ", ".join(f"{n} {v:.3f}" for n, v in summary.items()),
              f"benchmark wall time: {wall_s:.1f} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    parser.add_argument("--repeats", type=int, default=6, help="repeats of every setting's on/off pairs (default 6)")
    parser.add_argument("--pairs", type=int, default=1, help="on, off pairs per setting and repeat (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="leading steps left out of the timing (default 10)")
    parser.add_argument("--quick", action="store_true", help="--steps 40 --repeats 2 (a smoke run, ~1.5 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 40, 2
    if args.repeats < 1 or args.pairs < 1 or args.warmup < 0:
        parser.error("--repeats and --pairs must be >= 1, --warmup >= 0")
    if args.steps < args.warmup + WINDOW + 1:
        parser.error(f"--steps must be at least --warmup + {WINDOW + 1} (= {args.warmup + WINDOW + 1})")

    started = time.perf_counter()
    rows: list[tuple[int, str, bool, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bigbatch-noise-cost-") as tmp:
        scratch = Path(tmp)
        for repeat in range(1, args.repeats + 1):
            for run in (run_gloo, run_accumulating):
                for name, noise, result in run(scratch, repeat, args.steps, args.warmup, args.pairs):
                    rows.append((repeat, name, noise, result))
                    print(f"#{repeat} {name} noise {'on' if noise else 'off'}: {result['images_per_s']:.1f} images/s "
                          f"(cpu util {result['cpu_util']:.0%})", file=sys.stderr, flush=True)
    publish(report(rows, args, time.perf_counter() - started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
