"""Does the online gradient noise scale predict the critical batch? McCandlish et al. 2018 in miniature.

Why: `track.noise_scale` tells users, from a small run, the batch beyond which a larger one stops paying
(B_simple). The paper's check is that the steps S a run needs to reach a fixed target follow
S = S_min (1 + B_noise / B) over batch sizes, with the fitted B_noise close to the measured B_simple.

How: Fashion-MNIST (Debian's dataset-fashion-mnist), resnet_small of recipes/fashion_mnist/_base.yaml trained
on 50,000 training images; the other 10,000 (`data.holdout`) decide when the target (--target, default 88 %
held-out top-1) is reached; the test set is not used. Global batches --batches (default 256, 1024, 2048,
8192) are 1 worker x accumulation of 256-image micro-batches (BatchNorm always over 256 images). The recipe
is (b) linear_warmup.yaml (Goyal et al.: linear scaling, 2 warmup epochs, momentum correction) with a
constant lr after warmup, so that "steps to the target" does not depend on a decay schedule fitted to an
epoch budget; as the paper does, the lr is tuned per batch: the same grid of multipliers (--grid, default 1,
0.5, 0.25) of the linear rule's lr for every batch, and the fewest steps over the grid count. A run writes a
checkpoint about 4 times per epoch (at least every step) and every checkpoint is scored on the holdout
afterwards, in order, until one reaches the target. Every run of 512 or more images per step measures the
gradient noise scale online (micro-batch 256 against the global batch); its value at the step the target
is reached is set beside the fit.

    .venv/bin/python bench/critical_batch.py              # 4 batches x 3 lrs, ~30 min on 2 cores
    .venv/bin/python bench/critical_batch.py --reduced    # 256, 2048 and 8192 at the linear lr only

Writes bench/results/critical_batch.md, the cells in .json beside it, and a PNG of steps against batch.
"""

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.procedures import commit  # noqa: E402
from bench.publish import publish_with_plot, save_batch_plot, save_store  # noqa: E402

RECIPE = REPO / "recipes" / "fashion_mnist" / "linear_warmup.yaml"
MICRO_BATCH = 256
REFERENCE_BATCH = 256  # optim.reference_batch of the recipe: lr 0.1 per 256 images
HOLDOUT = 10_000
TRAIN = 60_000 - HOLDOUT
EPOCHS = {256: 5, 512: 6, 1024: 7, 2048: 8, 4096: 14, 8192: 24}  # budgets expected to reach 88 % (S ~ S_min (1 + B_noise / B))
MAX_EPOCHS = [0]  # --max-epochs (a smoke run); 0 = none


def epochs_for(batch: int) -> int:
    budget = EPOCHS.get(batch, 24)
    return min(budget, MAX_EPOCHS[0]) if MAX_EPOCHS[0] else budget


def batch_at(changes: list[tuple[int, int]], step: int) -> int:
    """The global batch of optimizer step `step` (0-based) of a run whose batch became b at step s for each (s, b)
    of `changes` (the first at step 0; a fixed batch is one pair)."""
    return next(batch for start, batch in reversed(changes) if start <= step)


def sum_over_steps(changes: list[tuple[int, int]], steps: int, of=lambda batch: batch) -> float:
    """of(G_t) summed over the first `steps` steps of such a run: its examples by default."""
    bounds = [start for start, _ in changes[1:]] + [None]
    total = 0.0
    for (start, batch), end in zip(changes, bounds, strict=True):
        total += max(0, min(steps, steps if end is None else end) - start) * of(batch)
    return total


def run_cell(batch: int, lr_mult: float, target: float, seed: int, epochs: int, *, micro_batch: int = MICRO_BATCH,
             extra: tuple[str, ...] = (), checkpoint_every: int = 0, log_every: int = 0,
             score_every_examples: int = 0, detail: bool = False) -> dict:
    """Train one cell (a pool worker, one torch thread), then score its checkpoints in order on the holdout
    until one reaches `target`: the steps it took (None if never), and the online noise scale there.

    For other benches (bench/adaptive.py); the defaults are this bench's cells. `micro_batch`: the images of one
    micro-batch (data.batch_size; the global `batch` is accumulated from them); `extra`: overrides after the
    cell's own; `checkpoint_every` / `log_every`: steps between checkpoints / step records (0: about 4 per epoch);
    `score_every_examples`: score only the first checkpoint past each multiple of this many examples, counted
    from the run's own batches (a batch that changes); `detail`: also the batch changes, the step records'
    batch, gain and noise, and the holdout top-1 of the last checkpoint (the end of the budget)."""
    import torch

    torch.set_num_threads(1)
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.records.report import read_history
    from bigbatch.trainer.run.loop import Trainer
    from bigbatch.trainer.search.score import holdout_top1, load_trained

    steps_per_epoch = TRAIN // batch
    every = max(1, round(steps_per_epoch / 4))
    overrides = [f"seed={seed}", f"train.accumulation_steps={batch // micro_batch}", f"data.holdout={HOLDOUT}",
                 f"optim.base_lr={0.1 * lr_mult:g}", "optim.schedule=constant", "optim.decay_epochs=[]",
                 f"train.epochs={epochs}", f"train.checkpoint_every_steps={checkpoint_every or every}",
                 "train.keep_checkpoints=100000", "train.log_every_steps=" + str(log_every or every),
                 *([f"data.batch_size={micro_batch}"] if micro_batch != MICRO_BATCH else []), *extra]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbatch-critical-") as run_dir:
        recipe = load_recipe(RECIPE, overrides)
        trainer = Trainer(recipe, run_dir, LocalCollective("cpu"))
        trainer.fit()
        train_s = time.perf_counter() - started
        history = read_history(Path(run_dir) / "metrics.jsonl")
        changes = [(0, batch)] + [(r["step"], r["to"]) for r in history if r.get("event") == "batch_change"]

        def score(path: Path) -> float:
            return holdout_top1(load_trained(recipe, trainer.parts.data, path, torch.device("cpu")),
                                trainer.parts.data, recipe, torch.device("cpu"))

        paths = sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        reached, curve, mark = None, [], 0
        for path in paths:
            step = int(path.stem.split("_")[1])
            if score_every_examples:
                passed = int(sum_over_steps(changes, step)) // score_every_examples
                if passed <= mark and path != paths[-1]:
                    continue
                mark = passed
            top1 = score(path)
            curve.append((step, top1))
            if top1 >= target:
                reached = step
                break
        final = None
        if detail and paths:
            last = int(paths[-1].stem.split("_")[1])
            final = (last, curve[-1][1] if curve[-1][0] == last else score(paths[-1]))
    noise = [(r["step"], r["gradient_noise_scale"]) for r in history
             if "event" not in r and "gradient_noise_scale" in r]
    at = min(noise, key=lambda n: abs(n[0] - reached))[1] if noise and reached else None
    cell = {"batch": batch, "lr_mult": lr_mult, "lr": 0.1 * lr_mult * batch / REFERENCE_BATCH, "seed": seed,
            "steps_to_target": reached, "b_simple_at_target": at, "curve": curve,
            "b_simple": noise, "train_s": train_s, "wall_s": time.perf_counter() - started}
    if detail:
        cell.update(changes=changes, final_step=final and final[0], final_top1=final and final[1],
                    log=[{key: r.get(key) for key in ("step", "global_batch", "adascale_gain", "gradient_noise_scale",
                                                      "lr", "progress")}
                         for r in history if "event" not in r and "global_batch" in r],
                    events=[{key: r.get(key) for key in ("step", "from", "to", "why", "noise_scale_lower", "progress")}
                            for r in history if r.get("event") == "batch_change"])
    return cell


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least squares of S = S_min + S_min B_noise (1 / B): (S_min, B_noise)."""
    xs, ys = [1 / b for b, _ in points], [float(s) for _, s in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    s_min = my - slope * mx
    return s_min, slope / s_min


def best_per_batch(cells: list[dict]) -> dict[int, dict]:
    """Per batch, the cell of the grid that reached the target in the fewest steps (the paper tunes the lr per
    batch the same way)."""
    best: dict[int, dict] = {}
    for cell in cells:
        if cell["steps_to_target"] is None:
            continue
        if cell["batch"] not in best or cell["steps_to_target"] < best[cell["batch"]]["steps_to_target"]:
            best[cell["batch"]] = cell
    return dict(sorted(best.items()))


def render(store: dict, plot: Path) -> str:
    cells, target = store["cells"], store["target"]
    best = best_per_batch(cells)
    grid = sorted({c["lr_mult"] for c in cells}, reverse=True)
    batches = sorted({c["batch"] for c in cells})
    lines = ["# Critical batch: steps to a held-out target against the online noise scale (Fashion-MNIST)", "",
             f"resnet_small on 50,000 training images, the target {100 * target:g} % top-1 on the {HOLDOUT:,} held-out "
             "training images (the test set is not used). Recipe (b) linear_warmup.yaml, constant lr after 2 warmup "
             "epochs; the lr of each batch is the best of the same grid, x" + ", x".join(f"{m:g}" for m in grid)
             + " the linear rule's 0.1 x B / 256. Seed " + str(store["seed"]) + ".", "",
             "## Steps to the target (the fewest over the lr grid in bold; - : not reached in the budget)", "",
             "| batch | epochs budget | " + " | ".join(f"lr x{m:g}" for m in grid) + " | B_simple at the target |",
             "|---:|---:|" + "---:|" * (len(grid) + 1)]
    for b in batches:
        row = []
        for m in grid:
            hit = [c for c in cells if c["batch"] == b and c["lr_mult"] == m]
            steps = hit[0]["steps_to_target"] if hit else None
            text = "" if not hit else "-" if steps is None else str(steps)
            row.append(f"**{text}**" if b in best and hit and best[b] is hit[0] else text)
        at = best[b]["b_simple_at_target"] if b in best else None
        lines.append(f"| {b} | {store['epochs'][str(b)]} | " + " | ".join(row) + f" | {'' if at is None else f'{at:.0f}'} |")
    points = [(b, c["steps_to_target"]) for b, c in best.items()]
    measured = [c["b_simple_at_target"] for c in best.values() if c["b_simple_at_target"]]
    lines += [""]
    if len(points) >= 3:
        s_min, b_noise = fit(points)
        lines += [f"Fit S = S_min (1 + B_noise / B) by least squares over the {len(points)} batches: "
                  f"**S_min = {s_min:.0f} steps, B_noise = {b_noise:.0f}**. "
                  + " ".join(f"B {b}: measured {s}, fitted {s_min * (1 + b_noise / b):.0f}." for b, s in points)]
        if measured:
            online = statistics.median(measured)
            lines += ["", f"Online B_simple at the target (median over the batches that measured it, "
                      f"{', '.join(f'{v:.0f}' for v in measured)}): **{online:.0f}**; fitted B_noise / online "
                      f"B_simple = **{b_noise / online:.2f}**."]
    else:
        lines += ["Fewer than 3 batches reached the target: no fit."]
    lines += ["", f"![steps to the target against the global batch]({plot.name})", "",
              f"{len(cells)} runs; measured by `{store['command']}` at commit {store['commit']} on {store['date']}: "
              f"{store['wall_min']:.1f} min ({store['jobs']} processes x 1 torch thread)."]
    return "\n".join(lines)


def write_plot(path: Path, store: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_per_batch(store["cells"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if best:
        ax.plot(list(best), [c["steps_to_target"] for c in best.values()], "o", label="measured (best lr)")
    if len(best) >= 3:
        s_min, b_noise = fit([(b, c["steps_to_target"]) for b, c in best.items()])
        xs = [2 ** (k / 8) for k in range(8 * 7, 8 * 14)]
        ax.plot(xs, [s_min * (1 + b_noise / x) for x in xs], "-", label=f"S_min (1 + B_noise/B), B_noise {b_noise:.0f}")
        ax.axvline(b_noise, color="tab:orange", linestyle="--", label="fitted B_noise")
    measured = [c["b_simple_at_target"] for c in best.values() if c["b_simple_at_target"]]
    if measured:
        ax.axvline(statistics.median(measured), color="tab:green", linestyle=":", label="online B_simple")
    ax.set_yscale("log")
    save_batch_plot(fig, ax, path, "steps to the target")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="256,1024,2048,8192")
    parser.add_argument("--grid", default="1,0.5,0.25", help="multipliers of the linear rule's lr")
    parser.add_argument("--target", type=float, default=0.88, help="held-out top-1 to reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reduced", action="store_true", help="256, 2048 and 8192 at the linear lr only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "critical_batch.md")
    parser.add_argument("--render", action="store_true", help="only render from the .json")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap every budget (a smoke run)")
    args = parser.parse_args()
    MAX_EPOCHS[0] = args.max_epochs
    store_path = args.out.with_suffix(".json")
    if args.render:
        store = json.loads(store_path.read_text())
    else:
        batches = [256, 2048, 8192] if args.reduced else [int(b) for b in args.batches.split(",")]
        grid = [1.0] if args.reduced else [float(m) for m in args.grid.split(",")]
        if any(b % MICRO_BATCH for b in batches):
            parser.error(f"--batches: multiples of {MICRO_BATCH}")
        started, cells = time.perf_counter(), []
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            # the longest cells first, so that the two processes finish together
            todo = sorted(((b, m) for b in batches for m in grid), key=lambda c: -epochs_for(c[0]))
            for job in futures.as_completed([pool.submit(run_cell, b, m, args.target, args.seed, epochs_for(b)) for b, m in todo]):
                cell = job.result()
                cells.append(cell)
                print(f"batch {cell['batch']:5d} lr x{cell['lr_mult']:g}: target at step {cell['steps_to_target']} "
                      f"(B_simple there {cell['b_simple_at_target']}) in {cell['wall_s']:.0f} s", flush=True)
        store = {"command": "python bench/critical_batch.py " + " ".join(sys.argv[1:]), "commit": commit(),
                 "date": time.strftime("%Y-%m-%d"), "wall_min": (time.perf_counter() - started) / 60,
                 "jobs": args.jobs, "target": args.target, "seed": args.seed,
                 "epochs": {str(b): epochs_for(b) for b in batches},
                 "cells": sorted(cells, key=lambda c: (c["batch"], -c["lr_mult"]))}
        save_store(store, args.out)
    publish_with_plot(store, args.out, write_plot, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
