"""One optimizer step of LARS and LAMB against torch.optim.SGD over ResNet-50's parameter set, on CPU.

Why: LARS/LAMB add per-layer norms to every step; with a Python loop of small
kernels that overhead can rival the step itself. Ours compute all norms with
torch._foreach_norm. Each optimizer gets the same parameters and gradients; the
steps are interleaved (SGD, LARS, LAMB, SGD, ...) and the median time of each is
reported with its ratio to torch.optim.SGD (momentum 0.9, weight decay) measured
in the same run. Target: LARS <= 1.5x SGD.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optim  # noqa: E402
from optim import split_param_groups  # noqa: E402


def make_optimizers(model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
    groups = lambda: split_param_groups(model, 5e-5)  # noqa: E731
    return {
        "torch.optim.SGD": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5),
        "torch.optim.SGD foreach": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5,
                                                   foreach=True),
        "bigbatch SGD": optim.SGD(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5),
        "bigbatch LARS": optim.LARS(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5),
        "bigbatch LAMB": optim.LAMB(groups(), lr=0.01, weight_decay=0.01),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet50(weights=None)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = make_optimizers(model)
    originals = [p.detach().clone() for p in model.parameters()]
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for repeat in range(args.repeats + 2):
        for name, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if repeat >= 2:  # the first steps allocate state
                times[name].append(elapsed)
            with torch.no_grad():  # keep every optimizer on the same weights
                for p, o in zip(model.parameters(), originals, strict=True):
                    p.copy_(o)
    n_params = sum(p.numel() for p in model.parameters())
    base = statistics.median(times["torch.optim.SGD"])
    lines = [f"optimizer step over ResNet-50 ({len(originals)} tensors, {n_params / 1e6:.1f}M parameters), "
             f"{args.threads} threads, median of {args.repeats}, torch {torch.__version__}", "",
             f"{'optimizer':26} {'ms/step':>9} {'x SGD':>7}", "-" * 44]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"{name:26} {med * 1e3:9.2f} {med / base:7.2f}")
    lines += ["", f"ratio LARS/SGD: {statistics.median(times['bigbatch LARS']) / base:.2f} (target <= 1.5)",
              f"ratio LAMB/SGD: {statistics.median(times['bigbatch LAMB']) / base:.2f}"]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "optim_step.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
