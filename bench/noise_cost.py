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

--policy (issue 31: what the adaptive batch policy's own work costs; AdaptDL's backward hooks cost its users
2.6x) times another pair, the same settings, timing and report, results to bench/results/adaptive_cost.txt:
on = `train.batch_policy: adaptive` pinned to the recipe's global batch (train.adaptive.min_batch = max_batch
= 128, so the batch and the work never change) that still does all its work: every rank measures the noise
scale on log steps (the DDP comm-hook tap registered always), the AdaScale gain every step, and a look every
train.adaptive.every_steps 10 (min_readings 1, and a declared step-time model, assume_step_s 0.01 and
assume_example_s 0.0001, so each look predicts the goodputs and decides); off = `train.batch_policy: fixed`
with track.noise_scale on (the default). The gain at G = G0 is exactly 1, so both sides take the same lr: the
bench checks that the logged lr (and the adaptive run's adascale_gain, 1.0) agree at every logged step of each
pair, and counts the adaptive runs' decisions; a difference in the lr stops it (AssertionError).

    .venv/bin/python bench/noise_cost.py [--steps 60] [--repeats 6] [--warmup 10] [--quick] [--policy]
"""

import argparse
import dataclasses
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
ADAPTIVE_RESULTS = REPO / "bench" / "results" / "adaptive_cost.txt"
PER_WORKER_BATCH = 64
GLOBAL_BATCH = 128
LOG_EVERY = (1, 10)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What "on" and "off" mean: the recipe overrides of each side (on top of the shared recipe, which is the
    same for both), and the words the report uses for them."""

    name: str  # the mode (COMPARISONS' key)
    title: str  # the report's first line, before the recipe's figures
    description: str  # the runs' recipe description
    on: tuple[str, ...]  # overrides of the "on" side
    off: tuple[str, ...]
    differs: str  # what differs between the sides, for the report
    sides: tuple[str, ...]  # the report's lines saying what on and off are
    column: str  # the per-run table's column of the side (6 characters at most)
    labels: tuple[str, str]  # its values for on, off
    cost_of: str  # "0.990 = 1 % fewer images/s {cost_of}"
    measured: str  # the measurement check's line when every run that measured logged B_simple's summary
    same_lr: bool  # check that both sides of a pair logged the same lr at the same steps (and count the looks)
    results: Path


NOISE = Comparison(
    name="noise", title="Gradient noise scale cost in training throughput: track.noise_scale on vs off",
    description="bench/noise_cost.py - track.noise_scale on vs off",
    on=("track.noise_scale=true",), off=("track.noise_scale=false",), differs="only track.noise_scale differs",
    sides=("  on: the measurement runs on every log step (gloo: the comm hook squares each local bucket before its "
           "all-reduce; accum2: sum of squares of micro-step 0's .grad) + 1 float in the step's all-reduce",
           "  off: the same step without it"),
    column="noise", labels=("on", "off"), cost_of="with the noise scale on",
    measured="every noise-on run logged B_simple's summary", same_lr=False, results=RESULTS)

ADAPTIVE = (f"train.adaptive.min_batch={GLOBAL_BATCH}", f"train.adaptive.max_batch={GLOBAL_BATCH}",
            "train.adaptive.every_steps=10", "train.adaptive.min_readings=1", "train.adaptive.assume_step_s=0.01",
            "train.adaptive.assume_example_s=0.0001")
POLICY = Comparison(
    name="policy", title="Adaptive batch policy cost in training throughput: train.batch_policy adaptive (pinned to "
                         "the global batch) vs fixed",
    description="bench/noise_cost.py --policy - train.batch_policy adaptive vs fixed",
    on=("track.noise_scale=true", "train.batch_policy=adaptive", *ADAPTIVE),
    off=("track.noise_scale=true", "train.batch_policy=fixed"),
    differs="only train.batch_policy and its train.adaptive settings differ; track.noise_scale is on for both",
    sides=("  on:  " + " ".join(("train.batch_policy=adaptive", *ADAPTIVE)),
           f"       min_batch = max_batch = the global batch {GLOBAL_BATCH}: the batch and the work never change, but "
           "the policy does all its work: every rank measures the noise scale on log steps (gloo: the DDP comm-hook "
           "tap is registered always),",
           "       the AdaScale gain every step (exactly 1 at G = G0: the lr is the fixed run's), and at the first log "
           "step at least 10 steps after its last look it predicts the goodputs (the declared step-time model) and "
           "decides",
           "  off: train.batch_policy=fixed, track.noise_scale=true (today's default): the noise scale measured on "
           "log steps as in bench/results/noise_cost.txt's \"on\" (the averages kept by rank 0), no gain, no looks"),
    column="side", labels=("adapt", "fixed"), cost_of="with the adaptive policy on",
    measured="every run (both sides measure) logged B_simple's summary", same_lr=True, results=ADAPTIVE_RESULTS)

COMPARISONS = {c.name: c for c in (NOISE, POLICY)}


def make_recipe(directory: Path, *, gloo: bool, log_every: int, on: bool, steps: int,
                comparison: Comparison = NOISE) -> Recipe:
    """gloo: 2 ranks x 64, one micro-step (the DDP comm hook path); else 1 process x 64 x 2 micro-steps. The
    recipe is bench/overhead.py's (the same model, data, optimizer and schedule) with these settings and the
    comparison's side on top."""
    path = directory / f"{'gloo' if gloo else 'accum'}-log{log_every}-{'on' if on else 'off'}.yaml"
    path.write_text(OVERHEAD_RECIPE.format(batch=PER_WORKER_BATCH, train_examples=steps * GLOBAL_BATCH, steps=steps,
                                           threads=1 if gloo else 2, log_every=log_every))
    return load_recipe(path, [f"description={comparison.description}",
                              f"train.accumulation_steps={1 if gloo else 2}", f"cluster.workers={2 if gloo else 1}",
                              f"cluster.backend={'torch' if gloo else 'local'}", "track.wandb=disabled",
                              "track.tensorboard=false", *(comparison.on if on else comparison.off)])


def count_looks(pace) -> list[int]:
    """The steps at which the adaptive pace decided (predicted the goodputs and chose a batch): a counter around
    its `look`, one Python call per log step."""
    decided, look = [], pace.look

    def counted(step: int, workers: dict):
        before = pace.last_look
        change = look(step, workers)
        if pace.last_look != before:
            decided.append(step)
        return change

    pace.look = counted
    return decided


def timed_fit(recipe: Recipe, run_dir: Path, collective, warmup: int) -> dict:
    from bigbatch.trainer.records.history import read_history, step_records
    from bigbatch.trainer.run.loop import Trainer

    trainer = Trainer(recipe, run_dir, collective)
    clock = StepClock()
    trainer.optimizer.register_step_post_hook(clock)
    looks = count_looks(trainer.pace) if trainer.pace.adaptive else None
    summary = trainer.fit()
    result = clock.measure(warmup, GLOBAL_BATCH, recipe.train.threads)
    if recipe.track.noise_scale:  # the measurement ran: B_simple's summary exists
        result["measured"] = "gradient_noise_scale" in summary
    if looks is not None:
        result["looks"] = looks
    if trainer.is_main:  # rank 0 wrote the step records: the lr (and an adaptive run's gain) of every log step
        records = step_records(read_history(Path(run_dir) / "metrics.jsonl"))
        result["lrs"] = [[r["step"], r["lr"], r.get("adascale_gain")] for r in records]
    return result


def order(pairs: int) -> list[bool]:
    return [on for _ in range(pairs) for on in (True, False)]


def _gloo_runs(rank: int, world: int, scratch: str, out: str, repeat: int, steps: int, warmup: int,
               pairs: int, comparison: str) -> None:
    """In each spawned rank: for log every 1 and 10, on, off (x pairs); rank r's results to out/rank{r}.json."""
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    results, recipes = [], Path(scratch, f"rank{rank}")  # one recipe file per rank: no rank reads a half-written one
    recipes.mkdir(exist_ok=True)
    for log_every in LOG_EVERY:
        for k, on in enumerate(order(pairs)):
            recipe = make_recipe(recipes, gloo=True, log_every=log_every, on=on, steps=steps,
                                 comparison=COMPARISONS[comparison])
            run_dir = Path(scratch) / f"gloo-{repeat}-{log_every}-{k}"
            results.append(timed_fit(recipe, run_dir, TorchDistributedCollective("cpu"), warmup))
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def run_gloo(scratch: Path, repeat: int, steps: int, warmup: int, pairs: int,
             comparison: Comparison = NOISE) -> list[tuple[str, bool, dict]]:
    from tests.gloo import spawn_gloo

    out = scratch / f"gloo-out-{repeat}"
    out.mkdir()
    spawn_gloo(_gloo_runs, 2, str(scratch), str(out), repeat, steps, warmup, pairs, comparison.name)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    rows, i = [], 0
    for log_every in LOG_EVERY:
        for on in order(pairs):
            r0, r1 = ranks[0][i], ranks[1][i]
            rows.append((f"gloo log{log_every}", on, {**r0, "cpu_util": min(r0["cpu_util"], r1["cpu_util"]),
                                                      "cpu_utils": [r0["cpu_util"], r1["cpu_util"]]}))
            i += 1
    return rows


def run_accumulating(scratch: Path, repeat: int, steps: int, warmup: int, pairs: int,
                     comparison: Comparison = NOISE) -> list[tuple[str, bool, dict]]:
    from bigbatch.trainer.distributed.collective import LocalCollective

    rows = []
    for log_every in LOG_EVERY:
        for k, on in enumerate(order(pairs)):
            recipe = make_recipe(scratch, gloo=False, log_every=log_every, on=on, steps=steps, comparison=comparison)
            result = timed_fit(recipe, scratch / f"accum-{repeat}-{log_every}-{k}", LocalCollective("cpu"), warmup)
            rows.append((f"accum2 log{log_every}", on, {**result, "cpu_utils": [result["cpu_util"]]}))
    return rows


def lr_differences(rows: list[tuple[int, str, bool, dict]]) -> list[str]:
    """Where the k-th on run of a (repeat, setting) and its k-th off run logged a different lr, at different
    steps, or the on run an AdaScale gain other than 1.0: empty when every pair took the same lr."""
    problems, sides = [], {}
    for repeat, name, on, r in rows:
        sides.setdefault((repeat, name), ([], []))[0 if on else 1].append(r)
    for (repeat, name), (ons, offs) in sides.items():
        for k, (a, b) in enumerate(zip(ons, offs, strict=True)):
            on_lr, off_lr = {s: lr for s, lr, _ in a["lrs"]}, {s: lr for s, lr, _ in b["lrs"]}
            where = f"repeat {repeat} {name} pair {k + 1}"
            if on_lr.keys() != off_lr.keys() or not on_lr:
                problems.append(f"{where}: logged steps differ ({len(on_lr)} on, {len(off_lr)} off)")
            elif bad := [s for s in on_lr if on_lr[s] != off_lr[s]]:
                problems.append(f"{where}: lr differs at {len(bad)} step(s), first step {bad[0]}: "
                                f"{on_lr[bad[0]]!r} on, {off_lr[bad[0]]!r} off")
            if gains := [(s, g) for s, _, g in a["lrs"] if g != 1.0]:
                problems.append(f"{where}: adascale_gain {gains[0][1]!r} at step {gains[0][0]} (expected 1.0)")
    return problems


SETTINGS = {f"gloo log{n}": f"2 gloo ranks x 64, 1 micro-step (DDP comm hook), log every {n}" for n in LOG_EVERY}
SETTINGS |= {f"accum2 log{n}": f"1 process, 64 x 2 micro-steps (micro-step 0's .grad), log every {n}"
             for n in LOG_EVERY}


def report(rows: list[tuple[int, str, bool, dict]], args: argparse.Namespace, wall_s: float,
           comparison: Comparison = NOISE) -> str:
    lines = [f"{comparison.title}, resnet_small, synthetic "
             f"3x32x32, global batch {GLOBAL_BATCH}, {args.steps} steps per run (first {args.warmup} untimed), "
             f"{args.repeats} repeats x {args.pairs} on/off pair(s) per setting, CPU (2 cores), torch "
             f"{torch.__version__}", "",
             "Settings (each side the same model, data, optimizer, parameter groups, batch, steps, threads; "
             f"{comparison.differs}):"]
    lines += [f"  {name:<13} {text}" for name, text in SETTINGS.items()]
    lines += [*comparison.sides, "",
              f"{'setting':<14}{'rep':>4}{comparison.column:>6}{'images/s':>10}{'mean img/s':>12}{'cpu util':>14}",
              "-" * 60]
    for repeat, name, on, r in rows:
        util = "/".join(f"{u:.0%}" for u in r["cpu_utils"])
        flag = "" if r["cpu_util"] >= QUIET else "  *"
        lines.append(f"{name:<14}{repeat:>4}{comparison.labels[0] if on else comparison.labels[1]:>6}"
                     f"{r['images_per_s']:>10.1f}{r['mean_images_per_s']:>12.1f}{util:>14}{flag}")
    lines += ["-" * 60, "",
              "| setting | on images/s | off images/s | ratio on/off | paired ratios: median (min-max) | "
              "ratio, runs without * | on spread | off spread |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for name in SETTINGS:
        on = [(rep, r) for rep, n, is_on, r in rows if n == name and is_on]
        off = [(rep, r) for rep, n, is_on, r in rows if n == name and not is_on]
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
    not_measured = [n for _, n, _, r in rows if not r.get("measured", True)]  # only runs that measured say
    lines += ["",
              f"images/s: global batch x steps / time, median over the run's {WINDOW}-step windows after the warm-up "
              "(optimizer step to optimizer step, rank 0's clock; with log every 10 each window holds one log step).",
              "  mean img/s: all timed steps as one interval. cpu util: process CPU time / (wall x threads) over the "
              "timed steps, rank 0/rank 1 for gloo;",
              f"  * = under {QUIET:.0%} (for gloo the lower rank): the run shared its cores or waited; its speed is "
              "less reliable. ratio on/off: of the medians over all runs (1.000 = no cost;",
              f"  0.990 = 1 % fewer images/s {comparison.cost_of}). paired ratios: on/off of the runs made next to "
              "each other, median and min-max over repeats (the spread).",
              "  on spread / off spread: min-max images/s over that side's runs.",
              "measurement check: " + (comparison.measured if not not_measured else
                                       f"NO gradient_noise_scale in the summary of: {sorted(set(not_measured))}")]
    if comparison.same_lr:
        lines += same_lr_lines(rows)
    lines += ["ratio on/off by setting: " + ", ".join(f"{n} {v:.3f}" for n, v in summary.items()),
              f"benchmark wall time: {wall_s:.1f} s"]
    return "\n".join(lines) + "\n"


def same_lr_lines(rows: list[tuple[int, str, bool, dict]]) -> list[str]:
    """The lr check (main stops before the report if it failed) and the adaptive runs' decisions per setting."""
    pairs = sum(1 for _, _, on, _ in rows if on)
    steps = sum(len(r["lrs"]) for _, _, on, r in rows if on)
    problems = lr_differences(rows)
    lines = ["lr check: " + (f"each of the {pairs} adaptive runs logged the lr of its fixed pair at every logged step "
                             f"({steps} steps in all, compared with ==), adascale_gain 1.0 at each" if not problems
                             else "DIFFERENT lr: " + "; ".join(problems))]
    looks = {}
    for _, name, on, r in rows:
        if on:
            looks.setdefault(name, []).append(r.get("looks", []))
    lines.append("decisions (goodputs predicted, batch chosen) per adaptive run: " + ", ".join(
        f"{name} {'/'.join(sorted({str(len(steps)) for steps in runs}))} (at steps "
        f"{', '.join(map(str, runs[0]))})" for name, runs in looks.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    parser.add_argument("--repeats", type=int, default=6, help="repeats of every setting's on/off pairs (default 6)")
    parser.add_argument("--pairs", type=int, default=1, help="on, off pairs per setting and repeat (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="leading steps left out of the timing (default 10)")
    parser.add_argument("--quick", action="store_true", help="--steps 40 --repeats 2 (a smoke run, ~1.5 min)")
    parser.add_argument("--policy", action="store_true",
                        help="on/off = train.batch_policy adaptive (pinned to the global batch) / fixed, instead of "
                             f"track.noise_scale on/off; results to {ADAPTIVE_RESULTS.relative_to(REPO)}")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {RESULTS}, with --policy {ADAPTIVE_RESULTS})")
    args = parser.parse_args(argv)
    comparison = POLICY if args.policy else NOISE
    args.out = args.out or comparison.results
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
                for name, on, result in run(scratch, repeat, args.steps, args.warmup, args.pairs, comparison):
                    rows.append((repeat, name, on, result))
                    print(f"#{repeat} {name} {comparison.column} "
                          f"{comparison.labels[0] if on else comparison.labels[1]}: {result['images_per_s']:.1f} "
                          f"images/s (cpu util {result['cpu_util']:.0%})", file=sys.stderr, flush=True)
                if comparison.same_lr and (problems := lr_differences(rows)):
                    raise AssertionError("the two sides took different lrs: " + "; ".join(problems))
    publish(report(rows, args, time.perf_counter() - started, comparison), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
