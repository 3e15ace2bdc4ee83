"""`bigbatch report RUN_DIR`: plots and a markdown summary of one run, read from its metrics.jsonl.

Writes RUN_DIR/report/: lr.png, loss.png, top1.png, images_per_s.png (each FIGURE_PX = 640 x 400 pixels)
and report.md linking them. Every number in report.md comes from metrics.jsonl (the recipe summary from
recipe.yaml and the start events' plan fields). All four PNGs are always written, so report.md's links never
break: a plot with nothing to show yet (no eval records, no step records) says so in its middle. An adaptive run
(train.batch_policy: adaptive) also gets batch.png and an "Adaptive batch" section (adaptive_report.py); its
batch changes are marked on every step plot, as the lr jumps with the batch.
`summarize` is shared with `bigbatch runs` (trainer/records/runs.py), so both give the same status and wall time.
"""

import statistics
import time
from datetime import datetime
from pathlib import Path

import yaml

from bigbatch.trainer.atomic import atomic_open, write_atomic
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.records.adaptive_report import (
    BATCH_PLOT,
    BATCH_TITLE,
    adaptive_section,
    draw_batch,
    is_adaptive,
    legend,
    moves,
    step_at_progress,
)
from bigbatch.trainer.records.batch_advice import summary_entry
from bigbatch.trainer.records.history import (  # noqa: F401  (re-exported: the report's readers import them from here)
    eval_records,
    metrics_path,
    read_history,
    resizes,
    step_records,
    wall_time,
)

FIGURE_IN = (6.4, 4.0)  # inches, at DPI dots per inch:
DPI = 100
FIGURE_PX = (640, 400)  # width, height of every PNG
PLOTS = ("lr.png", "loss.png", "top1.png", "images_per_s.png")  # always written; BATCH_PLOT for adaptive runs
STALE_AFTER_S = 600.0  # last event a start and metrics.jsonl older than this: the run is "lost"
_ENDINGS = {"finish": "finished", "interrupted": "interrupted", "failed": "failed",
            "attempt_failed": "restarting"}  # restarting: a worker group failed and Ray restarts it


def summarize(records: list[dict], mtime: float, stale_after_s: float = STALE_AFTER_S,
              now: float | None = None) -> dict:
    """What `report` and `runs` say about a run, from its records and metrics.jsonl's modification time.

    status: the last finish / interrupted / failed / start event decides; after a start it is "running" if
    the file changed within stale_after_s seconds, else "lost" (killed without a word, e.g. SIGKILL).
    """
    now = time.time() if now is None else now
    starts = [r for r in records if r.get("event") == "start"]
    ends = [r for r in records if r.get("event") in ("start", *_ENDINGS)]
    last = ends[-1] if ends else {}
    status = _ENDINGS.get(last.get("event")) or ("running" if now - mtime <= stale_after_s else "lost")
    steps = [r["step"] for r in records if isinstance(r.get("step"), int | float)]
    evals = eval_records(records)
    best = max(evals, key=lambda r: r["top1"]) if evals else None
    final = evals[-1] if evals else None
    rates = [r["images_per_s"] for r in step_records(records)
             if isinstance(r.get("images_per_s"), int | float)]
    return {
        "run_id": (starts[-1] if starts else last).get("run_id"),
        "status": status,
        "steps_done": max(steps) if steps else 0,
        "steps_total": starts[-1].get("total_steps") if starts else None,
        "best_top1": best["top1"] if best else None,
        "best_epoch": best.get("epoch") if best else None,
        "best_step": best.get("step") if best else None,
        "final_top1": final["top1"] if final else None,
        "final_top5": final.get("top5") if final else None,
        "final_epoch": final.get("epoch") if final else None,
        "median_images_per_s": statistics.median(rates) if rates else None,
        "step_records": len(rates),
        "duration_s": wall_time(records),
        "starts": len(starts),
        "started": records[0].get("time") if records else None,
        "last_time": records[-1].get("time") if records else None,
        "end": last if last.get("event") in _ENDINGS else None,
        "eta_s": eta_s(records) if status == "running" else None,
    }


def eta_s(records: list[dict]) -> float | None:
    """Seconds left at the pace of the current attempt: steps left x its seconds per step so far (from its
    start record to its newest step record); None before its first step record."""
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    if not starts:
        return None
    start = records[starts[-1]]
    progress = [r for r in step_records(records[starts[-1]:]) if isinstance(r.get("time"), int | float)]
    total = start.get("total_steps")
    if not progress or not isinstance(total, int) or not isinstance(start.get("time"), int | float):
        return None
    done, elapsed = progress[-1]["step"] - start.get("step", 0), progress[-1]["time"] - start["time"]
    if done <= 0 or elapsed <= 0:
        return None
    return max(total - progress[-1]["step"], 0) * elapsed / done


def warmup_end(records: list[dict], recipe: dict) -> int | None:
    """The step where the lr warmup ends: the start event's plan (warmup_steps), else the recipe's
    optim.warmup_epochs x steps_per_epoch. The start that was in force at that step wins (a resume may
    change the batch and so the step count)."""
    starts = [r for r in records if r.get("event") == "start"]
    chosen = None
    for start in starts:
        if chosen is None or start.get("step", 0) <= start.get("warmup_steps", -1):
            chosen = start
    if chosen is None:
        return None
    if isinstance(chosen.get("warmup_steps"), int):
        return chosen["warmup_steps"] or None
    epochs = (recipe.get("optim") or {}).get("warmup_epochs")
    per_epoch = chosen.get("steps_per_epoch")
    if isinstance(epochs, int | float) and isinstance(per_epoch, int) and epochs > 0:
        return round(epochs * per_epoch)
    return None


# ---- writing -------------------------------------------------------------------------------------
def write_report(run_dir: Path, stale_after_s: float = STALE_AFTER_S) -> Path:
    """Write RUN_DIR/report/{report.md, lr.png, loss.png, top1.png, images_per_s.png} (and batch.png for an
    adaptive run); return report.md."""
    run_dir = Path(run_dir)
    path = metrics_path(run_dir)
    mtime = path.stat().st_mtime
    records = read_history(path)
    if not records:
        raise RecipeError(f"{path}: empty; expected JSON lines written by `bigbatch train`")
    recipe = _read_recipe(run_dir)
    summary = summarize(records, mtime, stale_after_s)
    out = run_dir / "report"
    report = out / "report.md"
    try:
        out.mkdir(exist_ok=True)
        _plots(records, recipe, summary, out)
        write_atomic(report, _markdown(run_dir, records, recipe, summary))
    except OSError as e:
        raise RecipeError(f"{out}: cannot write the report ({e.strerror or e})") from None
    return report


def _read_recipe(run_dir: Path) -> dict:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _plots(records: list[dict], recipe: dict, summary: dict, out: Path) -> None:
    steps = step_records(records)
    resumes = [r["step"] for r in records if r.get("event") == "start" and r.get("step")]
    marks = (resumes, resizes(records), moves(records))  # for _resume_lines
    warmup = warmup_end(records, recipe)
    if warmup is not None and is_adaptive(steps):  # the plan's warmup is in steps of the recipe's batch
        warmup = step_at_progress(steps, warmup)

    fig, ax = _figure("learning rate", "step", "lr")
    series = [(r["step"], r["lr"]) for r in steps if "lr" in r]
    if _line(ax, series, "lr", "no training steps logged yet"):
        if warmup is not None:
            ax.axvline(warmup, color="tab:orange", linestyle="--", label=f"warmup end (step {warmup})")
        _resume_lines(ax, *marks)
        ax.legend(loc="best")
    save_figure(fig, out / "lr.png")

    fig, ax = _figure("training loss", "step", "loss")
    if _line(ax, [(r["step"], r["loss"]) for r in steps], "loss", "no training steps logged yet"):
        _resume_lines(ax, *marks)
        ax.legend(loc="best")
    save_figure(fig, out / "loss.png")

    fig, ax = _figure("validation accuracy", "epoch", "accuracy")
    evals = eval_records(records)
    if _line(ax, [(r.get("epoch"), r["top1"]) for r in evals], "top-1", "no evaluation yet"):
        _line(ax, [(r.get("epoch"), r["top5"]) for r in evals if "top5" in r], "top-5", "")
        if summary["best_top1"] is not None and summary["best_epoch"] is not None:
            ax.plot([summary["best_epoch"]], [summary["best_top1"]], "k*", markersize=10,
                    label=f"best top-1 {summary['best_top1']:.4f}")
        ax.legend(loc="lower right")
    save_figure(fig, out / "top1.png")

    fig, ax = _figure("throughput", "step", "images/s")
    series = [(r["step"], r["images_per_s"]) for r in steps if "images_per_s" in r]
    if _line(ax, series, "images/s", "no training steps logged yet"):
        median = summary["median_images_per_s"]
        ax.axhline(median, color="tab:green", linestyle=":", label=f"median {median:.1f}")
        _resume_lines(ax, *marks)
        ax.legend(loc="best")
    save_figure(fig, out / "images_per_s.png")
    if is_adaptive(steps):
        _batch_plot(steps, marks, out)


def _batch_plot(steps: list[dict], marks: tuple, out: Path) -> None:
    """batch.png: the adaptive run's global batch and AdaScale gain, with the same event lines as the others."""
    fig, ax = _figure("adaptive batch", "step", "global batch")
    twin = draw_batch(ax, steps)
    _resume_lines(ax, *marks)
    legend(ax, twin)
    save_figure(fig, out / BATCH_PLOT)


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_IN, dpi=DPI)
    FigureCanvasAgg(fig)  # Agg, without pyplot: no global state, no display needed
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _line(ax, points: list[tuple], label: str, empty: str) -> bool:
    """Plot the points that have both coordinates; with none, write `empty` across the axes instead."""
    points = [(x, y) for x, y in points if isinstance(x, int | float) and isinstance(y, int | float)]
    if not points:
        if empty:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=14,
                    color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        return False
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, marker="o" if len(points) <= 30 else None, markersize=3, label=label)
    return True


def _resume_lines(ax, resumes: list[int], changes: list[dict] = (), batch_moves: list[dict] = ()) -> None:
    """Dotted lines where the run was resumed; where the world size changed, a dash-dot line saying how; where
    the adaptive batch changed, dashed lines under one legend entry (they may be many: batch.png says to what)."""
    resized = {change["step"]: change for change in changes}
    plain = [step for step in resumes if step not in resized]
    for i, step in enumerate(plain):
        ax.axvline(step, color="gray", linestyle=":", label="resumed" if i == 0 else None)
    for step, change in resized.items():
        ax.axvline(step, color="tab:red", linestyle="-.", label=f"workers {change['from']} -> {change['to']} "
                                                               f"(step {step})")
    for i, move in enumerate(batch_moves):
        ax.axvline(move["step"], color="tab:purple", linestyle="--", alpha=0.6,
                   label=f"batch changed ({len(batch_moves)}x)" if i == 0 else None)


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()  # not bbox_inches="tight", which would change the pixel size
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)


# ---- report.md -----------------------------------------------------------------------------------
def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def local_time(unix: float | None) -> str:
    return "n/a" if unix is None else datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


def _markdown(run_dir: Path, records: list[dict], recipe: dict, s: dict) -> str:
    starts = [r for r in records if r.get("event") == "start"]
    plan = starts[-1] if starts else {}
    total = "?" if s["steps_total"] is None else s["steps_total"]
    lines = [f"# Run {run_dir.resolve().name}", "",
             f"- run id: `{s['run_id'] or 'n/a'}`",
             f"- status: **{s['status']}**{_status_note(s)}",
             f"- started: {local_time(s['started'])} (local time)",
             f"- wall time: {hms(s['duration_s'])} ({s['duration_s']:.1f} s over {s['starts']} start(s))",
             f"- steps: {s['steps_done']} / {total}"
             + (f" (about {hms(s['eta_s'])} left at the current pace)" if s.get("eta_s") is not None else "")]
    if s["best_top1"] is None:
        lines.append("- best top-1: n/a (no evaluation yet)")
        lines.append("- final top-1 / top-5: n/a (no evaluation yet)")
    else:
        lines.append(f"- best top-1: {s['best_top1']:.4f} at epoch {_num(s['best_epoch'], 'g')} "
                     f"(step {s['best_step']})")
        lines.append(f"- final top-1 / top-5: {s['final_top1']:.4f} / {_num(s['final_top5'], '.4f')} "
                     f"at epoch {_num(s['final_epoch'], 'g')}")
    lines.append(f"- median images/s: {_num(s['median_images_per_s'], '.1f')} "
                 f"(over {s['step_records']} step records)")
    for change in resizes(records):
        lines.append(f"- resized at step {change['step']}: {change['from']} -> {change['to']} workers "
                     "(the global batch held)")
    batches = [r["global_batch"] for r in step_records(records) if isinstance(r.get("global_batch"), int)]
    if batches and (noise := summary_entry(records, batches[-1])):
        lines.append(f"- batch size: {noise['advice']}")
    if (run_dir / "tensorboard").is_dir():
        lines.append(f"- live curves: `bigbatch dashboard {run_dir.resolve().parent}` (TensorBoard, on 127.0.0.1)")

    steps = step_records(records)
    if adaptive := is_adaptive(steps):
        lines += adaptive_section(records, steps, s["steps_done"])
    lines += _recipe_lines(records, recipe, plan)
    lines += ["", "## Plots", ""]
    notes = {"top1.png": " (no evaluation yet)" if s["best_top1"] is None else ""}
    titles = {"lr.png": "learning rate against step", "loss.png": "training loss against step",
              "top1.png": "top-1 and top-5 against epoch", "images_per_s.png": "images/s against step",
              BATCH_PLOT: BATCH_TITLE}
    plots = (*PLOTS, BATCH_PLOT) if adaptive else PLOTS
    lines += [f"- [{name}]({name}): {titles[name]}{notes.get(name, '')}" for name in plots]
    for name in plots:
        lines += ["", f"![{titles[name]}]({name})"]
    return "\n".join(lines) + "\n"


def _recipe_lines(records: list[dict], recipe: dict, plan: dict) -> list[str]:
    """The report's recipe section: what was asked for, with the plan's derived batch and lr."""
    model, data = recipe.get("model") or {}, recipe.get("data") or {}
    train, optim, cluster = recipe.get("train") or {}, recipe.get("optim") or {}, recipe.get("cluster") or {}
    batch = "n/a"
    if "global_batch" in plan:
        batch = (f"{plan['global_batch']} ({plan.get('per_worker_batch', '?')} per worker x "
                 f"{plan.get('world_size', '?')} workers x "
                 f"{plan.get('accumulation_steps', '?')} accumulation)")
        if plan.get("batch_phases"):
            batch += ", grows: " + ", ".join(f"{p['global_batch']} from epoch {p['from_epoch']}"
                                             for p in plan["batch_phases"][1:])
    lr = str(optim.get("base_lr", "n/a"))
    if "scaled_lr" in plan:
        lr += f" (reference batch {optim.get('reference_batch', '?')}; scaled to {plan['scaled_lr']:g})"
    warmup = warmup_end(records, recipe)
    return ["", "## Recipe", "",
            f"- description: {recipe.get('description', '') or 'n/a'}",
            f"- model: {model.get('name', 'n/a')}",
            f"- data: {data.get('name', 'n/a')}",
            f"- global batch: {batch}",
            f"- workers: {cluster.get('workers', 'n/a')} ({cluster.get('backend', 'n/a')} backend)",
            f"- optimizer: {optim.get('name', 'n/a')}"
            + (f", {optim['schedule']} schedule" if optim.get("schedule") else ""),
            f"- base lr: {lr}",
            f"- warmup: {'none' if warmup is None else f'{warmup} steps'}"
            f" (optim.warmup_epochs {optim.get('warmup_epochs', 'n/a')})",
            f"- epochs: {train.get('epochs', 'n/a')}"]


def _status_note(s: dict) -> str:
    end = s["end"] or {}
    if s["status"] == "interrupted":
        return (f" by signal {end.get('signal', '?')} at step {end.get('step', '?')}; "
                f"checkpoint {end.get('checkpoint')}")
    if s["status"] == "failed":
        return f" at step {end.get('step', '?')}: {end.get('error', 'no error given')}"
    if s["status"] == "restarting":
        return (f": the worker group failed at step {end.get('step', '?')} ({end.get('error', 'no error given')}) "
                "and Ray restarts it from the newest checkpoint")
    if s["status"] == "lost":
        return (f" (no record since {local_time(s['last_time'])}: killed without a word, e.g. SIGKILL; "
                f"continue with `bigbatch train RECIPE --out RUN_DIR --resume auto`)")
    return ""
