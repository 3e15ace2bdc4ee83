"""Which of timm's and torchvision's training procedures help on Fashion-MNIST, and does the lecture's order of
normalizations hold at 4 images per worker?

Part 1, procedures (issue 19). Fashion-MNIST (Debian's dataset-fashion-mnist) as a folder of JPEG files, so
that every cell takes the same decoded-image path (RandomResizedCrop + flip at 28 px, grey): of each class
the first --per-class training images (default 2,000) to train on, a fifth as many more held out (a split
of the TRAINING set: the decisions below are made on it), and the 10,000 test images scored once at the end. The recipe is
recipes/fashion_mnist/baseline.yaml (resnet_small, batch 256, 12 epochs, SGD with step decay). Cells:
the baseline, then each procedure alone with the value its source publishes, fixed before any run (none
tuned here): EMA (decay 0.998 with timm's warmup), Mixup 0.2 / CutMix 1.0 (switch 0.5, torchvision's new
recipe), Random Erasing 0.25 (timm's usual --reprob), TrivialAugmentWide. A procedure "helped" when its mean
held-out top-1 over the seeds beats the baseline's by more than the larger seed range (max - min) of the two
cells; the ones that helped then train together. EMA cells are scored with the average (top1_ema).

Part 2, normalization at 8 workers x 4 images (the lecture's "small batch: multi-GPU BN > GN/BRN > BN/LN").
Fashion-MNIST in memory (60,000 training images; the 10,000 test images held out, nothing chosen on them),
resnet_small, global batch 32 (lr 0.1 x 32 / 256 by the linear rule), cosine decay, --norm-epochs epochs,
for each of: synced BN, GroupNorm (32 groups), Batch Renorm, per-worker BN, LayerNorm. Eight workers of 4
images are simulated in one process, each cell doing the same arithmetic as the 8-worker run:
per-worker BN and Batch Renorm as one batch of 32 whose normalization layers run as 8 unsynced DDP ranks
of 4 do (bench/virtual_ranks.py: each slice of 4 normalised by its own statistics from rank 0's moving
averages, only rank 0's move kept; tests/bench/test_virtual_ranks.py checks it against 8 gloo ranks; the
earlier runs accumulated 8 micro-batches of 4, which moved the averages 8 times a step and fed Batch
Renorm statistics the same step had moved); synced BN as one micro-batch of 32, since SyncBN over 8 x 4
normalises over the union of the workers' images (tests/trainer/distributed/test_sync_bn.py checks that
equivalence with 8 gloo ranks); GroupNorm and LayerNorm as one micro-batch of 32, since they normalise each
image alone, so the split changes nothing but speed. Batch Renorm's r_max / d_max schedule (Ioffe 2017 section 4: 1 / 0 until 5k steps, d_max 5 at
25k, r_max 3 at 40k) is scaled so that r_max reaches 3 at 80 % of the run.

Cells run in --jobs processes of one torch thread each.

    .venv/bin/python bench/procedures.py                    # both parts, 2 seeds (about 40 minutes on 2 cores)
    .venv/bin/python bench/procedures.py --part norm        # one part
    .venv/bin/python bench/procedures.py --epochs 1 --norm-epochs 1 --seeds 1 --per-class 500   # a smoke run

Writes bench/results/procedures.json (every cell's measures, per part; a part run alone replaces only
its own) and renders bench/results/procedures.md from it (or --out and its .json).
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

from bench.fashion_folder import write_fashion_folder  # noqa: E402
from bench.publish import publish  # noqa: E402

BASELINE = REPO / "recipes" / "fashion_mnist" / "baseline.yaml"
PROCEDURES = {  # name: overrides, each the value its source publishes
    "baseline": [],
    "+EMA": ["train.ema.decay=0.998", "train.ema.warmup=true"],
    "+mixup/cutmix": ["train.mixup.alpha=0.2", "train.mixup.cutmix_alpha=1.0", "train.mixup.switch_prob=0.5"],
    "+random erasing": ["data.random_erasing=0.25"],
    "+TrivialAugment": ["data.augment=trivialaugment"],
}
WORKERS, PER_WORKER = 8, 4
NORMS = {  # name: (model.norm, batch, unsynced ranks its normalization layers run as; 1: as they are)
    "synced BN (8 x 4)": ("batch", WORKERS * PER_WORKER, 1),
    "GroupNorm": ("group", WORKERS * PER_WORKER, 1),
    "Batch Renorm": ("batch_renorm", WORKERS * PER_WORKER, WORKERS),
    "per-worker BN": ("batch", WORKERS * PER_WORKER, WORKERS),
    "LayerNorm": ("layer", WORKERS * PER_WORKER, 1),
}
LECTURE_ORDER = [["synced BN (8 x 4)"], ["GroupNorm", "Batch Renorm"], ["per-worker BN", "LayerNorm"]]


def train_cell(overrides: list[str], test_root: str | None, ranks: int = 1) -> dict:
    """Train the baseline recipe with `overrides` in this process (a pool worker): held-out top-1 and, with
    `test_root`, the top-1 of the final weights (the average when EMA is on) on its folder. `ranks` > 1: the
    batch norms run as that many unsynced ranks (bench/virtual_ranks.py)."""
    import torch

    torch.set_num_threads(1)
    from bigbatch.trainer.data.folder import ImageFolderDataset, scan
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.evaluate import evaluate
    from bigbatch.trainer.run.loop import Trainer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbatch-procedures-") as run_dir:
        recipe = load_recipe(BASELINE, overrides)
        collective = LocalCollective("cpu")
        trainer = Trainer(recipe, run_dir, collective)
        if ranks > 1:
            from bench.virtual_ranks import emulate_unsynced_ranks

            emulate_unsynced_ranks(trainer.model, ranks)
        summary = trainer.fit()
        result = {"holdout": summary.get("top1_ema", summary["top1"]), "steps": summary["step"],
                  "train_s": time.perf_counter() - started}
        if test_root:
            samples, _ = scan(Path(test_root) / "test")
            data = trainer.parts.data
            test = ImageFolderDataset(samples, data.image_size, False, recipe.seed, data.channels,
                                      recipe.data.resize_quality)
            model = trainer.ema.module if trainer.ema is not None else trainer.model
            result["test"] = evaluate(model, test, collective, 500, normalize=data.normalize)["top1"]
    return result


def procedure_overrides(names: list[str], root: Path, seed: int, epochs: int) -> list[str]:
    extra = [o for name in names for o in PROCEDURES[name]]
    return [f"seed={seed}", "data.name=folder", f"data.root={root}", "data.image_size=28", "data.channels=1",
            "data.eval_batch_size=500", *(budget(epochs) if epochs else []), *extra]


def budget(epochs: int) -> list[str]:
    """Another epoch budget: the recipe's step decays (epochs 4, 8, 11 of 12) at the same fractions of it
    (a constant lr below 4 epochs, a smoke run)."""
    if epochs < 4:
        return [f"train.epochs={epochs}", "optim.schedule=constant"]
    return [f"train.epochs={epochs}", f"optim.decay_epochs=[{', '.join(str(round(e * epochs / 12)) for e in (4, 8, 11))}]"]


def norm_overrides(name: str, seed: int, epochs: int, train_examples: int) -> list[str]:
    norm, batch, _ = NORMS[name]
    steps = epochs * (train_examples // (WORKERS * PER_WORKER))
    scale = 0.8 * steps / 40_000  # the paper's 40k-step ramp ends at 80 % of this run
    renorm = (f"model.renorm={{start_step: {round(5000 * scale)}, d_max_step: {round(25_000 * scale)}, "
              f"r_max_step: {round(40_000 * scale)}}}")
    return [f"seed={seed}", f"model.norm={norm}", f"data.batch_size={batch}", "train.accumulation_steps=1",
            "data.eval_batch_size=500", f"train.epochs={epochs}", "optim.schedule=cosine", "optim.decay_epochs=[]",
            "train.log_every_steps=100", *([renorm] if norm == "batch_renorm" else [])]


def run_all(cells: dict[tuple[str, int], list[str]], test_root: str | None, jobs: int,
            ranks: dict[str, int] | None = None) -> list[dict]:
    """Train every cell (name, seed) in `jobs` processes; one record per cell: name, seed and its measures.
    `ranks`: cells whose batch norms run as that many unsynced ranks."""
    results = []
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running = {pool.submit(train_cell, overrides, test_root, (ranks or {}).get(key[0], 1)): key
                   for key, overrides in cells.items()}
        for job in futures.as_completed(running):
            (name, seed), result = running[job], job.result()
            results.append({"name": name, "seed": seed, **result})
            print(f"{name:28s} seed {seed}: {result}", flush=True)
    return sorted(results, key=lambda r: (list(cells).index((r["name"], r["seed"]))))


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def per_cell(cells: list[dict], name: str, field: str) -> list[float]:
    return [r[field] for r in sorted(cells, key=lambda r: r["seed"]) if r["name"] == name]


def seed_range(cells: list[dict], name: str, field: str) -> float:
    values = per_cell(cells, name, field)
    return max(values) - min(values)


def beats(cells: list[dict], a: str, b: str, field: str = "holdout") -> float:
    """Mean of `a` minus mean of `b`, counted only beyond the larger seed range (max - min) of the two cells:
    +1 a is ahead, -1 behind, 0 within the spread."""
    gap = statistics.fmean(per_cell(cells, a, field)) - statistics.fmean(per_cell(cells, b, field))
    spread = max(seed_range(cells, a, field), seed_range(cells, b, field))
    return 1 if gap > spread else -1 if gap < -spread else 0


def measure_procedures(args: argparse.Namespace, tmp: Path) -> list[dict]:
    root = tmp / "fashion"
    write_fashion_folder(root, args.per_class, args.per_class // 5, test=True)
    seeds = range(args.seeds)
    cells = run_all({(name, s): procedure_overrides([name], root, s, args.epochs) for name in PROCEDURES
                     for s in seeds}, str(root), args.jobs)
    winners = [name for name in PROCEDURES if name != "baseline" and beats(cells, name, "baseline") > 0]
    if len(winners) > 1:
        together = " ".join(winners) + " together"
        cells += run_all({(together, s): procedure_overrides(winners, root, s, args.epochs) for s in seeds},
                         str(root), args.jobs)
    return cells


def procedures_lines(part: dict) -> list[str]:
    cells, args = part["cells"], part["args"]
    winners = [name for name in PROCEDURES if name != "baseline" and beats(cells, name, "baseline") > 0]
    lines = [f"## Part 1: procedures (resnet_small, batch 256, {args['epochs'] or 12} epochs, seeds "
             f"{list(range(args['seeds']))})", "",
             f"Fashion-MNIST as JPEG folders: {10 * args['per_class']} training images, {2 * args['per_class']} "
             "held out from the training split (decisions), 10,000 test images (scored once). Top-1 %, mean ± std "
             "over the seeds; EMA cells scored with the average. \"helped\": the held-out mean beats the "
             "baseline's by more than the larger seed range (max - min) of the two cells.", "",
             "| cells | held-out top-1 | test top-1 | vs baseline (held-out) | helped? | wall s per run |",
             "|---|---:|---:|---:|---|---:|"]
    base = statistics.fmean(per_cell(cells, "baseline", "holdout"))
    for name in dict.fromkeys(r["name"] for r in cells):
        hold = per_cell(cells, name, "holdout")
        verdict = "-" if name == "baseline" or name not in PROCEDURES else \
            ("yes" if beats(cells, name, "baseline") > 0 else "no")
        lines.append(f"| {name} | {mean_std(hold)} | {mean_std(per_cell(cells, name, 'test'))} | "
                     f"{100 * (statistics.fmean(hold) - base):+.2f} | {verdict} | "
                     f"{statistics.fmean(per_cell(cells, name, 'train_s')):.0f} |")
    lines += ["", f"Helped: {', '.join(winners) or 'none'}."
              + ("" if len(winners) > 1 else " With fewer than two, there is no combination to train.")]
    return lines + provenance(part)


def measure_norms(args: argparse.Namespace) -> list[dict]:
    from bigbatch.trainer.data import load_data
    from bigbatch.trainer.recipe import load_recipe

    train_examples = len(load_data(load_recipe(BASELINE, []).data, seed=0).train)
    return run_all({(name, s): norm_overrides(name, s, args.norm_epochs, train_examples) for name in NORMS
                    for s in range(args.seeds)}, None, args.jobs, {name: ranks for name, (_, _, ranks) in NORMS.items()})


def norm_lines(part: dict) -> list[str]:
    cells, args = part["cells"], part["args"]
    means = {name: statistics.fmean(per_cell(cells, name, "holdout")) for name in NORMS}
    lines = [f"## Part 2: normalization at {WORKERS} workers x {PER_WORKER} images (global batch "
             f"{WORKERS * PER_WORKER}, {args['norm_epochs']} epochs, seeds {list(range(args['seeds']))})", "",
             "Top-1 % on the 10,000 Fashion-MNIST test images (nothing was chosen on them), mean ± std.", "",
             "| normalization | how it runs here | top-1 | wall s per run |", "|---|---|---:|---:|"]
    for name, (norm, batch, ranks) in NORMS.items():
        how = f"{batch} images as {ranks} unsynced ranks of {batch // ranks}" if ranks > 1 else f"{batch} images"
        lines.append(f"| {name} | model.norm {norm}, {how} | "
                     f"{mean_std(per_cell(cells, name, 'holdout'))} | "
                     f"{statistics.fmean(per_cell(cells, name, 'train_s')):.0f} |")
    measured = sorted(NORMS, key=lambda n: -means[n])
    lines += ["", "Measured order (best first): " + " > ".join(f"{n} ({100 * means[n]:.2f})" for n in measured), "",
              order_verdict(cells, means)]
    return lines + provenance(part)


def order_verdict(cells: list[dict], means: dict[str, float]) -> str:
    """Does every pair the lecture ranks (a tier above another) come out that way by more than the larger seed
    range of the pair?"""
    agree, against, unclear = [], [], []
    for upper, tier in enumerate(LECTURE_ORDER):
        for lower_tier in LECTURE_ORDER[upper + 1:]:
            for a in tier:
                for b in lower_tier:
                    pair = f"{a} vs {b} ({100 * (means[a] - means[b]):+.2f})"
                    {1: agree, -1: against, 0: unclear}[beats(cells, a, b)].append(pair)
    answer = "yes" if not against and not unclear else "partly" if agree else "no"
    return (f"Does the measured order match \"multi-GPU BN > GN/BRN > BN/LN\"? **{answer}**: of the lecture's "
            f"{len(agree) + len(against) + len(unclear)} ranked pairs, {len(agree)} hold by more than the pair's "
            f"larger seed range, {len(against)} are reversed by more than it, and {len(unclear)} are within it. "
            f"Held: {'; '.join(agree) or 'none'}. Reversed: {'; '.join(against) or 'none'}. Within the seed "
            f"range: {'; '.join(unclear) or 'none'}.")


def provenance(part: dict) -> list[str]:
    return ["", f"Measured by `{part['command']}` at commit {part['commit']} on {part['date']}: "
                f"{part['wall_min']} ({part['jobs']} processes x 1 torch thread, 2 cores)."
            + (f" {part['note']}" if part.get("note") else "")]


def commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("both", "procedures", "norm"), default="both")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=0, help="part 1: another epoch budget (default the "
                        "recipe's 12; the step decays keep their fractions)")
    parser.add_argument("--norm-epochs", type=int, default=4, help="part 2: epochs of every cell")
    parser.add_argument("--per-class", type=int, default=2000, help="part 1: training images per class "
                        "(a fifth of it more are held out)")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once, one thread each")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "procedures.md")
    args = parser.parse_args()
    store = args.out.with_suffix(".json")  # every cell's measures, per part: the table is rendered from it
    parts = json.loads(store.read_text()) if store.is_file() else {}
    command = "python bench/procedures.py " + " ".join(sys.argv[1:])
    for name in ("procedures", "norm"):
        if args.part not in ("both", name):
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bigbatch-procedures-") as tmp:
            cells = measure_procedures(args, Path(tmp)) if name == "procedures" else measure_norms(args)
        parts[name] = {"command": command.strip(), "commit": commit(), "date": time.strftime("%Y-%m-%d"),
                       "wall_min": f"{(time.perf_counter() - started) / 60:.1f} min", "jobs": args.jobs,
                       "args": {k: getattr(args, k) for k in ("seeds", "epochs", "norm_epochs", "per_class")},
                       "cells": cells}
        store.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(json.dumps(parts, indent=1) + "\n")
    lines = ["# Training procedures and normalizations in miniature (Fashion-MNIST)", ""]
    if "procedures" in parts:
        lines += procedures_lines(parts["procedures"]) + [""]
    if "norm" in parts:
        lines += norm_lines(parts["norm"])
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
