"""bigbatch against the script users would pick instead: torchvision's classification reference, unmodified.

Why: "faster than a hand-written loop" says little; the question a user asks is
whether bigbatch trains as fast and as well as `references/classification/
train.py` from pytorch/vision, the script most ImageNet numbers come from.

What: an image-folder data set written as JPEG files from real images
(Fashion-MNIST from Debian's `dataset-fashion-mnist`, 28x28 grey as RGB JPEG:
the first `--train-per-class` images of each class of its training split to
train on, the next `--val-per-class` held out; its test split is not used),
trained by
both for `--epochs` epochs, interleaved (torchvision, bigbatch, torchvision,
...), `--repeats` runs each. Both sides do the same work, flag for key:

  model        torchvision resnet18, 10 classes           --model resnet18 / model.name torchvision:resnet18
  data         the same folder, 1 loader worker           --data-path, -j 1 / data.root, data.loader_workers 1
  batch        --batch-size, one process, torch's threads -b / data.batch_size, cluster.backend local
  augment      RandomResizedCrop(crop) + flip; eval       --train-crop-size, --val-resize-size, --val-crop-size
               resize crop*256/224 + centre crop          / data.image_size (PIL's antialiased bilinear both)
  optimizer    SGD, momentum 0.9, wd 1e-4, no              --lr --momentum --wd --norm-weight-decay 0
               decay on norm layers and biases, no          --bias-weight-decay 0 --lr-scheduler steplr (step
               warmup, constant lr over the run; lr 0.1     30: constant here) / optim.* (lr_scaling none)
               per 256 images (torchvision's default at
               batch 256) scaled linearly to the batch
  each epoch   train, evaluate the held-out split, checkpoint

Measured: the wall time of each whole run (process start to exit, so start-up,
evaluation and checkpoints count on both sides), and training images/s from
each tool's own epoch timing (torchvision prints whole seconds per epoch;
bigbatch's epoch records); held-out top-1 after the last epoch from each
tool's own evaluation. torchvision's script is not seeded; bigbatch's runs use
seeds 0, 1, ... Results go to bench/results/peers.txt.

The reference scripts are not part of this repository: pass `--references` a
checkout's `references/classification` directory (`git clone
https://github.com/pytorch/vision`; the figures here used upstream main's
files, unchanged since 2024-07). Default: ~/.cache/bigbatch/peers/vision/
references/classification.

    .venv/bin/python bench/peers.py [--epochs 2] [--repeats 2] [--crop 32] [--batch-size 64]
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fashion_folder import write_fashion_folder  # noqa: E402
from bench.publish import publish  # noqa: E402

DEFAULT_REFERENCES = Path.home() / ".cache" / "bigbatch" / "peers" / "vision" / "references" / "classification"
LR_PER_256, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4

RECIPE = """
seed: %(seed)d
model: {name: "torchvision:resnet18"}
data: {name: folder, root: "%(root)s", image_size: %(crop)d, channels: 3, batch_size: %(batch)d, loader_workers: 1}
train: {epochs: %(epochs)d, progress_bar: false, log_every_steps: 10}
optim: {name: sgd, base_lr: %(lr)s, lr_scaling: none, momentum: %(momentum)s, weight_decay: %(wd)s,
        exclude_norm_and_bias: true, warmup_epochs: 0, schedule: constant}
cluster: {backend: local}
"""


def lr(args: argparse.Namespace) -> float:
    """Goyal et al.'s linear rule from torchvision's default (0.1 at batch 256)."""
    return LR_PER_256 * args.batch_size / 256


def run_torchvision(references: Path, root: Path, out: Path, args: argparse.Namespace) -> dict:
    """train.py as its README runs it, on the CPU; figures from its own output."""
    command = [sys.executable, "train.py", "--data-path", str(root), "--model", "resnet18", "--device", "cpu",
               "-b", str(args.batch_size), "--epochs", str(args.epochs), "-j", "1", "--lr", str(lr(args)),
               "--momentum", str(MOMENTUM), "--wd", str(WEIGHT_DECAY), "--norm-weight-decay", "0",
               "--bias-weight-decay", "0", "--lr-scheduler", "steplr", "--lr-step-size", "30",
               "--train-crop-size", str(args.crop), "--val-resize-size", str(round(args.crop * 256 / 224)),
               "--val-crop-size", str(args.crop), "--output-dir", str(out), "--print-freq", "50"]
    out.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=references, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (out / "console.txt").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"torchvision's train.py failed (exit {done.returncode}); see {out / 'console.txt'}")
    epoch_s = [h * 3600 + m * 60 + s for h, m, s in
               (map(int, t) for t in re.findall(r"^Epoch: \[\d+\] Total time: (\d+):(\d+):(\d+)", done.stdout, re.M))]
    top1 = [float(x) for x in re.findall(r"Acc@1 ([0-9.]+) Acc@5", done.stdout)]
    return {"wall_s": wall, "train_s": sum(epoch_s), "top1": top1[-1]}


def run_bigbatch(root: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    recipe = out.with_suffix(".yaml")
    recipe.write_text(RECIPE % {"seed": seed, "root": root, "crop": args.crop, "batch": args.batch_size,
                                "epochs": args.epochs, "lr": lr(args), "momentum": MOMENTUM, "wd": WEIGHT_DECAY})
    command = [str(Path(sys.executable).with_name("bigbatch")), "train", str(recipe), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"bigbatch train failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "epoch_time_s" in r]  # one per epoch, with that epoch's evaluation
    return {"wall_s": wall, "train_s": sum(r["epoch_time_s"] for r in epochs), "top1": 100 * epochs[-1]["top1"]}


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=Path, default=None,
                        help=f"references/classification of a pytorch/vision checkout (default: {DEFAULT_REFERENCES})")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=640)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "peers.txt")
    args = parser.parse_args()
    if args.references is None:
        args.references = DEFAULT_REFERENCES
        if not (args.references / "train.py").is_file():  # like bench/gpu.py without a GPU: nothing to compare
            print(f"bench/peers.py: skipped: no torchvision reference scripts in {args.references} (git clone "
                  "https://github.com/pytorch/vision, then pass --references vision/references/classification)")
            return
    if not (args.references / "train.py").is_file():
        print(f"{args.references}: --references: no train.py (expected a checkout's references/classification "
              "directory)", file=sys.stderr)
        raise SystemExit(2)
    train_images = 10 * args.train_per_class
    results: dict[str, list[dict]] = {"torchvision train.py": [], "bigbatch": []}
    with tempfile.TemporaryDirectory(prefix="bigbatch-peers-") as tmp:
        root = Path(tmp) / "fashion"
        write_fashion_folder(root, args.train_per_class, args.val_per_class)
        for repeat in range(args.repeats):
            results["torchvision train.py"].append(run_torchvision(args.references, root, Path(tmp) / f"tv{repeat}",
                                                                   args))
            results["bigbatch"].append(run_bigbatch(root, Path(tmp) / f"bb{repeat}", repeat, args))
            print(f"repeat {repeat}: " + "; ".join(f"{k} {v[-1]}" for k, v in results.items()), flush=True)
    lines = [f"torchvision's references/classification/train.py (unmodified) and bigbatch, the same job: "
             f"torchvision resnet18, Fashion-MNIST as RGB JPEG folders ({train_images} train / "
             f"{10 * args.val_per_class} held-out images), RandomResizedCrop({args.crop}) + flip, batch "
             f"{args.batch_size}, {args.epochs} epochs, SGD lr {lr(args)} momentum {MOMENTUM} wd {WEIGHT_DECAY} (none on "
             f"norm/bias), one process, 1 loader worker, CPU; {args.repeats} interleaved runs each", "",
             f"{'':22} {'wall s (runs)':>22} {'train images/s (runs)':>26} {'top-1 % (runs)':>20}", "-" * 94]
    rate = {}
    for name, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        rates = [args.epochs * train_images / r["train_s"] for r in runs]
        rate[name] = (statistics.median(rates), statistics.median(walls))
        lines.append(f"{name:22} {spread(walls):>22} {spread(rates):>26} {spread([r['top1'] for r in runs], '{:.2f}'):>20}")
    (tv_rate, tv_wall), (bb_rate, bb_wall) = rate["torchvision train.py"], rate["bigbatch"]
    tv_top1 = statistics.mean(r["top1"] for r in results["torchvision train.py"])
    bb_top1 = statistics.mean(r["top1"] for r in results["bigbatch"])
    lines += ["", f"bigbatch / torchvision: training images/s {bb_rate / tv_rate:.2f}x, whole run "
              f"{tv_wall / bb_wall:.2f}x as fast (medians; target >= 1.0x); top-1 mean {bb_top1:.2f} vs "
              f"{tv_top1:.2f} ({bb_top1 - tv_top1:+.2f} points; target within 0.5)"]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
