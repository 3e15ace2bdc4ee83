"""What does measuring the gradient noise scale cost? (track.noise_scale, issue 21's "< 1 % of step time")

Why: the online noise scale adds, on each log step, one sum of squares over this rank's gradients (micro-step
0's .grad, or DDP's buckets in its comm hook) and one more float in the step's existing all-reduce; nothing
else (no forward, no backward, no collective). This times that sum of squares against the training step it
rides on, for the same model, batch and gradients, interleaved in one process.

How: per model, --repeats rounds of: one timed training step (forward, cross-entropy, backward, SGD step with
momentum over the same parameters) and one timed call of the same function the loop calls
(trainer.step.noise_scale.grad_sq_norm, read back to the host); medians over the rounds. The added share of step time
is (sum-of-squares time) / (step time) on a log step, and that / train.log_every_steps (default 10) over a run.
Models: resnet50 (25.6M parameters, compute-heavy per parameter) and alexnet (61.1M parameters, mostly in
its fully-connected layers: the worst case for a cost that grows with the parameters) at 224 px, and the
benches' resnet_small at 28 px. The all-reduce's extra float is not timed: it is 4 bytes in a message that
already exists.

    .venv/bin/python bench/noise_cost.py [--repeats 7] [--batch 16] [--threads 2]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.publish import publish  # noqa: E402

MODELS = {"resnet50": (224, 3, 1000, {}), "alexnet": (224, 3, 1000, {}),
          "resnet_small": (28, 1, 10, {"widths": [16, 32, 64], "stem_stride": 2})}
LOG_EVERY = 10  # train.log_every_steps' default


def measure(name: str, batch: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from bigbatch.trainer.models.registry import create_model
    from bigbatch.trainer.step.noise_scale import grad_sq_norm

    size, channels, classes, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, classes, channels, size, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, classes, (batch,))
    steps, sums = [], []
    for round_ in range(repeats + 1):  # round 0 warms up
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        step = time.perf_counter() - started
        started = time.perf_counter()
        grad_sq_norm(optimizer, torch.device("cpu")).item()
        added = time.perf_counter() - started
        if round_:
            steps.append(step)
            sums.append(added)
    params = sum(p.numel() for p in model.parameters())
    step, added = statistics.median(steps), statistics.median(sums)
    return {"model": name, "params": params, "step_s": step, "added_s": added, "per_log_step": added / step,
            "per_run": added / step / LOG_EVERY}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "noise_cost.txt")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = [measure(name, args.batch, args.repeats) for name in MODELS]
    lines = [f"Gradient noise scale: the added sum of squares against a training step (batch {args.batch}, "
             f"{args.threads} threads, CPU, median of {args.repeats})", "",
             "| model | parameters | step (ms) | sum of squares (ms) | added on a log step | added over a run "
             f"(log every {LOG_EVERY}) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['params'] / 1e6:.1f}M | {1e3 * r['step_s']:.1f} | {1e3 * r['added_s']:.2f} | "
              f"{100 * r['per_log_step']:.2f} % | {100 * r['per_run']:.3f} % |" for r in rows]
    worst = max(rows, key=lambda r: r["per_run"])
    lines += ["", f"Worst over a run: {worst['model']}, {100 * worst['per_run']:.3f} % of step time "
              f"({'within' if worst['per_run'] < 0.01 else 'NOT within'} the 1 % target)."]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
