"""What a search leaves in its directory: search.jsonl (every scored candidate), best.yaml (a recipe that trains
the best one from scratch) and report/ (best and mean score per generation, evolution against random)."""

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import yaml

from bigbatch.trainer.atomic import write_atomic
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.records.report import save_figure

SUPERNET_KWARGS_KEPT = ("stage_channels", "stage_repeats", "small_input", "drop_rate")  # the space's shape


def write_candidates(path: Path, rows: list[dict]) -> None:
    """search.jsonl, rewritten whole (atomically) after every generation from the search state."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def per_generation(rows: list[dict], method: str) -> list[dict]:
    """Best-so-far and this generation's mean score of one method, generation by generation."""
    out, best = [], float("-inf")
    generations = sorted({r["generation"] for r in rows if r["method"] == method})
    for g in generations:
        scores = [r["score"] for r in rows if r["method"] == method and r["generation"] == g]
        best = max(best, *scores)
        out.append({"generation": g, "candidates": len(scores), "best": best, "mean": statistics.fmean(scores)})
    return out


def best_row(rows: list[dict], method: str = "evolution") -> dict:
    """The highest-scoring candidate (ties: the one scored first)."""
    mine = [(i, r) for i, r in enumerate(rows) if r["method"] == method]
    return max(mine, key=lambda item: (item[1]["score"], -item[0]))[1]


def best_recipe_text(recipe: Recipe, row: dict, source: str, holdout: int = 0) -> str:
    """The search recipe turned into one that trains the found network (catalogue `spos` with its choices) on
    the whole training set (or without `holdout` examples: search.verify), before `search.retrain`
    overrides (applied by the loader, which checks them)."""
    data = dataclasses.asdict(recipe)
    data.pop("search")
    kept = {k: v for k, v in recipe.model.kwargs.items() if k in SUPERNET_KWARGS_KEPT}
    data["model"]["name"] = "spos"
    data["model"]["kwargs"] = {**kept, "choices": list(row["choices"])}
    data["data"]["holdout"] = holdout
    data["description"] = f"SPOS network found by bigbatch search ({row['macs'] / 1e6:.2f}M multiply-adds)"
    header = (f"# Found by `bigbatch search {source}`: held-out top-1 {row['score']:.4f} in the supernet (after "
              f"BatchNorm recalibration),\n# {row['macs'] / 1e6:.2f}M multiply-adds, {row['params'] / 1e6:.3f}M "
              f"parameters, generation {row['generation']}. Train it: bigbatch train THIS_FILE\n")
    return header + yaml.safe_dump(data, sort_keys=False)


def write_report(directory: Path, rows: list[dict], title: str, verified: dict | None = None,
                 notes: Sequence[str] = ()) -> Path:
    """report/search.md and report/search.png (with the ranking check of search.verify when given, and
    `notes`: lines such as the latency table's error)."""
    out = directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in ("evolution", "random") if any(r["method"] == m for r in rows)]
    curves = {m: per_generation(rows, m) for m in methods}
    lines = [f"# {title}", "", "| generation | " + " | ".join(f"{m} best | {m} mean | {m} n" for m in methods) + " |",
             "|---:|" + "---:|---:|---:|" * len(methods)]
    for i in range(max(len(c) for c in curves.values())):
        cells = []
        for m in methods:
            point = curves[m][i] if i < len(curves[m]) else None
            cells += [f"{point['best']:.4f}", f"{point['mean']:.4f}", str(point["candidates"])] if point else \
                ["", "", ""]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    best = best_row(rows)
    lines += ["", f"Best (evolution): {best['choices']}: held-out top-1 {best['score']:.4f}, "
                  f"{best['macs'] / 1e6:.2f}M multiply-adds, {best['params'] / 1e6:.3f}M parameters.",
              *(line for note in notes for line in ("", note)),
              "", "![best and mean held-out top-1 per generation](search.png)"]
    if verified:
        lines += ["", "## Ranking check (search.verify)", "",
                  f"Kendall's tau between supernet score and held-out top-1 trained alone "
                  f"({' '.join(verified['retrain'])}): **{verified['kendall_tau']:.3f}** over "
                  f"{len(verified['candidates'])} candidates (the top {verified['k']} of the evolution and "
                  f"{verified['k']} random).", "", "| method | choices | supernet | alone |", "|---|---|---:|---:|"]
        lines += [f"| {d['method']} | {' '.join(map(str, d['choices']))} | {d['supernet']:.4f} | "
                  f"{d['standalone']:.4f} |" for d in verified["candidates"]]
    report = out / "search.md"
    write_atomic(report, "\n".join(lines) + "\n")
    _plot(out / "search.png", curves, title)
    return report


def _plot(path: Path, curves: dict, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for (method, curve), colour in zip(curves.items(), ("tab:blue", "tab:orange"), strict=False):
        generations = [p["generation"] for p in curve]
        axes.plot(generations, [p["best"] for p in curve], "-o", color=colour, label=f"{method}: best so far")
        axes.plot(generations, [p["mean"] for p in curve], "--", color=colour, label=f"{method}: generation mean")
    axes.set_xlabel("generation")
    axes.set_ylabel("held-out top-1 (supernet)")
    axes.set_title(title)
    axes.legend()
    save_figure(figure, path)
