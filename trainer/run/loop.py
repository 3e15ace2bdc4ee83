"""The run loop: epochs of optimizer steps (trainer/step), evaluation, checkpoints and stop requests.

Written against the Collective protocol only, so the same loop runs in a plain process (LocalCollective) and
in Ray / torch.distributed / Horovod workers. One step is `train_step` (trainer/step/core.py); the recipe's
optional features are the step's hooks (trainer/step/features.py); what rank 0 writes about the run is
RunRecords (trainer/records/run_records.py).
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from signal import SIGTERM

import torch

from bigbatch.trainer.adaptive.pace import AdaptivePace, FixedPace
from bigbatch.trainer.data import layout_warning
from bigbatch.trainer.data.loader import UnreadableBudget, model_input, release_loaders
from bigbatch.trainer.data.source import MicroBatchSource, WorldShape, label_trace
from bigbatch.trainer.distributed.collective import Collective, shared_run_id
from bigbatch.trainer.distributed.worker_times import WorkerTimes
from bigbatch.trainer.models.complexity import count_macs
from bigbatch.trainer.recipe.plan import Stretch
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.records.run_records import LogWindow, RunRecords, throughput
from bigbatch.trainer.run.build import build
from bigbatch.trainer.run.checkpoint import CheckpointDir, rng_state, set_rng_state
from bigbatch.trainer.run.evaluate import score_held_out
from bigbatch.trainer.run.hardware import describe
from bigbatch.trainer.run.nonfinite import skip_or_stop
from bigbatch.trainer.run.resume import load_checkpoint, step_at
from bigbatch.trainer.run.stop import STOP_FILE, StopRequests, StopVote
from bigbatch.trainer.step import Learner, StepContext, train_step
from bigbatch.trainer.step.ema import WeightAverage
from bigbatch.trainer.step.features import make_hooks
from bigbatch.trainer.step.noise_scale import MeasureNoiseScale
from bigbatch.trainer.step.outcomes import Settled, StepOutcomes

# Called on every rank after rank 0 wrote a checkpoint (path on rank 0, None elsewhere); collective.
CheckpointHook = Callable[[Path | None, dict], None]

CHECKPOINT_FORMAT = 1


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written. `signum` picks the exit code (128 + signum)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"interrupted by signal {signum}; checkpoint {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class Preempted(Exception):
    """A worker of an elastic run was signalled (a node shutting down), or the driver asked the group to grow (a
    node joined): every rank checkpointed at the same step and ends this attempt with this error, so that Ray
    restarts the group with the workers it can place."""


class Trainer:
    """One worker's share of a run. `on_checkpoint` replaces the barrier after each checkpoint (Ray reports
    the checkpoint to its storage there); a STOP file in the run directory or SIGINT/SIGTERM on any rank
    makes every rank stop after the same step (the next one, trainer/run/stop.py) with a checkpoint."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, collective: Collective, resume: str | None = None,
                 on_checkpoint: CheckpointHook | None = None, restartable: bool = False):
        self.recipe, self.collective = recipe, collective
        self.restartable = restartable  # a failure is one attempt's (Ray restarts the group): not the run's end
        # elastic: a signal to a worker is that worker leaving (checkpoint, restart without it), not a stop
        self.leave_on_signal = restartable and recipe.cluster.elastic
        self.run_dir, self.is_main = Path(run_dir), collective.rank == 0
        self.parts = build(recipe, collective)
        self.model, self.plan, data = self.parts.model, self.parts.plan, self.parts.data
        self.hooks = make_hooks(recipe, self.model, self.plan, collective, data.image_size, data.num_classes,
                                self.parts.soft_criterion)
        # steps of one micro-step measure the local gradient in DDP's comm hook (registered only if some need it)
        noise = self.hooks.find(MeasureNoiseScale)
        one_micro_step = 1 in self.plan.epoch_accumulation or recipe.train.batch_policy == "adaptive"
        tap = noise.tap if noise is not None and one_micro_step else None
        # DDP decides when gradients are all-reduced: no_sync is entered on it, not on the compiled module around it
        self.wrapped_model, self.optimizer = collective.wrap(self.model, self.parts.optimizer, gradient_tap=tap)
        self.train_model = torch.compile(self.wrapped_model) if recipe.train.compile else self.wrapped_model
        self.memory_format = torch.channels_last if recipe.train.channels_last else torch.contiguous_format
        self.ema = self.hooks.find(WeightAverage)
        self.pace = self.hooks.find(AdaptivePace) or FixedPace(self.plan)  # the lr by step, or the adaptive batch's
        self.checkpoints = CheckpointDir(self.run_dir / "checkpoints", recipe.train.keep_checkpoints)
        self.on_checkpoint = on_checkpoint
        self.step, self.best_top1, self.skipped_steps = 0, -1.0, 0
        self.run_id = shared_run_id(collective)
        self.source = MicroBatchSource(data.train, recipe.seed, recipe.data.loader_workers,
                                       collective.device.type == "cuda", recipe.data.prefetch_batches,
                                       recipe.data.aug_repeats,
                                       UnreadableBudget(recipe.data.max_bad_images, collective.rank),
                                       label_trace(self.run_dir, collective.rank))
        self.resumed_from = self._resume(resume) if resume else None
        self.stop = StopRequests(self.run_dir / STOP_FILE if self.is_main else None, world_size=collective.world_size)
        self.vote = StopVote(collective)
        self.outcomes, self.times = StepOutcomes(collective.world_size), WorkerTimes(collective)
        self.learner = Learner(self.train_model, self.wrapped_model, self.optimizer, self.parts.scaler, collective,
                               lambda: self.parts.autocast(collective.device),
                               functools.partial(model_input, device=collective.device,
                                                 memory_format=self.memory_format, normalize=data.normalize),
                               self.outcomes, self.times, recipe.seed, recipe.train.on_nonfinite == "skip")
        self.hardware = describe(collective.device, collective.world_size)
        self.macs_per_image = (count_macs(self.model, data.channels, data.image_size)
                               if self.is_main else 0)  # for the summary, which rank 0 writes
        self.records = RunRecords(recipe, self.run_dir, self.run_id, writes=self.is_main)

    def _resume(self, resume: str) -> Path | None:
        loaded = load_checkpoint(resume, self.checkpoints, self.collective)
        if loaded is None:
            return None
        path, state = loaded
        self.model.load_state_dict(state["model"])
        self.hooks.load_state_dict(state)
        self.plan = self.pace.plan  # an adaptive batch's changes so far
        self.source.load_state_dict(state.get("data_reading"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.parts.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        sampler = state["sampler"]
        self.step = step_at(self.plan, sampler["epoch"], sampler["offset"], state["step"], say=self.is_main)
        self.best_top1, self.skipped_steps, self.run_id = state["best_top1"], state["skipped_steps"], state["run_id"]
        return path

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; only tensors and plain types (weights_only loading)."""
        epoch, offset = self.plan.position(self.step)
        return {
            "format": CHECKPOINT_FORMAT, "run_id": self.run_id, "step": self.step,
            "epoch": epoch, "step_in_epoch": self.step - self.plan.epoch_start(epoch),
            "sampler": {"seed": self.recipe.seed, "epoch": epoch, "offset": offset},
            "schedule": {"step": self.step, "lr": self.plan.schedule(self.step)},
            "world_size": self.collective.world_size, "global_batch": self.plan.stretch_at(self.step).global_batch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            **self.hooks.state_dict(),  # "ema", "gradient_noise", "adaptive_batch"
            "data_reading": self.source.state_dict(),  # the world shapes that read this epoch so far
            "scaler": self.parts.scaler.state_dict(), "rng": rng_state(),
            "best_top1": self.best_top1, "skipped_steps": self.skipped_steps,
            "recipe": dataclasses.asdict(self.recipe),
        }

    # ---- what the step is given -----------------------------------------------------------------
    def _context(self, stretch: Stretch) -> StepContext:
        lr = self.pace.lr(self.step)  # first: an adaptive pace knows the step's gain, so whether it is the last
        logging = (self.step + 1) % self.recipe.train.log_every_steps == 0 or self.pace.is_last(self.step)
        return StepContext(step=self.step, epoch=stretch.epoch, accumulation=stretch.accumulation, lr=lr,
                           logging=logging, criterion=self.parts.criterion, uneven_batch=stretch.uneven_batch,
                           global_batch=stretch.global_batch, micro_batch=stretch.micro_batch)

    # ---- the run ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to plan.total_steps, evaluating and checkpointing as the recipe says; return the summary."""
        self.records.open(self.step, self.pace.budget, self.resumed_from,
                          {**self.plan.as_dict(), "total_steps": self.pace.budget, "hardware": self.hardware},
                          layout_warning(self.parts.data, self.recipe.data.loader_workers))
        self.stop.install()
        try:
            return self._fit()
        except Exception as e:
            if not isinstance(e, Interrupted):
                self.records.failed(self.step, e, self.restartable)
            raise
        finally:
            self.stop.restore()
            self.records.close()
            release_loaders(self.parts.data.train, self.parts.data.val, self.parts.data.holdout)

    def _fit(self) -> dict:
        start_step, started, last_eval = self.step, time.perf_counter(), {}
        self.window, epoch_started = LogWindow(), (-1, 0.0)
        while not self.pace.done(self.step):
            stretch = self.plan.stretch_at(self.step)
            if stretch.epoch != epoch_started[0]:  # an epoch may take several stretches (an adaptive batch's)
                epoch_started = (stretch.epoch, time.perf_counter())
            self._train_stretch(stretch)
            last_eval = self._end_epoch(stretch.epoch, epoch_started[1]) or last_eval
        return self._finish(last_eval, start_step, time.perf_counter() - started)

    def _train_stretch(self, stretch: Stretch) -> None:
        """Steps to the end of the stretch (its epoch's end, training's, or a change of the adaptive batch),
        settling outcomes at log steps and checkpoints."""
        every, world = self.recipe.train.checkpoint_every_steps, self.collective.world_size
        self.hooks.on_epoch_start(stretch.epoch, len(self.plan.epoch_steps))
        shape = WorldShape(world, self.collective.rank, stretch.micro_batch, stretch.accumulation,
                           stretch.uneven_batch, stretch.offset)
        micro_batches = self.source.epoch(stretch.epoch, self.step - stretch.first_step, shape)
        epoch_end = self.plan.epoch_start(stretch.epoch + 1)
        while self.step < stretch.end_step and not self.pace.done(self.step):
            ctx = self._context(stretch)
            settled = train_step(self.learner, ctx, micro_batches, self.hooks)
            self.window.images += stretch.global_batch
            self.step += 1
            checkpoint_due, last = bool(every) and self.step % every == 0, self.pace.done(self.step)
            if settled is None and (ctx.logging or checkpoint_due or last or self.step == epoch_end):
                settled = self.outcomes.settle()  # the only host read of the step's outcome
            self._account(settled)  # a non-finite loss ends every rank here, before any rank posts its vote
            stop, leave = self.vote.exchange(*self.stop.requests(self.leave_on_signal))  # host only, a step late
            changed = ctx.logging and self._log_step(ctx)
            if not ctx.logging:
                self.records.progress(self.step)
            if stop or leave:
                self._stop_here(int(self.stop.signum or SIGTERM), leave)
            if checkpoint_due and not last and self.step != epoch_end:
                self._save()
            if changed:  # the adaptive batch changed: the plan goes on from here in a new stretch
                return

    def _account(self, settled: Settled | None) -> None:
        """Settled steps' losses into the log window; a non-finite one stops the run (or is counted as skipped)."""
        for step, loss in settled.losses if settled is not None else ():
            if math.isfinite(loss):
                self.window.loss_sum += loss
                self.window.steps += 1
            else:
                self._nonfinite(step)

    def _stop_here(self, signum: int, leaving: bool) -> None:
        self._account(self.outcomes.settle())  # the steps since the last log step: no checkpoint of a non-finite one
        self.vote.close()
        checkpoint = self._save()
        if leaving:
            raise Preempted(self.stop.why_leaving(self.step))
        self.records.interrupted(self.step, signum, checkpoint)
        raise Interrupted(signum, checkpoint)

    def _end_epoch(self, epoch: int, epoch_started: float) -> dict:
        """At an epoch's end (or training's): the epoch time, an evaluation when due, a checkpoint."""
        finished_epoch = self.step == self.plan.epoch_start(epoch + 1)
        done = self.pace.done(self.step)
        is_best, record, scores = False, {"step": self.step, "epoch": self._epoch_progress()}, {}
        if finished_epoch:
            record["epoch_time_s"] = time.perf_counter() - epoch_started  # training only, since (re)start
        every = self.recipe.train.eval_every_epochs
        if done or (finished_epoch and every and (epoch + 1) % every == 0):
            scores = self._evaluate()
            record.update(scores)
            score = scores["top1_ema" if self.recipe.train.ema.best == "ema" else "top1"]
            is_best = score > self.best_top1
            self.best_top1 = max(self.best_top1, score)
        if len(record) > 2:
            self.records.write(record)
        if finished_epoch or done:
            self._save(is_best=is_best)
        return scores

    def _epoch_progress(self) -> float:
        return self.plan.epoch_progress(self.step)

    def _log_step(self, ctx: StepContext) -> bool:
        """The step record (rank 0), then the adaptive batch's look (every rank): True if the batch changed."""
        workers = self.times.gather() if self.collective.world_size > 1 else {}
        window, self.window = self.window, LogWindow()
        if self.is_main:
            self._write_step_record(ctx, window, workers)
        change = self.pace.look(self.step, workers)
        if change:
            self.records.batch_changed(change)
        self.plan = self.pace.plan
        return bool(change) and change["to"] != change["from"]

    def _write_step_record(self, ctx: StepContext, window: LogWindow, workers: dict) -> None:
        record = {"step": self.step, "epoch": self._epoch_progress(), "loss": window.mean_loss(), "lr": ctx.lr,
                  "global_batch": self.plan.global_batch_of_step(self.step), "world_size": self.collective.world_size,
                  "accumulation_steps": self.plan.accumulation_of_step(self.step),
                  "images_per_s": window.images_per_s(), **workers}
        record["images_per_s_per_worker"] = record["images_per_s"] / self.collective.world_size
        self.records.log_step({**record, **ctx.record})  # the hooks' measurements: grad norm, noise, trust ratios

    def _evaluate(self) -> dict:
        """Score the checkpoint's model (and its weight average), with rank 0's BatchNorm statistics."""
        score = functools.partial(score_held_out, recipe=self.recipe, parts=self.parts, collective=self.collective,
                                  memory_format=self.memory_format)
        result = score(self.model, self.train_model)
        line = f"top1 {result['top1']:.4f} top5 {result['top5']:.4f} val_loss {result['val_loss']:.4f}"
        if self.ema is not None:
            averaged = score(self.ema.module, self.ema.module)
            result.update({f"{key}_ema": averaged[key] for key in ("top1", "top5", "val_loss")})
            line += f" top1_ema {averaged['top1']:.4f}"
        self.records.say(f"epoch {self._epoch_progress():.2f} step {self.step}: {line}")
        return result

    def _save(self, is_best: bool = False) -> Path | None:
        """Rank 0 writes; every rank waits so nobody runs ahead of a checkpoint being written."""
        path = self.checkpoints.save(self.state_dict(), self.step, is_best=is_best) if self.is_main else None
        if self.on_checkpoint is None:
            self.collective.barrier()
        else:
            self.on_checkpoint(path, {"step": self.step, "epoch": self._epoch_progress()})
        return path

    def _finish(self, last_eval: dict, start_step: int, elapsed: float) -> dict:
        self.vote.close()
        images_per_s = self.plan.images_between(start_step, self.step) / max(elapsed, 1e-9)
        summary = {"status": "finished", "run_id": self.run_id, "step": self.step,
                   "epoch": self._epoch_progress(), "top1": last_eval.get("top1"),
                   "top5": last_eval.get("top5"), "best_top1": self.best_top1,
                   **{key: value for key, value in last_eval.items() if key.endswith("_ema")},
                   "skipped_steps": self.skipped_steps, "elapsed_s": elapsed,
                   **throughput(images_per_s, self.collective.world_size, self.macs_per_image),
                   "global_batch": self.plan.global_batch_of_step(self.step),
                   "hardware": self.hardware}
        return self.records.finished(summary)

    def _nonfinite(self, step: int) -> None:
        """Optimizer step number `step` (1-based) had a non-finite global loss."""
        last = self.checkpoints.latest_valid(report=lambda _: None) if self.is_main else None
        self.skipped_steps = skip_or_stop(self.recipe, step, self.plan.locate(step - 1)[0], self.skipped_steps, last)
