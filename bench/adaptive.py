"""Does the adaptive global batch (train.batch_policy: adaptive) reach a held-out target in less wall time than
every fixed batch? Issue 31's measurement.

Why: trainer/adaptive chooses the batch by predicted goodput (Pollux: G0 x AdaScale gain / step time) and scales
the lr by AdaScale's gain. The claim to check: it reaches the target in less wall time than every fixed batch,
including the best one chosen in hindsight, with at most 1.2x the examples of that best fixed batch and a final
accuracy within the seed spread.

How: the critical-batch setup (bench/critical_batch.py, whose `run_cell` trains and scores every cell here):
resnet_small on 50,000 Fashion-MNIST training images, the target (--target, default 88 %) held-out top-1 on the
other 10,000 training images (`data.holdout`; the test set is not used), recipe (b) linear_warmup.yaml with a
constant lr after warmup, checkpoints scored on the holdout in order until one reaches the target; seeds
--seeds (default 0 1). Cells:

- fixed G = 256 (the recipe's G0) and every fixed batch of the critical-batch grid, 1024, 2048 and 8192, each
  at the lr multiplier that was best for that batch in bench/results/critical_batch.json (seed 0's tuning on
  the holdout, read from the file), the same multiplier for both seeds, over critical_batch's epoch budgets;
- adaptive: train.batch_policy=adaptive in [256, 8192] from G0 = 256 at the recipe's lr (multiplier 1, 0.1 per
  256 images), which AdaScale scales; a progress budget of 5 epochs in steps of G0 (tau; critical_batch's
  budget at 256); the policy looks every 49 steps (train.adaptive.every_steps: the checkpoint interval at G0,
  a quarter epoch) and logs every 10 steps (the recipe's own log interval, _base.yaml), so that its noise
  scale has the min_readings = 5 measurements it needs by step 50 (at the G0 checkpoint interval of 49 it
  could not steer before step 245, when fixed 256 is two thirds of the way to the target).

Every cell, fixed and adaptive alike, is one process accumulating micro-batches of 128 images (G / 128 of them):
the gradient noise scale needs two batch sizes, a micro-batch against the global batch, and at G0 = 256 a
256-image micro-batch on one worker would give only one. BatchNorm therefore normalises over 128 images in
every cell (critical_batch.py used 256), so steps to the target here need not equal critical_batch's.

Checkpoints: fixed cells as critical_batch (about 4 per epoch, the steps of a quarter epoch at their batch). The
adaptive batch changes, so its runs write a checkpoint every step and score, in order, the first one past each
quarter epoch of examples (12,500 images, the fixed cells' spacing), counted from the run's own batches (its
batch_change events; checked against every step record's global_batch). Examples to the target are summed
from those per-step batches, never steps x G.

Wall time comes from one declared cluster model, the same for every cell (`cluster_model`: the formula and its
figures, with sources, are the constants below): W = 64 data-parallel GPUs,

    step_s(G) = fixed_s + per_example_s x G / W
    fixed_s = ring all-reduce of the fp32 gradient, 2 (W-1)/W x bytes / bandwidth + 2 (W-1) x hop latency,
              + a per-step launch and optimizer overhead
    per_example_s = 6 x multiply-adds per image / (peak FLOP/s x utilisation)

with the parameters and multiply-adds counted from the model itself (trainer/models/complexity.py). A cell's
modelled wall time to the target is the sum of step_s(G_t) over its steps up to the target step. The adaptive
runs are given the same model through train.adaptive.assume_step_s = fixed_s and assume_example_s =
per_example_s / W (they run on one worker, and the policy's step time is assume_step_s + assume_example_s x G /
W_run with W_run = 1), so the model that chooses is the model that scores; the bench checks, on the recipe the
runs load, that both give the same step time for every candidate batch.

Cells run in --jobs processes (default 2) of one torch thread each, the longest first.

    .venv/bin/python bench/adaptive.py                      # 4 fixed batches + adaptive, 2 seeds: 10 runs
    .venv/bin/python bench/adaptive.py --reduced            # 256, 2048 and adaptive only
    .venv/bin/python bench/adaptive.py --seeds 0 --max-epochs 1 --reduced --out /tmp/adaptive-smoke/adaptive.md

Writes bench/results/adaptive.md (the per-run table, the ratios, the adaptive batch schedules, printed too), the
runs in .json beside it, and a PNG of the adaptive runs' batch and gain against step and every run's holdout
top-1 against modelled time.
"""

import argparse
import concurrent.futures as futures
import json
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import critical_batch  # noqa: E402
from bench.critical_batch import (  # noqa: E402
    EPOCHS,
    RECIPE,
    TRAIN,
    batch_at,
    best_per_batch,
    epochs_for,
    run_cell,
    sum_over_steps,
)
from bench.procedures import commit  # noqa: E402
from bench.publish import publish_with_plot, save_store  # noqa: E402

G0 = 256  # the recipe's global batch (linear_warmup.yaml's lr is 0.1 per 256 images)
MICRO = 128  # every cell's micro-batch (see the docstring)
FIXED = (256, 1024, 2048, 8192)  # G0 and the critical-batch grid
REDUCED = (256, 2048)
LOW, HIGH = 256, 8192  # the adaptive range
ADAPTIVE_EPOCHS = EPOCHS[G0]  # its progress budget, in epochs of G0 steps: critical_batch's budget at 256
QUARTER = TRAIN // 4  # examples between scored checkpoints (the fixed cells' spacing)
EVERY_STEPS = max(1, round(TRAIN // G0 / 4))  # train.adaptive.every_steps: the checkpoint interval at G0 (49)
LOG_EVERY = 10  # the adaptive runs' train.log_every_steps: _base.yaml's own
TUNING = REPO / "bench" / "results" / "critical_batch.json"  # seed 0's lr tuning on the holdout

# The declared cluster model: W data-parallel GPUs, each with one replica, G / W examples per step.
WORKERS = 64
GRADIENT_BYTES = 4  # fp32 gradients, all-reduced in full every step
LINK_BYTES_PER_S = 12.5e9  # 100 Gb/s InfiniBand EDR per GPU (one ConnectX-5 EDR port per GPU): 12.5 GB/s
HOP_LATENCY_S = 5e-6  # per step of the ring; NCCL's own tuning model (src/graph/tuning.cc, hwLat[NET], Ring)
# charges 2.7 / 4.0 / 9.6 us per network step to its LL / LL128 / Simple protocols; every step counted as a network one
STEP_OVERHEAD_S = 1e-3  # per step, whatever the batch: launching a few hundred kernels (forward, backward, the SGD
# update) at a few us each (PyTorch's "Accelerating PyTorch with CUDA Graphs", 2021) and the optimizer's host work
PEAK_FLOP_S = 19.5e12  # NVIDIA A100 FP32 peak without tensor cores (A100 datasheet)
UTILISATION = 0.3  # achieved share of that peak: stated, not measured (a 16-64 channel net at 14 px and below
# keeps a GPU far from the ~50 % large CNNs reach)
FLOPS_PER_MAC_TRAINED = 6  # forward 2 FLOPs per multiply-add, backward twice the forward (Kaplan et al. 2020: C ~ 6N)
CLASSES, CHANNELS, IMAGE = 10, 1, 28  # Fashion-MNIST


def cluster_model() -> dict:
    """The declared model's figures from the recipe's network: its parameters and multiply-adds per image."""
    from bigbatch.trainer.models.complexity import count_macs, count_params
    from bigbatch.trainer.models.registry import create_model
    from bigbatch.trainer.recipe import load_recipe

    recipe = load_recipe(RECIPE, [])
    model = create_model(recipe.model.name, CLASSES, CHANNELS, IMAGE, **recipe.model.kwargs)
    params, macs = count_params(model), count_macs(model, CHANNELS, IMAGE)
    grad_bytes = params * GRADIENT_BYTES
    allreduce_s = 2 * (WORKERS - 1) / WORKERS * grad_bytes / LINK_BYTES_PER_S + 2 * (WORKERS - 1) * HOP_LATENCY_S
    return {"workers": WORKERS, "params": params, "macs_per_image": macs, "gradient_bytes": grad_bytes,
            "link_bytes_per_s": LINK_BYTES_PER_S, "hop_latency_s": HOP_LATENCY_S, "allreduce_s": allreduce_s,
            "step_overhead_s": STEP_OVERHEAD_S, "fixed_s": allreduce_s + STEP_OVERHEAD_S,
            "peak_flop_s": PEAK_FLOP_S, "utilisation": UTILISATION,
            "per_example_s": FLOPS_PER_MAC_TRAINED * macs / (PEAK_FLOP_S * UTILISATION)}


def step_s(model: dict, batch: int) -> float:
    """Modelled seconds of one step of global batch `batch` on the model's W GPUs."""
    return model["fixed_s"] + model["per_example_s"] * batch / model["workers"]


def adaptive_overrides(model: dict) -> list[str]:
    """The adaptive cell's recipe keys, the declared model included; checks, on the recipe the run will load, that
    the policy's step time (one worker) equals `step_s` at every candidate batch."""
    from bigbatch.trainer.adaptive.choice import candidate_batches
    from bigbatch.trainer.adaptive.goodput import StepTimeModel
    from bigbatch.trainer.recipe import load_recipe

    keys = ["train.batch_policy=adaptive", f"train.adaptive.min_batch={LOW}", f"train.adaptive.max_batch={HIGH}",
            f"train.adaptive.every_steps={EVERY_STEPS}", f"train.adaptive.assume_step_s={model['fixed_s']:.9e}",
            f"train.adaptive.assume_example_s={model['per_example_s'] / model['workers']:.9e}"]
    recipe = load_recipe(RECIPE, [f"data.batch_size={MICRO}", f"train.accumulation_steps={G0 // MICRO}", *keys])
    policy = StepTimeModel(recipe.train.adaptive.assume_step_s, recipe.train.adaptive.assume_example_s, "assumed")
    for batch in candidate_batches(LOW, HIGH):
        assert math.isclose(policy.step_s(batch, 1), step_s(model, batch), rel_tol=1e-6), batch
    return keys


def check_batches(cell: dict) -> None:
    """The per-step batches from the batch changes agree with every step record's global_batch."""
    changes = cell["changes"]
    for record in cell["log"]:
        assert batch_at(changes, record["step"] - 1) == record["global_batch"], (cell["seed"], record)


# ---- the figures, from the store ------------------------------------------------------------------------------
def measures(cell: dict, model: dict) -> dict:
    """Steps, examples and modelled seconds to the target (None if not reached), and the final top-1."""
    changes, steps = [tuple(c) for c in cell["changes"]], cell["steps_to_target"]
    reached = steps is not None
    return {"steps": steps, "examples": sum_over_steps(changes, steps) if reached else None,
            "seconds": sum_over_steps(changes, steps, lambda g: step_s(model, g)) if reached else None,
            "final": cell["final_top1"]}


def name_of(cell: dict) -> str:
    return "adaptive" if cell["policy"] == "adaptive" else str(cell["batch"])


def table(store: dict) -> dict[str, dict[int, dict]]:
    """{cell name: {seed: measures}}, fixed batches in order, then adaptive."""
    out: dict[str, dict[int, dict]] = {}
    for cell in sorted(store["cells"], key=lambda c: (c["policy"] == "adaptive", c["batch"], c["seed"])):
        out.setdefault(name_of(cell), {})[cell["seed"]] = measures(cell, store["model"])
    return out


def mean_of(runs: dict[int, dict], key: str) -> float | None:
    values = [m[key] for m in runs.values()]
    return None if any(v is None for v in values) else statistics.fmean(values)


def spread(runs: dict[int, dict]) -> float:
    finals = [m["final"] for m in runs.values() if m["final"] is not None]
    return max(finals) - min(finals) if finals else 0.0


def best_fixed(cells: dict[str, dict[int, dict]], seed: int | None = None) -> str | None:
    """The fixed batch with the least modelled time to the target: in `seed`, or on the mean over the seeds
    (among those that reached it in every seed)."""
    def time_of(name):
        runs = cells[name]
        return (runs[seed]["seconds"] if seed in runs else None) if seed is not None else mean_of(runs, "seconds")
    times = {n: time_of(n) for n in cells if n != "adaptive"}
    times = {n: t for n, t in times.items() if t is not None}
    return min(times, key=times.get) if times else None


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.0f}"


def count(examples: float | None) -> str:
    return "-" if examples is None else f"{examples:,.0f}"


def percent(top1: float | None) -> str:
    return "-" if top1 is None else f"{100 * top1:.2f} %"


def verdicts(cells: dict[str, dict[int, dict]]) -> list[str]:
    """The issue's three conditions, on the means over the seeds, each with its margin."""
    if "adaptive" not in cells:
        return []
    ada, best = cells["adaptive"], best_fixed(cells)
    time_a, ex_a = mean_of(ada, "seconds"), mean_of(ada, "examples")
    if time_a is None:
        return ["- **Missed**: the adaptive runs did not reach the target in every seed within their budget."]
    if best is None:
        return ["- No fixed batch reached the target in every seed: nothing to compare with."]
    fixed = cells[best]
    time_b, ex_b = mean_of(fixed, "seconds"), mean_of(fixed, "examples")
    lines = [f"- Modelled wall time to the target: adaptive {ms(time_a)} ms, best fixed ({best}) {ms(time_b)} ms, "
             f"**{time_a / time_b:.2f}x**: " + ("met (less than every fixed batch)." if time_a < time_b else
                                                f"missed by {100 * (time_a / time_b - 1):.0f} %.")]
    lines.append(f"- Examples to the target: {ex_a:,.0f} against {ex_b:,.0f}, **{ex_a / ex_b:.2f}x** (at most "
                 "1.2x): " + ("met." if ex_a <= 1.2 * ex_b else f"missed by {100 * (ex_a / ex_b / 1.2 - 1):.0f} %."))
    final_a, final_b = mean_of(ada, "final"), mean_of(fixed, "final")
    if final_a is not None and final_b is not None:
        gap, width = final_a - final_b, max(spread(ada), spread(fixed))
        lines.append(f"- Final holdout top-1 (end of each budget): adaptive {100 * final_a:.2f} %, {best} "
                     f"{100 * final_b:.2f} %, {100 * gap:+.2f} points against a seed spread (the larger seed range of the two) of "
                     f"{100 * width:.2f}: "
                     + ("met." if gap >= -width else f"missed by {100 * (-gap - width):.2f} points."))
    return lines


def render(store: dict, plot: Path) -> str:
    model, cells = store["model"], table(store)
    seeds = sorted({c["seed"] for c in store["cells"]})
    by_name = {(name_of(c), c["seed"]): c for c in store["cells"]}
    lines = ["# Adaptive global batch against every fixed batch: modelled wall time to a held-out target", "",
             f"resnet_small on {TRAIN:,} Fashion-MNIST training images, the target {100 * store['target']:g} % top-1 "
             f"on the {critical_batch.HOLDOUT:,} held-out training images (the test set is not used); recipe (b) "
             "linear_warmup.yaml, constant lr after warmup; seeds " + ", ".join(map(str, seeds)) + ". Every cell "
             f"is one process accumulating micro-batches of {store['micro_batch']} images (BatchNorm over "
             f"{store['micro_batch']} images everywhere; critical_batch.py used 256), so that the adaptive run has "
             "a micro-batch against its global batch for the noise scale at G0 = 256 too. Fixed batches: the lr "
             "multiplier best for that batch in bench/results/critical_batch.json (seed 0's holdout tuning, commit "
             f"{store['tuning_commit']}), the same for every seed: "
             + ", ".join(f"{b} x{m:g}" for b, m in store["lr_mult"].items())
             + " the linear rule's 0.1 x B / 256; budgets (epochs) "
             + ", ".join(f"{b}: {e}" for b, e in store["epochs"].items()) + ". Adaptive: "
             f"train.batch_policy=adaptive in [{LOW}, {HIGH}] from G0 = {G0} at lr 0.1 (x1) scaled by AdaScale, "
             f"a progress budget of {store['adaptive_epochs']} epochs of G0 steps, a look every "
             f"{store['every_steps']} steps (the checkpoint interval at G0) on step records every "
             f"{store['log_every']} steps (the recipe's own), min_readings and min_improvement at their defaults; "
             "a checkpoint every step, scored in order at the first past each quarter epoch of examples "
             f"({QUARTER:,} images, the fixed cells' spacing). Examples are summed from each run's own per-step "
             "batches.", "",
             "## The cluster model (the same for every cell; the adaptive runs choose with it)", "",
             f"W = {model['workers']} GPUs; step_s(G) = fixed_s + per_example_s x G / W, with fixed_s = "
             f"2 (W-1)/W x {model['gradient_bytes']:,} B / {model['link_bytes_per_s'] / 1e9:g} GB/s + 2 (W-1) x "
             f"{1e6 * model['hop_latency_s']:g} us (ring all-reduce of the fp32 gradient of {model['params']:,} "
             f"parameters: {1e3 * model['allreduce_s']:.3f} ms) + {1e3 * model['step_overhead_s']:g} ms per-step "
             f"launch and optimizer overhead = **{1e3 * model['fixed_s']:.3f} ms**, and per_example_s = 6 x "
             f"{model['macs_per_image']:,} multiply-adds / ({model['peak_flop_s'] / 1e12:g} TFLOP/s x "
             f"{model['utilisation']:g}) = **{1e6 * model['per_example_s']:.2f} us**. Step times: "
             + ", ".join(f"{b}: {1e3 * step_s(model, b):.3f} ms" for b in (256, 1024, 2048, 4096, 8192))
             + ". The adaptive runs (one worker) get assume_step_s = fixed_s and assume_example_s = "
             "per_example_s / W. Sources are in bench/adaptive.py.", "",
             "## Every run", "",
             "| cell | lr | seed | steps to the target | examples | modelled ms | final holdout top-1 (at step) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, runs in cells.items():
        for seed, m in runs.items():
            cell = by_name[(name, seed)]
            lr = "AdaScale" if name == "adaptive" else f"{cell['lr']:.3g}"
            lines.append(f"| {name} | {lr} | {seed} | {'-' if m['steps'] is None else m['steps']} | "
                         f"{count(m['examples'])} | {ms(m['seconds'])} | {percent(m['final'])} ({cell['final_step']}) |")
    ada = cells.get("adaptive", {})
    lines += ["", "## Side by side (means over the seeds; adaptive / fixed: its modelled time over the fixed batch's; "
              "- : not reached in every seed)", "",
              "| cell | steps | examples | modelled ms | " + " | ".join(f"adaptive / this, seed {s}" for s in seeds)
              + " | adaptive / this, mean | final top-1 (seed range) |", "|---|" + "---:|" * (len(seeds) + 5)]
    for name, runs in cells.items():
        fixed = name != "adaptive"
        per_seed = [ratio(ada.get(s, {}).get("seconds"), runs.get(s, {}).get("seconds")) if fixed else ""
                    for s in seeds]
        steps, final = mean_of(runs, "steps"), mean_of(runs, "final")
        lines.append(f"| {name} | {'-' if steps is None else f'{steps:.0f}'} | {count(mean_of(runs, 'examples'))} | "
                     f"{ms(mean_of(runs, 'seconds'))} | " + " | ".join(per_seed)
                     + f" | {ratio(mean_of(ada, 'seconds'), mean_of(runs, 'seconds')) if fixed else ''} | "
                     f"{percent(final)} ({100 * spread(runs):.2f}) |")
    lines += ["", "Best fixed batch in hindsight (least modelled time to the target):"]
    for seed in seeds:
        best = best_fixed(cells, seed)
        a = ada.get(seed)
        if best and a:
            b = cells[best][seed]
            lines.append(f"- seed {seed}: {best}, {ms(b['seconds'])} ms; adaptive {ms(a['seconds'])} ms "
                         f"({ratio(a['seconds'], b['seconds'])}), examples {ratio(a['examples'], b['examples'])}.")
    lines += ["", "## The issue's goal (means over the seeds)", "", *verdicts(cells)]
    lines += ["", "## The adaptive runs' batch schedules", ""]
    for cell in sorted((c for c in store["cells"] if c["policy"] == "adaptive"), key=lambda c: c["seed"]):
        reached = cell["steps_to_target"]
        near = min(cell["log"], key=lambda r: abs(r["step"] - reached)) if reached and cell["log"] else None
        fixed = cells.get(str(G0), {}).get(cell["seed"], {}).get("steps")
        lines.append(f"Seed {cell['seed']}: " + ("target not reached" if reached is None else
                     f"target at step {reached}; at step {near['step']} progress tau {near['progress']:.0f} steps of G0 "
                     f"(fixed {G0} took "
                     f"{'-' if fixed is None else fixed} steps), AdaScale gain {near['adascale_gain']:.2f}")
                     + f"; budget ended at step {cell['final_step']}.")
        lines += [f"- step {e['step']}: {e['from']} -> {e['to']} (tau {e['progress']:.0f}, noise scale lower bound "
                  f"{e['noise_scale_lower']:.0f}; {e['why']})" for e in cell["events"]] or ["- no change"]
        lines.append("")
    lines += [f"![adaptive batch and gain against step, holdout top-1 against modelled time]({plot.name})", "",
              f"{len(store['cells'])} runs; measured by `{store['command']}` at commit {store['commit']} on "
              f"{store['date']}: {store['wall_min']:.1f} min ({store['jobs']} processes x 1 torch thread)."]
    return "\n".join(lines)


def write_plot(path: Path, store: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, target = store["model"], store["target"]
    fig, (batch_ax, gain_ax, top1_ax) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    colours = {name: f"C{i}" for i, name in enumerate([*(str(b) for b in FIXED), "adaptive"])}
    for cell in sorted(store["cells"], key=lambda c: (c["policy"], c["batch"], c["seed"])):
        name, style = name_of(cell), ["-", "--", ":", "-."][cell["seed"] % 4]
        changes = [tuple(c) for c in cell["changes"]]
        if cell["policy"] == "adaptive":
            steps = [s for s, _ in changes] + [cell["final_step"]]
            batch_ax.step(steps, [b for _, b in changes] + [changes[-1][1]], where="post", linestyle=style,
                          color=colours[name], label=f"seed {cell['seed']}")
            log = [r for r in cell["log"] if r["adascale_gain"] is not None]
            gain_ax.plot([r["step"] for r in log], [r["adascale_gain"] for r in log], style, color=colours[name],
                         label=f"seed {cell['seed']}")
            if cell["steps_to_target"]:
                for ax in (batch_ax, gain_ax):
                    ax.axvline(cell["steps_to_target"], color="grey", linestyle=style, linewidth=0.8)
        curve = cell["curve"]
        top1_ax.plot([1e3 * sum_over_steps(changes, s, lambda g: step_s(model, g)) for s, _ in curve],
                     [100 * t for _, t in curve], style, marker=".", color=colours[name],
                     label=f"{name} seed {cell['seed']}")
    batch_ax.set_yscale("log", base=2)
    batch_ax.set(xlabel="step", ylabel="global batch", title="adaptive: global batch (grey: target reached)")
    gain_ax.set(xlabel="step", ylabel="AdaScale gain r", title="adaptive: gain over G0 = 256")
    top1_ax.axhline(100 * target, color="grey", linewidth=0.8)
    top1_ax.set(xlabel="modelled wall time (ms)", ylabel="holdout top-1 (%)",
                title="scored checkpoints, to the target", ylim=(70, 100 * target + 3))
    for ax in (batch_ax, gain_ax, top1_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def tuned_multipliers(batches: list[int]) -> tuple[dict[int, float], str]:
    """Per batch, the lr multiplier that reached the target in the fewest steps in critical_batch.json."""
    tuning = json.loads(TUNING.read_text())
    best = best_per_batch(tuning["cells"])
    missing = [b for b in batches if b not in best]
    if missing:
        raise SystemExit(f"{TUNING}: no tuned lr for {missing} (no multiplier reached the target)")
    return {b: best[b]["lr_mult"] for b in batches}, tuning["commit"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--target", type=float, default=0.88, help="held-out top-1 to reach")
    parser.add_argument("--reduced", action="store_true", help="fixed 256 and 2048 and adaptive only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "adaptive.md")
    parser.add_argument("--render", action="store_true", help="only render from the .json")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap every budget, the adaptive one too (a smoke run)")
    args = parser.parse_args()
    critical_batch.MAX_EPOCHS[0] = args.max_epochs
    store_path = args.out.with_suffix(".json")
    if args.render:
        store = json.loads(store_path.read_text())
    else:
        batches = list(REDUCED if args.reduced else FIXED)
        multipliers, tuning_commit = tuned_multipliers(batches)
        model = cluster_model()
        keys = adaptive_overrides(model)
        adaptive_epochs = min(ADAPTIVE_EPOCHS, args.max_epochs) if args.max_epochs else ADAPTIVE_EPOCHS
        print(f"cluster model: fixed_s {1e3 * model['fixed_s']:.3f} ms, per_example_s "
              f"{1e6 * model['per_example_s']:.3f} us on {WORKERS} GPUs; adaptive keys: {' '.join(keys)}", flush=True)
        jobs = [("adaptive", G0, seed) for seed in args.seeds]
        jobs += sorted((("fixed", b, seed) for b in batches for seed in args.seeds), key=lambda j: -epochs_for(j[1]))
        started, cells = time.perf_counter(), []
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            submitted = {}
            for policy, batch, seed in jobs:  # adaptive first: the least known length, then the longest
                if policy == "adaptive":
                    job = pool.submit(run_cell, G0, 1.0, args.target, seed, adaptive_epochs, micro_batch=MICRO,
                                      extra=tuple(keys), checkpoint_every=1, log_every=LOG_EVERY,
                                      score_every_examples=QUARTER, detail=True)
                else:
                    job = pool.submit(run_cell, batch, multipliers[batch], args.target, seed, epochs_for(batch),
                                      micro_batch=MICRO, detail=True)
                submitted[job] = policy
            for job in futures.as_completed(submitted):
                cell = {**job.result(), "policy": submitted[job]}
                check_batches(cell)
                cells.append(cell)
                m = measures(cell, model)
                print(f"{name_of(cell):>8} seed {cell['seed']}: target at step {m['steps']}, "
                      f"{count(m['examples'])} examples, {ms(m['seconds'])} "
                      f"modelled ms; final top-1 {cell['final_top1']}; batch changes {cell['changes'][1:]}; "
                      f"{cell['wall_s']:.0f} s", flush=True)
        store = {"command": "python bench/adaptive.py " + " ".join(sys.argv[1:]), "commit": commit(),
                 "date": time.strftime("%Y-%m-%d"), "wall_min": (time.perf_counter() - started) / 60,
                 "jobs": args.jobs, "target": args.target, "seeds": args.seeds, "micro_batch": MICRO,
                 "model": model, "adaptive_keys": keys, "adaptive_epochs": adaptive_epochs,
                 "every_steps": EVERY_STEPS, "log_every": LOG_EVERY, "tuning_commit": tuning_commit,
                 "lr_mult": {str(b): m for b, m in multipliers.items()},
                 "epochs": {str(b): epochs_for(b) for b in batches},
                 "cells": sorted(cells, key=lambda c: (c["policy"], c["batch"], c["seed"]))}
        save_store(store, args.out)
    publish_with_plot(store, args.out, write_plot, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
