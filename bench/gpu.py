"""GPU readiness: bigbatch's training loop against a plain hand-written loop on one CUDA GPU, and how many
CPU cores of input pipeline that GPU needs.

Both sides do the same work: ResNet-50 (torchvision's, built by the Trainer's build_model, same seed), 1000
classes, synthetic 224x224 images held in host memory and copied to the GPU batch by batch (as the Trainer
does), batch 256, bf16 autocast, channels_last, bigbatch's optim.SGD from trainer.run.build.make_optimizer
(same parameter groups, momentum 0.9, weight decay 5e-5) at a constant lr, CrossEntropyLoss. Each side runs
eager and with torch.compile. A step is timed optimizer step to optimizer step (a post-hook,
torch.cuda.synchronize() in it) and a run's images/s is batch / the median step time, so the rare steps
that write a checkpoint (every epoch end in the Trainer) do not count; peak memory is
torch.cuda.max_memory_allocated over the run. Host syncs: over the same timed steps the loop runs under
torch.cuda.set_sync_debug_mode("warn") and the warnings it raises are counted, per step (the clock's own
synchronize is not counted). Then the input pipeline: bench/data.py's `run_folder` (bigbatch's folder
loader: decode + RandomResizedCrop to 224 + flip, then normalised to float on the CPU) in one process, one
thread, on real 500x375 JPEGs, images/s per CPU core (median of 3), and the loader workers one GPU needs at
the fastest measured training speed.

Both loops run with wandb off (track.wandb: disabled: no tracker service competing for the CPU); the
Trainer keeps its other defaults (TensorBoard events on log steps, a checkpoint at each epoch's end, the
held-out evaluation at the end, untimed).

Without a CUDA device (and without --device cpu) it prints one line and exits 0 (tests check that path).
`--device cpu` runs the same code on the CPU (no sync counting: that needs CUDA; no peak memory).
`--smoke` runs every code path small: resnet_small on 32x32 images, 10 classes, batch 8, 6 steps (2 untimed),
eager and compiled, the pipeline on 16 JPEGs; the tests run `--device cpu --smoke`.

Time on one H100 (defaults), estimated (no H100 run yet): the 4 x 40 steps of batch 256 are 41k images,
~16 s at 2,500-3,000 images/s (ResNet-50 bf16); torch.compile dominates: two training compiles of ResNet-50
at 1-2 min each (the second may hit inductor's cache) and the compiled side's end-of-run evaluation (an
eval-mode recompile, forward only: under 1 min); start-up and CUDA init ~20 s, four 1.2 GB synthetic sets
~20 s, cuDNN autotuning, 10 checkpoints and the pipeline (256 JPEGs) ~20 s: ~3 min typical, ~6.5 min at
worst, under the 8 min budget; the step count hardly matters (each 10 more steps add ~4 s).

    python bench/gpu.py [--steps 40] [--batch-size 256] [--device cuda|cpu] [--smoke]
                                                         (writes bench/results/gpu.md; prints the table)
"""

import argparse
import gc
import importlib.util
import math
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.publish import publish  # noqa: E402

RECIPE = """\
description: bench/gpu.py - bigbatch on one GPU
seed: 0
model: {{name: "{model}"}}
data: {{name: synthetic, batch_size: {batch}, num_classes: {classes}, image_size: {image}, train_examples: {examples},
       val_examples: {batch}}}
train: {{epochs: {epochs}, max_steps: {steps}, precision: bf16, channels_last: true, compile: {compile},
        device: {device}, eval_every_epochs: 0, log_every_steps: 10, progress_bar: false, keep_checkpoints: 1}}
optim: {{name: sgd, base_lr: 0.1, reference_batch: {batch}, momentum: 0.9, weight_decay: 5e-5,
        warmup_epochs: 0, schedule: constant}}
cluster: {{workers: 1, backend: local}}
track: {{wandb: disabled}}
"""

STEPS_PER_EPOCH = 8
SYNC_WARNING = "called a synchronizing CUDA operation"  # what set_sync_debug_mode("warn") says


@dataclass(frozen=True)
class Scale:
    model: str
    label: str
    classes: int
    image: int
    batch: int
    steps: int
    warmup: int
    jpegs: int  # pipeline: JPEGs made and read, in batches of pipeline_batch
    pipeline_batch: int


FULL = Scale("torchvision:resnet50", "ResNet-50", 1000, 224, 256, 40, 10, 256, 32)
SMOKE = Scale("resnet_small", "resnet_small (smoke)", 10, 32, 8, 6, 2, 16, 8)


@dataclass
class Side:
    """One measured run: loop (plain / bigbatch), compiled or not, its figures."""
    loop: str
    compiled: bool
    images_per_s: float
    peak_bytes: int | None  # None: not measured (CPU)
    syncs_per_step: float | None  # None: not counted (CPU)


class StepClock:
    """Optimizer post-hook: the time each step ended, after the device finished it. Steps `warmup + 1` to
    `steps` are timed (from the end of the step before). With `caught` (a warnings.catch_warnings(record=True)
    list), on CUDA: sync debug mode "warn" is on over those same steps and the sync warnings are counted."""

    def __init__(self, device: torch.device, warmup: int, steps: int, caught: list | None = None) -> None:
        self.device, self.warmup, self.steps = device, warmup, steps
        self.caught = caught if device.type == "cuda" else None
        self.ends: list[float] = []  # ends[k]: when step k + 1 ended
        self.syncs: list[int] = []  # sync warnings seen by each step's end

    def __call__(self, optimizer, args, kwargs) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)  # the clock's own synchronize is not the loop's
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        if self.caught is not None:
            self.syncs.append(sum(SYNC_WARNING in str(w.message) for w in self.caught))
            if self.warmup <= len(self.ends) < self.steps:
                torch.cuda.set_sync_debug_mode("warn")

    def images_per_s(self, batch: int) -> float:
        timed = self.ends[self.warmup - 1:]
        return batch / statistics.median(b - a for a, b in zip(timed, timed[1:], strict=False))

    def syncs_per_step(self) -> float | None:
        if self.caught is None:
            return None
        timed = self.syncs[self.warmup - 1:]
        return (timed[-1] - timed[0]) / (len(timed) - 1)


class CountingSyncs:
    """Records every warning while open (the clock switches sync debug mode on and off); leaves it off."""

    def __enter__(self) -> list:
        self.context = warnings.catch_warnings(record=True)
        caught = self.context.__enter__()
        warnings.simplefilter("always")
        return caught

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
        self.context.__exit__(*exc)


def recipe_for(directory: Path, batch: int, steps: int, compiled: bool, device: str = "cuda",
               scale: Scale = FULL):
    from bigbatch.trainer.recipe import load_recipe

    examples = batch * STEPS_PER_EPOCH  # 8 steps per epoch: 1.2 GB of float images in host memory at full scale
    path = directory / f"gpu-{compiled}.yaml"
    path.write_text(RECIPE.format(model=scale.model, classes=scale.classes, image=scale.image, batch=batch,
                                  examples=examples, epochs=math.ceil(steps / STEPS_PER_EPOCH), steps=steps,
                                  compile=str(compiled).lower(), device=device))
    return load_recipe(path, [])


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    """Called with this side's model and optimizer built: the previous side's leftovers are collected first."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_plain(recipe, warmup: int) -> Side:
    """The hand-written loop with the same settings."""
    from bigbatch.trainer.data import load_data
    from bigbatch.trainer.run.build import build_model, make_optimizer

    device = torch.device(recipe.train.device)
    data = load_data(recipe.data, recipe.seed)
    images, labels = data.train.images, data.train.labels
    model = build_model(recipe, data, device)  # seeded: the Trainer's initial weights
    optimizer = make_optimizer(recipe.optim, model, recipe.optim.base_lr)
    step_model = torch.compile(model) if recipe.train.compile else model
    criterion = torch.nn.CrossEntropyLoss()
    batch, steps = recipe.data.batch_size, recipe.train.max_steps
    with CountingSyncs() as caught:
        clock = StepClock(device, warmup, steps, caught)
        optimizer.register_step_post_hook(clock)
        reset_peak_memory(device)
        step = 0
        while step < steps:
            perm = torch.randperm(len(labels))
            for i in range(min(len(labels) // batch, steps - step)):
                idx = perm[i * batch:(i + 1) * batch]
                x = images[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = labels[idx].to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = criterion(step_model(x), y)
                loss.backward()
                optimizer.step()
                step += 1
    return Side("plain", recipe.train.compile, clock.images_per_s(batch), peak_memory(device),
                clock.syncs_per_step())


def run_bigbatch(recipe, warmup: int, run_dir: Path) -> Side:
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.run.loop import Trainer

    device = torch.device(recipe.train.device)
    trainer = Trainer(recipe, run_dir, LocalCollective(device))
    with CountingSyncs() as caught:
        clock = StepClock(device, warmup, recipe.train.max_steps, caught)
        trainer.optimizer.register_step_post_hook(clock)
        reset_peak_memory(device)
        trainer.fit()
    return Side("bigbatch", recipe.train.compile, clock.images_per_s(recipe.data.batch_size),
                peak_memory(device), clock.syncs_per_step())


def pipeline_images_per_s_per_core(directory: Path, images: int = 256, batch: int = 32, repeats: int = 3) -> float:
    """bench/data.py's measurement of bigbatch's folder loader (`run_folder`, antialias: the default), one
    process, one thread, on `images` JPEGs from its `make_folder`; the median of `repeats` runs."""
    spec = importlib.util.spec_from_file_location("bench_data", REPO / "bench" / "data.py")
    bench_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_data)
    torch.set_num_threads(1)
    bench_data.make_folder(directory / "folder", images)
    return statistics.median(bench_data.run_folder(directory / "folder", batch, "antialias") for _ in range(repeats))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} torch threads)"


def report(sides: list[Side], per_core: float, scale: Scale, args, device: torch.device, name: str) -> str:
    def gib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**30:.1f}"

    def syncs(value: float | None) -> str:
        return "n/a (needs CUDA)" if value is None else f"{value:.2f}"

    plain = {s.compiled: s.images_per_s for s in sides if s.loop == "plain"}
    big = {s.compiled: s for s in sides if s.loop == "bigbatch"}
    fastest = max(s.images_per_s for s in sides)
    lines = [f"# bench/gpu.py: bigbatch's loop against a plain loop{' (smoke)' if args.smoke else ''}", "",
             f"{scale.label}, synthetic {scale.image}x{scale.image}, {scale.classes} classes, batch "
             f"{args.batch_size}, bf16 autocast, channels_last, eager and torch.compile, 1 x {name}, "
             f"torch {torch.__version__}; images/s = batch / the median time of steps {args.warmup + 1}-"
             f"{args.steps} (the first {args.warmup} untimed: compilation, autotuning).", "",
             "| loop | compile | images/s | x plain | peak GiB | host syncs / step |",
             "|---|---|---:|---:|---:|---:|"]
    for s in sides:
        lines.append(f"| {s.loop} | {'compiled' if s.compiled else 'eager'} | {s.images_per_s:.1f} | "
                     f"{s.images_per_s / plain[s.compiled]:.3f} | {gib(s.peak_bytes)} | "
                     f"{syncs(s.syncs_per_step)} |")
    sync_text = ("n/a: sync counting needs CUDA (torch.cuda.set_sync_debug_mode)" if device.type != "cuda" else
                 ", ".join(f"{'compiled' if c else 'eager'} {big[c].syncs_per_step:.2f}" for c in sorted(big)))
    lines += ["", "| measurement | value |", "|---|---|",
              f"| input pipeline: bigbatch folder loader (bench/data.py run_folder, antialias), 1 process, 1 "
              f"thread, {scale.jpegs} JPEGs 500x375 -> 224, batch {scale.pipeline_batch} | "
              f"{per_core:.1f} images/s per core |",
              f"| loader workers one device needs at {fastest:.1f} images/s | {math.ceil(fastest / per_core)} |",
              f"| host syncs per timed bigbatch step | {sync_text} |",
              f"| bigbatch / plain, eager | {big[False].images_per_s / plain[False]:.3f} (target >= 0.98) |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help=f"optimizer steps per run (default {FULL.steps}; smoke {SMOKE.steps})")
    parser.add_argument("--batch-size", type=int, help=f"default {FULL.batch}; smoke {SMOKE.batch}")
    parser.add_argument("--warmup", type=int, help="leading steps not timed (compilation, autotune); "
                                                     f"default {FULL.warmup}; smoke {SMOKE.warmup}")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="every code path, tiny: resnet_small, 32 px, batch 8")
    parser.add_argument("--out", type=Path, help="Markdown results (default bench/results/gpu.md; with --smoke or "
                                                 "--device cpu gpu[_smoke][_cpu].md there)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    scale = SMOKE if args.smoke else FULL
    args.steps = args.steps or scale.steps
    args.batch_size = args.batch_size or scale.batch
    args.warmup = scale.warmup if args.warmup is None else args.warmup
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error(f"need 1 <= --warmup < --steps (a timed step runs from the end of the one before), got "
                     f"--warmup {args.warmup} --steps {args.steps}")
    suffix = ("_smoke" if args.smoke else "") + ("_cpu" if args.device == "cpu" else "")
    out = args.out or REPO / "bench" / "results" / f"gpu{suffix}.md"
    device = torch.device(args.device)
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # tiny steps: spare a shared CPU the threads' spin-waits (figures are not the point)
    name = device_name(device)  # before the pipeline measurement sets 1 thread
    sides = []
    with tempfile.TemporaryDirectory(prefix="bigbatch-gpu-") as tmp:
        scratch = Path(tmp)
        for compiled in (False, True):
            recipe = recipe_for(scratch, args.batch_size, args.steps, compiled, args.device, scale)
            sides.append(run_plain(recipe, args.warmup))
            sides.append(run_bigbatch(recipe, args.warmup, scratch / f"run-{compiled}"))
        per_core = pipeline_images_per_s_per_core(scratch, scale.jpegs, scale.pipeline_batch)
    publish(report(sides, per_core, scale, args, device, name), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
