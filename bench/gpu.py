"""GPU readiness: bigbatch's training loop against a plain hand-written loop on one CUDA GPU, and how many
CPU cores of input pipeline that GPU needs.

Both sides do the same work: ResNet-50 (torchvision's, same seed), 1000 classes, synthetic 224x224 images
held in host memory and copied to the GPU batch by batch (as the Trainer does), batch 256, bf16 autocast,
channels_last, bigbatch's optim.SGD from trainer.build.make_optimizer (same parameter groups, momentum 0.9,
weight decay 5e-5) at a constant lr, CrossEntropyLoss. Each side runs eager and with torch.compile. A step
is timed optimizer step to optimizer step (a post-hook, torch.cuda.synchronize() in it) and a run's
images/s is batch / the median step time, so the rare steps that write a checkpoint (every epoch end in
the Trainer) do not count; peak memory is torch.cuda.max_memory_allocated over the run. Then the input
pipeline: bigbatch's folder loader (decode + RandomResizedCrop to 224 + flip, uint8) in one process on
real JPEGs, images/s per CPU core, and the loader workers one GPU needs at the measured training speed.

Without a CUDA device it prints one line and exits 0 (tests check that path).

    python bench/gpu.py [--steps 40] [--batch-size 256]     (writes bench/results/gpu.txt)
"""

import argparse
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.publish import publish  # noqa: E402

RECIPE = """\
description: bench/gpu.py - bigbatch on one GPU
seed: 0
model: {{name: "torchvision:resnet50"}}
data: {{name: synthetic, batch_size: {batch}, num_classes: 1000, image_size: 224, train_examples: {examples},
       val_examples: {batch}}}
train: {{epochs: {epochs}, max_steps: {steps}, precision: bf16, channels_last: true, compile: {compile},
        device: cuda, eval_every_epochs: 0, log_every_steps: 10, progress_bar: false, keep_checkpoints: 1}}
optim: {{name: sgd, base_lr: 0.1, reference_batch: {batch}, momentum: 0.9, weight_decay: 5e-5,
        warmup_epochs: 0, schedule: constant}}
cluster: {{workers: 1, backend: local}}
"""


class StepClock:
    """Optimizer post-hook: the time each step ended, after the GPU finished it."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __call__(self, optimizer, args, kwargs) -> None:
        torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def images_per_s(self, batch: int, warmup: int) -> float:
        steps = [b - a for a, b in zip(self.ends[warmup:], self.ends[warmup + 1:], strict=False)]
        return batch / statistics.median(steps)


def recipe_for(directory: Path, batch: int, steps: int, compiled: bool):
    from bigbatch.trainer.recipe import load_recipe

    examples = batch * 8  # 8 steps per epoch: 1.2 GB of float images in host memory
    path = directory / f"gpu-{compiled}.yaml"
    path.write_text(RECIPE.format(batch=batch, examples=examples, epochs=math.ceil(steps / 8), steps=steps,
                                  compile=str(compiled).lower()))
    return load_recipe(path, [])


def run_plain(recipe, warmup: int) -> tuple[float, int]:
    """The hand-written loop with the same settings; (images/s, peak bytes)."""
    from bigbatch.trainer.data import load_data
    from bigbatch.trainer.models import create_model
    from bigbatch.trainer.run.build import make_optimizer

    data = load_data(recipe.data, recipe.seed)
    images, labels = data.train.images, data.train.labels
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, 1000, 3, 224).cuda().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(recipe.optim, model, recipe.optim.base_lr)
    step_model = torch.compile(model) if recipe.train.compile else model
    criterion = torch.nn.CrossEntropyLoss()
    clock = StepClock()
    optimizer.register_step_post_hook(clock)
    torch.cuda.reset_peak_memory_stats()
    batch, step = recipe.data.batch_size, 0
    while step < recipe.train.max_steps:
        perm = torch.randperm(len(labels))
        for i in range(min(len(labels) // batch, recipe.train.max_steps - step)):
            idx = perm[i * batch:(i + 1) * batch]
            x = images[idx].cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = labels[idx].cuda(non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = criterion(step_model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
    return clock.images_per_s(batch, warmup), torch.cuda.max_memory_allocated()


def run_bigbatch(recipe, warmup: int, run_dir: Path) -> tuple[float, int]:
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.run.loop import Trainer

    trainer = Trainer(recipe, run_dir, LocalCollective("cuda"))
    clock = StepClock()
    trainer.optimizer.register_step_post_hook(clock)
    torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    return clock.images_per_s(recipe.data.batch_size, warmup), torch.cuda.max_memory_allocated()


def pipeline_images_per_s_per_core(directory: Path, images: int = 256) -> float:
    """bench/data.py's measurement of bigbatch's folder loader: one process, one thread."""
    spec = importlib.util.spec_from_file_location("bench_data", REPO / "bench" / "data.py")
    bench_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_data)
    torch.set_num_threads(1)
    bench_data.make_folder(directory / "folder", images)
    return bench_data.run_bigbatch(directory / "folder", 32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=10, help="leading steps not timed (compilation, autotune)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu.txt")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bigbatch-gpu-") as tmp:
        scratch = Path(tmp)
        for compiled in (False, True):
            recipe = recipe_for(scratch, args.batch_size, args.steps, compiled)
            plain = run_plain(recipe, args.warmup)
            big = run_bigbatch(recipe, args.warmup, scratch / f"run-{compiled}")
            rows.append((compiled, plain, big))
        per_core = pipeline_images_per_s_per_core(scratch)
    name = torch.cuda.get_device_name()
    lines = [f"ResNet-50, synthetic 224x224, batch {args.batch_size}, bf16 autocast, channels_last, 1 x {name}, "
             f"torch {torch.__version__}; median step after {args.warmup} untimed of {args.steps}", "",
             f"{'compile':<8}{'plain img/s':>12}{'bigbatch img/s':>16}{'ratio':>7}{'plain GiB':>11}{'bigbatch GiB':>14}",
             "-" * 68]
    for compiled, (p, pm), (b, bm) in rows:
        lines.append(f"{str(compiled):<8}{p:>12.0f}{b:>16.0f}{b / p:>7.3f}{pm / 2**30:>11.1f}{bm / 2**30:>14.1f}")
    fastest = max(b for _, _, (b, _) in rows)
    lines += ["", f"input pipeline (bigbatch folder loader, 1 process, 1 thread, 500x375 JPEGs -> 224): "
                  f"{per_core:.0f} images/s per core",
              f"loader workers one GPU needs at {fastest:.0f} images/s: {math.ceil(fastest / per_core)}",
              f"ratio bigbatch/plain (eager): {rows[0][2][0] / rows[0][1][0]:.3f} (target >= 0.98)",
              f"command: python bench/gpu.py --steps {args.steps} --batch-size {args.batch_size} --warmup {args.warmup}"]
    text = "\n".join(lines) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
