"""One optimizer step of bigbatch's SGD, LARS and LAMB against torch.optim.SGD over ResNet-50's parameters.

Why: LARS/LAMB add per-layer norms to every step; with a Python loop of small
kernels that overhead can rival the step itself. Ours compute all norms with
torch._foreach_norm.

Equal work: every optimizer gets the same parameter groups - weight decay on the
conv/linear weights, none on BatchNorm and biases (optim.split_param_groups; the
group sizes are printed) - the same parameters and gradients, momentum 0.9. The
steps are interleaved (SGD, LARS, LAMB, SGD, ...) and the median time of each is
reported with its ratio to torch.optim.SGD measured in the same run. `--device
cuda` times the CUDA path (torch's foreach kernels; the step is synchronised
before the clock stops). Target: LARS <= 1.5x SGD.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigbatch import optim  # noqa: E402
from bigbatch.optim import split_param_groups  # noqa: E402


def make_optimizers(model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer over its own copy of the same groups (torch.optim.SGD ignores lars_adapt)."""
    groups = lambda: split_param_groups(model, 5e-5)  # noqa: E731
    return {
        "torch.optim.SGD": torch.optim.SGD(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5, foreach=False),
        "torch.optim.SGD foreach": torch.optim.SGD(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5,
                                                   foreach=True),
        "bigbatch SGD": optim.SGD(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5),
        "bigbatch LARS": optim.LARS(groups(), lr=0.1, momentum=0.9, weight_decay=5e-5),
        "bigbatch LAMB": optim.LAMB(groups(), lr=0.01, weight_decay=5e-5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = torchvision.models.resnet50(weights=None).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = make_optimizers(model)
    originals = [p.detach().clone() for p in model.parameters()]
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for repeat in range(args.repeats + 2):
        for name, opt in optimizers.items():
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            elapsed = time.perf_counter() - start
            if repeat >= 2:  # the first steps allocate state
                times[name].append(elapsed)
            with torch.no_grad():  # keep every optimizer on the same weights
                for p, o in zip(model.parameters(), originals, strict=True):
                    p.copy_(o)
    n_params = sum(p.numel() for p in model.parameters())
    base = statistics.median(times["torch.optim.SGD"])
    sizes = [len(g["params"]) for g in split_param_groups(model, 5e-5)]
    lines = [f"optimizer step over ResNet-50 ({len(originals)} tensors, {n_params / 1e6:.1f}M parameters) on "
             f"{device.type}, {args.threads} threads, median of {args.repeats}, torch {torch.__version__}",
             f"every optimizer: the same 2 groups - {sizes[0]} tensors with weight decay 5e-5, {sizes[1]} "
             f"(BatchNorm, biases) without; momentum 0.9", "",
             f"{'optimizer':26} {'ms/step':>9} {'x SGD':>7}", "-" * 44]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"{name:26} {med * 1e3:9.2f} {med / base:7.2f}")
    lines += ["", f"ratio LARS/SGD: {statistics.median(times['bigbatch LARS']) / base:.2f} (target <= 1.5)",
              f"ratio LAMB/SGD: {statistics.median(times['bigbatch LAMB']) / base:.2f}",
              f"command: python bench/optim_step.py --repeats {args.repeats} --threads {args.threads} "
              f"--device {args.device}"]
    text = "\n".join(lines)
    print(text)
    name = "optim_step.txt" if device.type == "cpu" else f"optim_step_{device.type}.txt"
    out = Path(__file__).resolve().parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
