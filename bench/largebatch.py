"""Goyal et al. 2017 and LARS in miniature: does held-out accuracy hold as the global batch grows?

Why: bigbatch exists so that a recipe can take a much larger global batch
without losing accuracy. Goyal et al. show linear lr scaling + gradual warmup
keep ResNet-50 at 8k within 0.14 points of batch 256, and that without warmup
large batches fall behind; You et al. go further with LARS. This runs that
experiment on real data that fits this machine, tuned and seeded honestly.

How: Fashion-MNIST (Debian's dataset-fashion-mnist), the small ResNet with
BatchNorm of recipes/fashion_mnist/_base.yaml, a fixed epoch budget. The
baseline trains at batch 256; each large global batch (2k, 4k, 8k = 1 worker x
accumulation of 256-image micro-batches, so BatchNorm always normalises over
256 images) trains under (a) linear scaling without warmup, (b) linear scaling +
gradual warmup + momentum correction, (c) LARS + warmup + polynomial decay.

Tuning: every cell (method x batch, the baseline included) gets the same
budget, one run per value of the same grid of lr multipliers (--grid, default
0.5, 1, 2 x the recipe's base_lr), seed 0, on `data.holdout` = 10,000 images
carved from the 60,000 training images (trained on the other 50,000). The
multiplier with the best held-out top-1 is kept; nothing is chosen on the test
set. That cell then runs --seeds seeds in all (seed 0 is the tuning run), and
the table reports held-out and test top-1 (the 10,000 test images) as mean ±
std. A verdict counts a difference only when it exceeds the larger seed range
(max - min) of the two cells compared.

Cells run in `--jobs` processes of one torch thread each (two cells at a time
use 2 cores better than one cell on two threads for a model this small).

    .venv/bin/python bench/largebatch.py              # full: 10 cells x 3 lrs, then 2 more seeds of each choice
    .venv/bin/python bench/largebatch.py --reduced    # baseline + the three methods at 8k, recipe lr, one seed

Writes bench/results/largebatch.md (or --out), every cell's measures in the .json beside it, and a PNG plot.
"""

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.procedures import beats, commit, mean_std, per_cell  # noqa: E402
from bench.publish import publish, save_batch_plot  # noqa: E402

RECIPES = REPO / "recipes" / "fashion_mnist"
MICRO_BATCH = 256
TRAIN_EXAMPLES = 60_000  # Fashion-MNIST's training set (Goyal et al.'s 8k is 0.64 % of ImageNet's 1.28M)
HOLDOUT = 10_000  # carved from the training set for the lr choice; trained on the other 50,000
METHODS = {  # key: (recipe, label)
    "a": ("linear_no_warmup.yaml", "(a) linear scaling, no warmup"),
    "b": ("linear_warmup.yaml", "(b) linear scaling + warmup + momentum correction"),
    "c": ("lars_warmup_poly.yaml", "(c) LARS + warmup + poly decay"),
}
BASELINE = ("baseline.yaml", "baseline, batch 256")


def run_cell(recipe: str, global_batch: int, seed: int, lr_mult: float, epochs: int | None) -> dict:
    """Train one cell in this process (a pool worker, one torch thread): held-out top-1 (the decisions) and
    test top-1 (reported) of the final weights, optimizer steps and wall time."""
    import torch

    torch.set_num_threads(1)
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer
    from bigbatch.trainer.search.score import holdout_top1

    base = load_recipe(RECIPES / recipe, [])
    overrides = [f"seed={seed}", f"train.accumulation_steps={global_batch // MICRO_BATCH}",
                 f"data.holdout={HOLDOUT}", f"optim.base_lr={base.optim.base_lr * lr_mult:g}"]
    if epochs:  # another budget: the whole schedule (warmup, lr decay epochs) stretches with it
        optim, scale = base.optim, epochs / base.train.epochs
        overrides += [f"train.epochs={epochs}", f"optim.warmup_epochs={optim.warmup_epochs * scale:g}",
                      f"optim.decay_epochs=[{', '.join(f'{e * scale:g}' for e in optim.decay_epochs)}]"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbatch-largebatch-") as run_dir:
        recipe_obj = load_recipe(RECIPES / recipe, overrides)
        trainer = Trainer(recipe_obj, run_dir, LocalCollective("cpu"))
        summary = trainer.fit()
        wall = time.perf_counter() - started
        holdout = holdout_top1(trainer.model, trainer.parts.data, recipe_obj, torch.device("cpu"))
    return {"holdout": holdout, "test": summary["top1"], "steps": summary["step"], "epochs": summary["epoch"],
            "wall_s": wall}


def cell_name(key: str, batch: int) -> str:
    return "baseline" if key == "0" else f"({key}) {batch}"


def grid_cells(reduced: bool, batches: list[int], methods: str, baseline: bool) -> list[tuple[str, str, int]]:
    """(method key, recipe, global batch) of every cell; the baseline has key '0'."""
    out = [("0", BASELINE[0], MICRO_BATCH)] if baseline else []
    for batch in [8192] if reduced else batches:
        out += [(key, recipe, batch) for key, (recipe, _) in METHODS.items() if key in methods]
    return out


def recipe_epochs() -> int:
    from bigbatch.trainer.recipe import load_recipe

    return load_recipe(RECIPES / BASELINE[0], []).train.epochs


def cell_epochs(args: argparse.Namespace, batch: int) -> int | None:
    """The epoch budget of a cell: --epochs, or with --same-steps-as the budget that gives `batch` the steps of
    that batch (None: the recipe's)."""
    if args.same_steps_as and batch != MICRO_BATCH:
        return max(1, round((args.epochs or recipe_epochs()) * batch / args.same_steps_as))
    return args.epochs or None


def choose(results: list[dict]) -> dict[str, float]:
    """Per cell name, the lr multiplier whose seed-0 run scored best on the held-out split (never the test)."""
    best: dict[str, dict] = {}
    for r in results:
        if r["seed"] == 0 and (r["name"] not in best or r["holdout"] > best[r["name"]]["holdout"]):
            best[r["name"]] = r
    return {name: r["lr_mult"] for name, r in best.items()}


def chosen_runs(results: list[dict]) -> list[dict]:
    """Every seed of each cell's chosen multiplier (what the table reports)."""
    pick = choose(results)
    return [r for r in results if r["lr_mult"] == pick[r["name"]]]


def run_all(todo: list[tuple[str, str, int, int, float]], args: argparse.Namespace) -> list[dict]:
    results = []
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        jobs = {pool.submit(run_cell, recipe, batch, seed, mult, cell_epochs(args, batch)):
                (key, recipe, batch, seed, mult) for key, recipe, batch, seed, mult in todo}
        for job in futures.as_completed(jobs):
            key, recipe, batch, seed, mult = jobs[job]
            result = {"name": cell_name(key, batch), "key": key, "recipe": recipe, "global_batch": batch,
                      "seed": seed, "lr_mult": mult, **job.result()}
            results.append(result)
            print(f"{result['name']:14s} lr x{mult:g} seed {seed}: held-out {100 * result['holdout']:.2f} % "
                  f"in {result['wall_s']:.0f} s", flush=True)
    return results


def measure(args: argparse.Namespace) -> list[dict]:
    """Tune (seed 0, every multiplier of the grid), then the chosen multiplier's other seeds."""
    batches = [int(b) for b in args.batches.split(",")]
    grid = [1.0] if args.reduced else [float(m) for m in args.grid.split(",")]
    cells = grid_cells(args.reduced, batches, args.methods, not args.no_baseline)
    results = run_all([(key, recipe, batch, 0, mult) for key, recipe, batch in cells for mult in grid], args)
    pick = choose(results)
    more = [(key, recipe, batch, seed, pick[cell_name(key, batch)]) for key, recipe, batch in cells
            for seed in range(1, args.seeds)]
    return results + run_all(more, args)


def verdicts(runs: list[dict]) -> list[str]:
    """Each large-batch cell against the baseline and (a) against (b), on the test top-1, counted only beyond the
    larger seed range of the two cells (computed from the table, never written by hand)."""
    names = {r["name"] for r in runs}
    if "baseline" not in names:
        return []
    word = {1: "ahead of", -1: "behind", 0: "within the seed spread of"}
    lines = []
    for batch in sorted({r["global_batch"] for r in runs if r["key"] != "0"}):
        for key in METHODS:
            name = cell_name(key, batch)
            if name not in names:
                continue
            gap = statistics.fmean(per_cell(runs, name, "test")) - statistics.fmean(per_cell(runs, "baseline", "test"))
            lines.append(f"- {name}: {100 * gap:+.2f} points vs the baseline: "
                         f"{word[beats(runs, name, 'baseline', 'test')]} it.")
        a, b = cell_name("a", batch), cell_name("b", batch)
        if a in names and b in names:
            lines.append(f"- warmup at {batch}: (b) is {word[beats(runs, b, a, 'test')]} (a).")
    return lines


def render(store: dict) -> str:
    results, args = store["cells"], store["args"]
    runs = chosen_runs(results)
    pick = choose(results)
    batches = sorted({r["global_batch"] for r in runs if r["key"] != "0"})
    columns = [MICRO_BATCH, *batches]

    def row(label: str, key: str, field: str) -> str:
        cols = []
        for b in columns:
            name = cell_name(key, b)
            values = per_cell(runs, name, field) if (key == "0") == (b == MICRO_BATCH) else []
            cols.append(mean_std(values) if values else "")
        return f"| {label} | " + " | ".join(cols) + " |"

    labels = [("0", BASELINE[1]), *[(k, v[1]) for k, v in METHODS.items()]]
    header = ["| method | " + " | ".join(f"batch {b}" for b in columns) + " |", "|---|" + "---:|" * len(columns)]
    steps = {b: {r["steps"] for r in runs if r["global_batch"] == b} for b in columns}
    tuning = sorted({(r["name"], r["global_batch"]) for r in results}, key=lambda n: (n[1], n[0]))
    grid = sorted({r["lr_mult"] for r in results})
    seeds = sorted({r["seed"] for r in runs})
    budget = f"{args['epochs']} epochs" if args["epochs"] else f"the recipes' {store['recipe_epochs']} epochs"
    if args["same_steps_as"]:
        budget = (f"as many optimizer steps as batch {args['same_steps_as']} takes in {budget} (epochs x batch / "
                  f"{args['same_steps_as']}; warmup and lr decay epochs stretched alike)")
    lines = [
        "# Large-batch training in miniature (Fashion-MNIST)", "",
        f"resnet_small trained on 50,000 of the 60,000 training images for {budget}; BatchNorm normalises over "
        "256-image micro-batches in every cell (global batch = 1 worker x accumulation x 256). The lr of every "
        f"cell was chosen from the same grid, x{', x'.join(f'{m:g}' for m in grid)} the recipe's base_lr, by "
        f"top-1 on the other {HOLDOUT:,} training images (seed 0); the test set decided nothing. Seeds {seeds}, "
        "mean ± std.", "",
        "## Test top-1 (%), 10,000 test images", "", *header,
        *[row(label, key, "test") for key, label in labels],
        "| optimizer steps | " + " | ".join(str(steps[b].pop()) if len(steps[b]) == 1 else "-" for b in columns) + " |",
        "| batch / training set | " + " | ".join(f"{100 * b / (TRAIN_EXAMPLES - HOLDOUT):.2f} %" for b in columns)
        + " |", "",
        "## Held-out top-1 (%), the split the lr was chosen on", "", *header,
        *[row(label, key, "holdout") for key, label in labels], "",
        f"![test top-1 against global batch]({Path(store['plot']).name})", "",
        "## Verdicts (test top-1; a difference counts only beyond the larger seed range of the two cells)", "",
        *verdicts(runs), "",
        "## Tuning: held-out top-1 (%) of seed 0 per lr multiplier (the chosen one in bold)", "",
        "| cell | " + " | ".join(f"x{m:g}" for m in grid) + " |", "|---|" + "---:|" * len(grid),
    ]
    for name, _ in tuning:
        cols = []
        for m in grid:
            hit = [r for r in results if r["name"] == name and r["lr_mult"] == m and r["seed"] == 0]
            text = f"{100 * hit[0]['holdout']:.2f}" if hit else ""
            cols.append(f"**{text}**" if hit and m == pick[name] else text)
        lines.append(f"| {name} | " + " | ".join(cols) + " |")
    wall = statistics.fmean(r["wall_s"] for r in results)
    lines += ["", f"{len(results)} runs, {wall:.0f} s each on average; measured by `{store['command']}` at commit "
              f"{store['commit']} on {store['date']}: {store['wall_min']:.1f} min ({store['jobs']} processes x 1 "
              f"torch thread, {os.cpu_count()} cores)."]
    return "\n".join(lines)


def write_plot(path: Path, runs: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    base = per_cell(runs, "baseline", "test")
    if base:
        ax.axhline(100 * statistics.fmean(base), color="black", linestyle="--", label=BASELINE[1])
    for key, (_, label) in METHODS.items():
        batches = sorted({r["global_batch"] for r in runs if r["key"] == key})
        if not batches:
            continue
        tops = [[100 * v for v in per_cell(runs, cell_name(key, b), "test")] for b in batches]
        spread = [statistics.stdev(t) if len(t) > 1 else 0.0 for t in tops]
        ax.errorbar(batches, [statistics.fmean(t) for t in tops], yerr=spread, marker="o", capsize=3, label=label)
    ax.set_title(title)
    save_batch_plot(fig, ax, path, "test top-1 (%)", sorted({r["global_batch"] for r in runs if r["key"] != "0"}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reduced", action="store_true", help="baseline + the three methods at 8k, the "
                        "recipes' lr only, one seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per chosen cell (default 3)")
    parser.add_argument("--grid", default="0.5,1,2", help="lr multipliers every cell is tuned over")
    parser.add_argument("--batches", default="2048,4096,8192", help="large global batches (multiples of 256)")
    parser.add_argument("--epochs", type=int, default=0, help="another epoch budget (warmup and lr decay "
                        "epochs scale with it)")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once, one thread each")
    parser.add_argument("--same-steps-as", type=int, default=0, metavar="BATCH",
                        help="give each large batch the optimizer steps BATCH takes in the recipe's epoch budget "
                             "(epochs x batch / BATCH): separates the batch size from the number of updates")
    parser.add_argument("--methods", default="abc", help="which of the methods a, b, c to run (default abc)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the batch-256 baseline")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "largebatch.md")
    parser.add_argument("--render", action="store_true", help="only render the table from the .json")
    args = parser.parse_args()
    if any(int(b) % MICRO_BATCH for b in args.batches.split(",")):
        parser.error(f"--batches: every batch must be a multiple of {MICRO_BATCH}")
    if args.reduced:
        args.seeds = 1
    store_path = args.out.with_suffix(".json")
    if args.render:
        store = json.loads(store_path.read_text())
    else:
        started = time.perf_counter()
        results = measure(args)
        results.sort(key=lambda r: (r["key"], r["global_batch"], r["lr_mult"], r["seed"]))
        store = {"command": "python bench/largebatch.py " + " ".join(sys.argv[1:]), "commit": commit(),
                 "date": time.strftime("%Y-%m-%d"), "wall_min": (time.perf_counter() - started) / 60,
                 "jobs": args.jobs, "recipe_epochs": recipe_epochs(), "plot": str(args.out.with_suffix(".png")),
                 "args": {k: getattr(args, k) for k in ("seeds", "grid", "batches", "epochs", "same_steps_as")},
                 "cells": results}
        store_path.parent.mkdir(parents=True, exist_ok=True)
        store_path.write_text(json.dumps(store, indent=1) + "\n")
    title = (f"Fashion-MNIST, the optimizer steps of batch {store['args']['same_steps_as']}"
             if store["args"]["same_steps_as"] else "Fashion-MNIST, fixed epoch budget, lr tuned on a holdout")
    write_plot(args.out.with_suffix(".png"), chosen_runs(store["cells"]), title)
    publish(render(store), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
