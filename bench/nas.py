"""Does Single-Path One-Shot search find a better network than chance, on real data and under a cap?

recipes/search/fashion_spos.yaml (Fashion-MNIST from Debian's package; the SPOS space at half depth, 10
choice blocks, 24-64 channels at 28 px; a 1.20M multiply-add cap) runs through `bigbatch search`'s own code:
stage 1 trains the supernet, stage 2 runs the evolution beside a random search with the same candidate
budget (Ray actors), and the ranking check (`search.verify`) trains the top 4 of the evolution and 4 random
candidates for one epoch each and reports Kendall's tau between supernet score and their held-out top-1.
Every score used for a decision is on `data.holdout` (6,000 training images set apart); the test set
(10,000 images) is scored once per retrained network at the end.

Then the table the issue asks for: the found network, 3 random networks under the same cap (uniform
draws, seed fixed before the search ran) and the all-3x3 network, each retrained from scratch with the
recipe's `search.retrain` (the whole training set) for --seeds seeds, in --jobs processes of 1 torch thread.
Every cell is the same recipe, optimizer and epochs; only `model.kwargs.choices` differs.

    .venv/bin/python bench/nas.py                    # about 50 minutes on 2 cores
    .venv/bin/python bench/nas.py --reduced          # a smoke run of every stage (minutes; figures mean nothing)

The work directory (--work, default /tmp/bigbatch-nas) keeps every stage: a rerun continues the supernet,
the search and the retrained cells it finds there. Writes bench/results/nas.json and nas.md.
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

from bench.procedures import commit, mean_std, per_cell, seed_range  # noqa: E402
from bench.publish import publish  # noqa: E402

RECIPE = REPO / "recipes" / "search" / "fashion_spos.yaml"
REDUCED = ["train.epochs=1", "search.population=6", "search.generations=2", "search.parents=2",
           "search.mutations=2", "search.crossovers=2", "search.verify=1", "search.retrain=[train.epochs=1]"]
RANDOM_NETWORKS = 3


def train_alone(recipe_path: str, overrides: list[str]) -> dict:
    """Train a recipe from scratch in this process (a pool worker, 1 thread): its final test top-1."""
    import torch

    torch.set_num_threads(1)
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bigbatch-nas-") as run_dir:
        summary = Trainer(load_recipe(recipe_path, overrides), run_dir, LocalCollective("cpu")).fit()
    return {"test": summary["top1"], "train_s": time.perf_counter() - started}


def networks(recipe, best: dict, checkpoint: Path) -> dict[str, dict]:
    """name: search row (choices, macs, params, supernet score) of each network the table retrains."""
    import numpy as np

    from bigbatch.cluster.search import SearchSpace
    from bigbatch.trainer.search import evolution
    from bigbatch.trainer.search.score import CandidateScorer

    space = SearchSpace(recipe)
    drawn = evolution.random_candidates(np.random.default_rng([recipe.seed, 3]), space.space, RANDOM_NETWORKS,
                                        set())
    chosen = {"found": best["choices"], **{f"random {i + 1}": list(c) for i, c in enumerate(drawn)},
              "all-3x3": [0] * space.space.positions}
    scorer = CandidateScorer(recipe, checkpoint)
    return {name: {"choices": c, "macs": space.macs(c), "params": space.params(c), "score": scorer.score(c),
                   "generation": best["generation"] if name == "found" else -1} for name, c in chosen.items()}


def retrain(recipe, rows: dict[str, dict], work: Path, seeds: int, jobs: int) -> list[dict]:
    """Every (network, seed) cell, from work/retrain.json when it was trained before."""
    from bigbatch.trainer.search.results import best_recipe_text

    store = work / "retrain.json"
    done = json.loads(store.read_text()) if store.is_file() else []
    cells = {}
    for name, row in rows.items():
        path = work / "retrain" / f"{name.replace(' ', '_')}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(best_recipe_text(recipe, row, str(RECIPE)))
        for seed in range(seeds):
            if not any(c["name"] == name and c["seed"] == seed and c["choices"] == row["choices"] for c in done):
                cells[(name, seed)] = (str(path), [*recipe.search.retrain, f"seed={seed}"])
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running = {pool.submit(train_alone, *job): key for key, job in cells.items()}
        for job in futures.as_completed(running):
            (name, seed), result = running[job], job.result()
            done.append({"name": name, "seed": seed, "choices": rows[name]["choices"], **result})
            store.write_text(json.dumps(done, indent=1))
            print(f"retrained {name:9s} seed {seed}: {result}", flush=True)
    return [c for c in done if c["name"] in rows and c["choices"] == rows[c["name"]]["choices"]
            and c["seed"] < seeds]


def run(args: argparse.Namespace) -> dict:
    from bigbatch.cluster.search import run_search, supernet_checkpoint
    from bigbatch.trainer.recipe import load_recipe

    recipe = load_recipe(RECIPE, REDUCED if args.reduced else [])
    work = Path(args.work)
    started = time.perf_counter()
    checkpoint = supernet_checkpoint(recipe, work, verbose=False)
    supernet_s = time.perf_counter() - started
    started = time.perf_counter()
    best = run_search(recipe, work, resume="auto")
    search_s = time.perf_counter() - started
    state = json.loads((work / "search_state.json").read_text())
    verified = json.loads((work / "verify.json").read_text())
    rows = networks(recipe, best, checkpoint)
    started = time.perf_counter()
    cells = retrain(recipe, rows, work, args.seeds, args.jobs)
    return {"recipe": str(RECIPE.relative_to(REPO)), "reduced": args.reduced, "seeds": args.seeds,
            "jobs": args.jobs, "cap_m": recipe.search.max_macs_m, "retrain": recipe.search.retrain,
            "rows": rows, "cells": cells, "verify": verified, "search_rows": state["rows"],
            "wall_s": {"supernet (this run)": supernet_s, "search + verify (this run)": search_s,
                       "scoring, sum over generations": sum(t["wall_s"] for t in state["timing"]),
                       "retrain (this run)": time.perf_counter() - started},
            "supernet_steps": _supernet_steps(work), "commit": commit(), "date": time.strftime("%Y-%m-%d")}


def _supernet_steps(work: Path) -> int:
    summary = work / "supernet" / "summary.json"
    return json.loads(summary.read_text()).get("step", 0) if summary.is_file() else 0


def render(result: dict) -> str:
    from bigbatch.trainer.search.results import per_generation

    rows, cells = result["rows"], result["cells"]
    search = result["search_rows"]
    evolution, random = per_generation(search, "evolution"), per_generation(search, "random")
    lines = ["# SPOS on Fashion-MNIST: found vs random vs all-3x3", "",
             f"Recipe `{result['recipe']}`{' (--reduced: a smoke run, the figures mean nothing)' if result['reduced'] else ''}; "
             f"cap {result['cap_m']}M multiply-adds. Supernet and search scores: held-out top-1 (6,000 training "
             "images set apart). Retrained: test top-1 (10,000 images, scored once), "
             f"`{' '.join(result['retrain'])}` on the whole training set, mean ± std over seeds "
             f"{list(range(result['seeds']))}.", "",
             "## Search: evolution against random at the same candidate budget", "",
             "| | candidates | best supernet score | mean of the last generation |", "|---|---:|---:|---:|",
             f"| evolution | {sum(p['candidates'] for p in evolution)} | {100 * evolution[-1]['best']:.2f} | "
             f"{100 * evolution[-1]['mean']:.2f} |",
             f"| random | {sum(p['candidates'] for p in random)} | {100 * random[-1]['best']:.2f} | "
             f"{100 * random[-1]['mean']:.2f} |", "",
             "## Retrained from scratch", "",
             "| network | choices | multiply-adds | params | supernet score | test top-1 | wall s per run |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {' '.join(map(str, row['choices']))} | {row['macs'] / 1e6:.3f}M | "
                     f"{row['params'] / 1e3:.1f}k | {100 * row['score']:.2f} | "
                     f"{mean_std(per_cell(cells, name, 'test'))} | "
                     f"{statistics.fmean(per_cell(cells, name, 'train_s')):.0f} |")
    lines += ["", *verdicts(rows, cells), "", *ranking_lines(result["verify"]), "", "## Wall time", ""]
    lines += [f"- {stage}: {seconds / 60:.1f} min" for stage, seconds in result["wall_s"].items()]
    lines += [f"- the supernet trained {result['supernet_steps']} steps",
              f"- measured at commit {result['commit']} on {result['date']}, 2 cores; retraining in "
              f"{result['jobs']} processes x 1 thread. A stage found done in the work directory takes ~0 min."]
    return "\n".join(lines) + "\n"


def verdicts(rows: dict, cells: list[dict]) -> list[str]:
    """The found network against the random ones' mean and against all-3x3, counted only beyond the spread."""
    randoms = [name for name in rows if name.startswith("random")]
    found = statistics.fmean(per_cell(cells, "found", "test"))
    random_mean = statistics.fmean(statistics.fmean(per_cell(cells, n, "test")) for n in randoms)
    spread = max(seed_range(cells, n, "test") for n in ["found", *randoms])
    out = []
    for label, other, other_spread in (
            ("the mean of the random networks", random_mean, spread),
            ("all-3x3", statistics.fmean(per_cell(cells, "all-3x3", "test")),
             max(seed_range(cells, "found", "test"), seed_range(cells, "all-3x3", "test")))):
        gap = found - other
        verdict = "beats" if gap > other_spread else "is behind" if gap < -other_spread else "is level with"
        out.append(f"- The found network {verdict} {label}: {100 * gap:+.2f} points "
                   f"(counted beyond the largest seed range of the cells compared, {100 * other_spread:.2f}).")
    return out


def ranking_lines(verified: dict) -> list[str]:
    lines = [f"## Ranking check: Kendall's tau = {verified['kendall_tau']:.3f}", "",
             f"The top {verified['k']} of the evolution and {verified['k']} random candidates, each trained alone "
             f"(`{' '.join(verified['retrain'])}`, without the held-out images) and scored on the held-out "
             "images:", "", "| method | choices | supernet | alone |", "|---|---|---:|---:|"]
    return lines + [f"| {d['method']} | {' '.join(map(str, d['choices']))} | {100 * d['supernet']:.2f} | "
                    f"{100 * d['standalone']:.2f} |" for d in verified["candidates"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/bigbatch-nas", help="work directory (kept: a rerun continues)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reduced", action="store_true", help="a smoke run of every stage")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "nas.md")
    args = parser.parse_args()
    if args.reduced and args.work == parser.get_default("work"):
        args.work += "-reduced"
    result = run(args)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    publish(render(result), args.out)


if __name__ == "__main__":
    main()
