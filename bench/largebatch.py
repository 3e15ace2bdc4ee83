"""Goyal et al. 2017 and LARS in miniature: does held-out accuracy hold as the global batch grows?

Why: bigbatch exists so that a recipe can take a much larger global batch
without losing accuracy. Goyal et al. show linear lr scaling + gradual warmup
keep ResNet-50 at 8k within 0.14 points of batch 256, and that without warmup
large batches fall behind; You et al. go further with LARS. This runs that
experiment on real data that fits this machine.

How: Fashion-MNIST (Debian's dataset-fashion-mnist), the small ResNet with
BatchNorm of recipes/fashion_mnist/_base.yaml, a fixed epoch budget. The
baseline trains at batch 256; each large global batch (2k, 4k, 8k = 1 worker x
accumulation of 256-image micro-batches, so BatchNorm always normalises over
256 images) trains under (a) linear scaling without warmup, (b) linear scaling +
gradual warmup + momentum correction, (c) LARS + warmup + polynomial decay.
Cells run in `--jobs` processes of one torch thread each (two cells at a time
use 2 cores better than one cell on two threads for a model this small). Every
cell reports top-1 on the 10,000 test images after the last epoch.

    .venv/bin/python bench/largebatch.py              # full: 10 cells x --seeds (default 1)
    .venv/bin/python bench/largebatch.py --reduced    # baseline + the three methods at 8k, one seed

Writes bench/results/largebatch.md (or --out) and a PNG plot beside it.
"""

import argparse
import concurrent.futures as futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPES = REPO / "recipes" / "fashion_mnist"
MICRO_BATCH = 256
TRAIN_EXAMPLES = 60_000  # Fashion-MNIST's training set (Goyal et al.'s 8k is 0.64 % of ImageNet's 1.28M)
METHODS = {  # key: (recipe, label)
    "a": ("linear_no_warmup.yaml", "(a) linear scaling, no warmup"),
    "b": ("linear_warmup.yaml", "(b) linear scaling + warmup + momentum correction"),
    "c": ("lars_warmup_poly.yaml", "(c) LARS + warmup + poly decay"),
}
BASELINE = ("baseline.yaml", "baseline, batch 256")


def run_cell(recipe: str, global_batch: int, seed: int, epochs: int | None, threads: int) -> dict:
    """Train one cell in this process (a pool worker) and return its test top-1 and wall time."""
    import torch

    torch.set_num_threads(threads)
    from trainer.collective import LocalCollective
    from trainer.loop import Trainer
    from trainer.recipe import load_recipe

    overrides = [f"seed={seed}", f"train.accumulation_steps={global_batch // MICRO_BATCH}"]
    if epochs:  # another budget: the whole schedule (warmup, lr decay epochs) stretches with it
        base = load_recipe(RECIPES / recipe, [])
        optim, scale = base.optim, epochs / base.train.epochs
        overrides += [f"train.epochs={epochs}", f"optim.warmup_epochs={optim.warmup_epochs * scale:g}",
                      f"optim.decay_epochs=[{', '.join(str(round(e * scale)) for e in optim.decay_epochs)}]"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbatch-largebatch-") as run_dir:
        trainer = Trainer(load_recipe(RECIPES / recipe, overrides), run_dir, LocalCollective("cpu"))
        summary = trainer.fit()
    return {"recipe": recipe, "global_batch": global_batch, "seed": seed, "top1": summary["top1"],
            "steps": summary["step"], "epochs": summary["epoch"], "wall_s": time.perf_counter() - started}


def cells(reduced: bool, seeds: int, batches: list[int], methods: str = "abc",
          baseline: bool = True) -> list[tuple[str, str, int, int]]:
    """(method key, recipe, global batch, seed) for every cell; the baseline has key '0'."""
    chosen = [8192] if reduced else batches
    out = [("0", BASELINE[0], MICRO_BATCH, s) for s in range(seeds)] if baseline else []
    for batch in chosen:
        out += [(key, recipe, batch, s) for key, (recipe, _) in METHODS.items() if key in methods
                for s in range(seeds)]
    return out


def recipe_epochs() -> int:
    from trainer.recipe import load_recipe

    return load_recipe(RECIPES / BASELINE[0], []).train.epochs


def cell_epochs(args: argparse.Namespace, batch: int) -> int | None:
    """The epoch budget of a cell: --epochs, or with --same-steps-as the budget that gives `batch` the steps of
    that batch (None: the recipe's)."""
    if args.same_steps_as and batch != MICRO_BATCH:
        return max(1, round((args.epochs or recipe_epochs()) * batch / args.same_steps_as))
    return args.epochs or None


def summarise(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def verdicts(results: list[dict], batch: int) -> list[str]:
    """The plain statements the issue asks for, computed from the table (never written by hand)."""
    def mean(key: str, b: int) -> float | None:
        tops = [r["top1"] for r in results if r["key"] == key and r["global_batch"] == b]
        return statistics.fmean(tops) if tops else None

    base = mean("0", MICRO_BATCH)
    a, b, c = mean("a", batch), mean("b", batch), mean("c", batch)
    lines = []
    if base is None:
        return lines
    if b is not None:
        gap = 100 * (base - b)
        lines.append(f"- (b) linear scaling + warmup at {batch}: {100 * b:.2f} % vs baseline {100 * base:.2f} % "
                     f"({gap:+.2f} points behind): {'within' if gap <= 1.0 else 'NOT within'} 1 point.")
    if a is not None:
        gap = 100 * (base - a)
        behind_b = f", {100 * (b - a):+.2f} points behind (b)" if b is not None else ""
        lines.append(f"- (a) linear scaling without warmup at {batch}: {100 * a:.2f} % ({gap:+.2f} points behind "
                     f"the baseline{behind_b}): {'falls behind' if gap > 1.0 else 'does not fall behind'} "
                     f"the baseline by more than 1 point.")
    if c is not None:
        lines.append(f"- (c) LARS + warmup + poly at {batch}: {100 * c:.2f} % ({100 * (base - c):+.2f} points "
                     f"behind the baseline).")
    return lines


def write_markdown(path: Path, results: list[dict], args: argparse.Namespace, command: str, wall_s: float,
                   plot: Path) -> None:
    batches = sorted({r["global_batch"] for r in results if r["key"] != "0"})
    header = "| method | " + " | ".join(f"batch {b}" for b in [MICRO_BATCH, *batches]) + " |"
    rule = "|---|" + "---:|" * (1 + len(batches))
    rows = []
    for key, label in [("0", BASELINE[1]), *[(k, v[1]) for k, v in METHODS.items()]]:
        cols = []
        for b in [MICRO_BATCH, *batches]:
            tops = [r["top1"] for r in results if r["key"] == key and r["global_batch"] == b]
            cols.append(summarise(tops) if tops else "")
        rows.append(f"| {label} | " + " | ".join(cols) + " |")
    times = "\n".join(f"| {r['key'] if r['key'] != '0' else 'baseline'} | {r['global_batch']} | {r['seed']} | "
                      f"{r['epochs']:g} | {r['steps']} | {100 * r['top1']:.2f} | {r['wall_s']:.0f} |"
                      for r in results)
    budget = f"{args.epochs} epochs" if args.epochs else f"the recipes' {recipe_epochs()} epochs"
    if args.same_steps_as:
        budget = (f"as many optimizer steps as batch {args.same_steps_as} takes in {budget} (epochs x batch / "
                  f"{args.same_steps_as}; warmup and lr decay epochs stretched alike)")
    seeds = sorted({r["seed"] for r in results})
    text = [
        "# Large-batch training in miniature (Fashion-MNIST)",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}, total wall time {wall_s / 60:.1f} min "
        f"({args.jobs} processes x 1 torch thread, {os.cpu_count()} cores).",
        "",
        f"Held-out top-1 (%) on the 10,000 Fashion-MNIST test images after {budget}; seeds {seeds} "
        "(mean ± standard deviation where more than one).",
        "BatchNorm normalises over 256-image micro-batches in every cell (global batch = 1 worker x "
        "accumulation x 256).",
        "",
        header, rule, *rows,
        "| optimizer steps | " + " | ".join(str(_steps(results, b)) for b in [MICRO_BATCH, *batches]) + " |",
        "| batch / training set | " + " | ".join(f"{100 * b / TRAIN_EXAMPLES:.2f} %"
                                                 for b in [MICRO_BATCH, *batches]) + " |",
        "",
        f"![top-1 against global batch]({plot.name})",
        "",
        "## Verdict at the largest batch",
        "",
        *(verdicts(results, max(batches)) if batches else []),
        "",
        "## Cells",
        "",
        "| method | global batch | seed | epochs | optimizer steps | top-1 % | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        times,
        "",
    ]
    path.write_text("\n".join(text))


def _steps(results: list[dict], batch: int) -> int | str:
    steps = {r["steps"] for r in results if r["global_batch"] == batch}
    return steps.pop() if len(steps) == 1 else "-"


def write_plot(path: Path, results: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    base = [r["top1"] for r in results if r["key"] == "0"]
    if base:
        ax.axhline(100 * statistics.fmean(base), color="black", linestyle="--", label=BASELINE[1])
    for key, (_, label) in METHODS.items():
        batches = sorted({r["global_batch"] for r in results if r["key"] == key})
        if not batches:
            continue
        tops = [[100 * r["top1"] for r in results if r["key"] == key and r["global_batch"] == b] for b in batches]
        spread = [statistics.stdev(t) if len(t) > 1 else 0.0 for t in tops]
        ax.errorbar(batches, [statistics.fmean(t) for t in tops], yerr=spread, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    shown = sorted({r["global_batch"] for r in results if r["key"] != "0"})
    ax.set_xticks(shown, [str(b) for b in shown])
    ax.minorticks_off()
    ax.set_xlabel("global batch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reduced", action="store_true", help="baseline + the three methods at 8k only")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    parser.add_argument("--batches", default="2048,4096,8192", help="large global batches (multiples of 256)")
    parser.add_argument("--epochs", type=int, default=0, help="another epoch budget (warmup and lr decay "
                        "epochs scale with it)")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once, one thread each")
    parser.add_argument("--same-steps-as", type=int, default=0, metavar="BATCH",
                        help="give each large batch the optimizer steps BATCH takes in the recipe's epoch budget "
                             "(epochs x batch / BATCH): separates the batch size from the number of updates")
    parser.add_argument("--methods", default="abc", help="which of the methods a, b, c to run (default abc)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the batch-256 baseline")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "largebatch.md"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if any(b % MICRO_BATCH for b in batches):
        parser.error(f"--batches: every batch must be a multiple of {MICRO_BATCH}")
    todo = cells(args.reduced, args.seeds, batches, args.methods, not args.no_baseline)
    started = time.perf_counter()
    results = []
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        jobs = {pool.submit(run_cell, recipe, batch, seed, cell_epochs(args, batch), 1): key
                for key, recipe, batch, seed in todo}
        for job in futures.as_completed(jobs):
            result = {**job.result(), "key": jobs[job]}
            results.append(result)
            print(f"{result['recipe']:24s} batch {result['global_batch']:5d} seed {result['seed']}: "
                  f"top-1 {100 * result['top1']:.2f} % in {result['wall_s']:.0f} s", flush=True)
    wall = time.perf_counter() - started
    results.sort(key=lambda r: (r["key"], r["global_batch"], r["seed"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix(".png")
    title = (f"Fashion-MNIST, the optimizer steps of batch {args.same_steps_as}" if args.same_steps_as
             else "Fashion-MNIST, fixed epoch budget")
    write_plot(plot, results, title)
    command = "python bench/largebatch.py " + " ".join(sys.argv[1:])
    write_markdown(out, results, args, command.strip(), wall, plot)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
