"""How much does bigbatch's training loop cost over a plain hand-written PyTorch loop?

Why: `Trainer.fit()` does more per step than the textbook loop: the lr set from
the warmup+cosine schedule, the micro-batch/accumulation machinery, the loss
all-reduce, the non-finite loss check, window bookkeeping, metrics records and
the console, and it steps its own optimizer (optim.SGD: parameter groups,
momentum correction). This measures what all that costs in images/s, in one
process, against a plain loop doing the same work: `resnet_small` from the same
builder and seed, the same in-memory synthetic tensors, batch size and thread
count, the same optimizer - bigbatch's optim.SGD built by the same function
(trainer.build.make_optimizer: the same parameter groups, weight decay on
conv/linear weights only, momentum correction) - at bigbatch's (scaled) peak lr
held constant, `CrossEntropyLoss`, a per-epoch `randperm`, zero_grad / forward /
loss / backward / step. Separately, the plain loop also runs with
torch.optim.SGD over the same parameter groups: that ratio compares the two
optimizers (a product figure), not the loop.

How: both loops get the same optimizer step post-hook, which records the time
after every optimizer step. After `--warmup` untimed steps (allocator and kernel
warm-up) the steps are cut into 10-step windows, hook to hook, and a run's
images/s is the median over its windows. A window is whole iterations with
everything between two optimizer steps, so for bigbatch it includes the lr
schedule, batch gathering, the finite check, zero_grad, the console and exactly
one metrics.jsonl record (train.log_every_steps = 10). Left out, as one-time
costs that a real run spreads over thousands of steps: bigbatch's set-up before
the first step (data, model, run directory) and its final evaluation (128 images)
and checkpoint after the last. The training set holds exactly steps x batch
images, so all steps are one epoch and no epoch-end checkpoint is timed.

The machine is noisy (other processes take the 2 cores for seconds at a time),
so runs alternate plain, bigbatch, plain, ... and the final ratio is of the
medians over all runs. Printed above it: the per-run CPU utilisation, which
flags runs that shared their cores, and two more robust views of the same data
(median of the paired ratios; ratio of medians over unflagged runs). The text
also goes to bench/results/overhead.txt. Exit status 0 whatever the ratio: a
benchmark, not a test.

    .venv/bin/python bench/overhead.py [--steps 100] [--batch-size 128] [--repeats 5] [--threads N]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.publish import publish  # noqa: E402
from bigbatch.optim import split_param_groups
from bigbatch.trainer.data import load_data
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.models import create_model
from bigbatch.trainer.recipe import Recipe, load_recipe
from bigbatch.trainer.recipe.plan import make_plan
from bigbatch.trainer.run.build import make_optimizer
from bigbatch.trainer.run.loop import Trainer

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.97
QUIET = 0.9  # cpu util below this: the run shared its cores with other processes
WINDOW = 10  # steps per timing window = the recipe's train.log_every_steps: one metrics record each
RESULTS = REPO / "bench" / "results" / "overhead.txt"

RECIPE = """\
description: bench/overhead.py - loop overhead against a plain PyTorch loop
seed: 0
model:
  name: resnet_small
data:
  name: synthetic
  batch_size: {batch}
  num_classes: 10
  train_examples: {train_examples}
  val_examples: 128
train:
  epochs: 1
  max_steps: {steps}
  threads: {threads}
  device: cpu
  precision: fp32
  eval_every_epochs: 0
  log_every_steps: {log_every}
  progress_bar: false
optim:
  name: sgd
  base_lr: 0.1
  reference_batch: 256
  momentum: 0.9
  weight_decay: 0.0005
  warmup_steps: 5
  schedule: cosine
cluster:
  workers: 1
  backend: local
"""


class StepClock:
    """Optimizer step post-hook: wall and process-CPU time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def measure(self, warmup: int, batch: int, threads: int) -> dict:
        """Images/s after the first `warmup` steps: median of WINDOW-step windows, and the plain mean."""
        last = len(self.wall) - 1
        if last - warmup < WINDOW:
            raise RuntimeError(f"{len(self.wall)} steps recorded; need at least warmup + {WINDOW} + 1")
        starts = range(warmup, last - WINDOW + 1, WINDOW)
        windows = [WINDOW * batch / (self.wall[s + WINDOW] - self.wall[s]) for s in starts]
        wall = self.wall[last] - self.wall[warmup]
        return {"images_per_s": statistics.median(windows), "mean_images_per_s": (last - warmup) * batch / wall,
                "cpu_util": (self.cpu[last] - self.cpu[warmup]) / (wall * threads)}


def write_recipe(directory: Path, steps: int, batch: int, threads: int) -> Recipe:
    path = directory / "overhead.yaml"
    path.write_text(RECIPE.format(batch=batch, steps=steps, threads=threads, train_examples=steps * batch,
                                  log_every=WINDOW))
    return load_recipe(path, [])


def run_plain(recipe: Recipe, warmup: int, optimizer_from: str = "bigbatch") -> dict:
    """The hand-written loop: same model, data, optimizer and threads; a per-epoch randperm. `optimizer_from`:
    bigbatch's optim.SGD as the Trainer builds it, or torch.optim.SGD over the same parameter groups."""
    torch.set_num_threads(recipe.train.threads)
    data = load_data(recipe.data, recipe.seed)
    images, labels = data.train.images, data.train.labels
    plan = make_plan(recipe, len(labels), 1)
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, data.num_classes, data.channels, data.image_size)
    opt = recipe.optim
    if optimizer_from == "bigbatch":
        optimizer = make_optimizer(opt, model, plan.scaled_lr)
    else:
        groups = split_param_groups(model, opt.weight_decay, opt.exclude_norm_and_bias, opt.exclude_patterns)
        optimizer = torch.optim.SGD(groups, lr=plan.scaled_lr, momentum=opt.momentum, nesterov=opt.nesterov)
    criterion = nn.CrossEntropyLoss()
    clock = StepClock()
    optimizer.register_step_post_hook(clock)
    batch, steps, step = recipe.data.batch_size, plan.total_steps, 0
    generator = torch.Generator().manual_seed(recipe.seed)
    while step < steps:
        perm = torch.randperm(len(labels), generator=generator)
        for i in range(min(len(labels) // batch, steps - step)):
            idx = perm[i * batch:(i + 1) * batch]
            x, y = images[idx], labels[idx]
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
    return clock.measure(warmup, batch, recipe.train.threads)


def run_bigbatch(recipe: Recipe, warmup: int, run_dir: Path) -> dict:
    """Trainer.fit() as a user runs it; the step clock hangs on its optimizer from outside."""
    trainer = Trainer(recipe, run_dir, LocalCollective("cpu"))
    clock = StepClock()
    trainer.optimizer.register_step_post_hook(clock)
    summary = trainer.fit()
    return {**clock.measure(warmup, summary["global_batch"], recipe.train.threads),
            "fit_images_per_s": summary["images_per_s"], "fit_s": summary["elapsed_s"]}


def report(rows: list[tuple[str, dict]], args: argparse.Namespace, wall_s: float) -> str:
    plain_runs = [r for name, r in rows if name.startswith("plain #")]
    torch_runs = [r for name, r in rows if name.startswith("plain+torchSGD")]
    big_runs = [r for name, r in rows if name.startswith("bigbatch")]

    def median(runs: list[dict], key: str = "images_per_s") -> float:
        return statistics.median(r[key] for r in runs)

    plain, big = median(plain_runs), median(big_runs)
    paired = statistics.median(b["images_per_s"] / p["images_per_s"] for p, b in zip(plain_runs, big_runs, strict=True))
    quiet_plain = [r for r in plain_runs if r["cpu_util"] >= QUIET]
    quiet_big = [r for r in big_runs if r["cpu_util"] >= QUIET]
    quiet = (f"{median(quiet_big) / median(quiet_plain):.3f} ({len(quiet_plain)} plain, {len(quiet_big)} bigbatch runs)"
             if quiet_plain and quiet_big else "n/a (no such run of one of the loops)")
    rule = "-" * 58
    lines = [f"bigbatch loop overhead: resnet_small, synthetic 3x32x32, batch {args.batch_size}, {args.steps} steps "
             f"(first {args.warmup} untimed), {args.threads} threads, torch {torch.__version__}",
             "",
             f"{'run':<18}{'images/s':>10}{'mean img/s':>12}{'cpu util':>10}{'fit()':>8}",
             rule]
    for name, r in rows:
        fit = f"{r['fit_s']:.1f}s" if "fit_s" in r else ""
        flag = "" if r["cpu_util"] >= QUIET else "  *"
        lines.append(f"{name:<18}{r['images_per_s']:>10.1f}{r['mean_images_per_s']:>12.1f}"
                     f"{r['cpu_util']:>10.0%}{fit:>8}{flag}")
    lines += [rule,
              f"{'plain median':<18}{plain:>10.1f}{median(plain_runs, 'mean_images_per_s'):>12.1f}",
              f"{'bigbatch med.':<18}{big:>10.1f}{median(big_runs, 'mean_images_per_s'):>12.1f}",
              "",
              f"images/s: median over the run's {WINDOW}-step windows after the warm-up (optimizer step to",
              "  optimizer step; each window holds one bigbatch metrics record). mean img/s: all steps after",
              "  the warm-up as one interval. cpu util: process CPU time / (wall time x threads) over the",
              f"  timed steps; * = under {QUIET:.0%}: other processes took cores, that run's speed is unreliable.",
              "  fit(): wall time of Trainer.fit() (build excluded; final eval + checkpoint included).",
              f"median of paired ratios (run i vs run i): {paired:.3f}",
              f"ratio of medians over runs without *: {quiet}",
              f"benchmark wall time: {wall_s:.1f} s",
              f"ratio bigbatch/plain: {big / plain:.3f} (target >= {TARGET}; both with bigbatch's optim.SGD)",
              f"product figure, not overhead - plain loop with bigbatch's optim.SGD / with torch.optim.SGD "
              f"(same groups): {plain / median(torch_runs):.3f}",
              f"command: python bench/overhead.py --steps {args.steps} --batch-size {args.batch_size} "
              f"--repeats {args.repeats} --threads {args.threads} --warmup {args.warmup}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each loop, interleaved (default 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads for both loops (default: all CPUs)")
    parser.add_argument("--warmup", type=int, default=10, help="leading steps left out of the timing (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.batch_size < 1 or args.warmup < 0:
        parser.error("--repeats, --threads and --batch-size must be >= 1, --warmup >= 0")
    if args.steps < args.warmup + WINDOW + 1:
        parser.error(f"--steps must be at least --warmup + {WINDOW + 1} (= {args.warmup + WINDOW + 1})")

    started = time.perf_counter()
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bigbatch-overhead-") as tmp:
        scratch = Path(tmp)
        recipe = write_recipe(scratch, args.steps, args.batch_size, args.threads)
        for i in range(1, args.repeats + 1):
            for name in ("plain", "bigbatch", "plain+torchSGD"):
                if name == "plain":
                    result = run_plain(recipe, args.warmup)
                elif name == "plain+torchSGD":
                    result = run_plain(recipe, args.warmup, optimizer_from="torch")
                else:
                    result = run_bigbatch(recipe, args.warmup, scratch / f"run{i}")
                rows.append((f"{name} #{i}", result))
                print(f"{name} #{i}: {result['images_per_s']:.1f} images/s (cpu util {result['cpu_util']:.0%})",
                      file=sys.stderr, flush=True)
    text = report(rows, args, time.perf_counter() - started)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
