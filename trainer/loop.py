"""The training loop: one optimizer step reads top to bottom in `_optimizer_step`.

Written against the Collective protocol only, so the same loop runs in a plain
process (LocalCollective) and in Ray / torch.distributed / Horovod workers.
"""

import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from signal import SIGTERM

import torch
import yaml
from torch.utils.data import IterableDataset

from bigbatch.trainer.atomic import write_atomic, write_json_atomic
from bigbatch.trainer.batch_advice import summary_entry
from bigbatch.trainer.build import build
from bigbatch.trainer.checkpoint import (
    CheckpointDir,
    load_bytes,
    load_unverified,
    read_verified,
    rng_state,
    seed_step,
    set_rng_state,
)
from bigbatch.trainer.collective import Collective, broadcast_buffers, broadcast_text, gradients
from bigbatch.trainer.data import TrainOrder, iterate_batches, layout_warning
from bigbatch.trainer.data.loader import Skipped, iterate_stream, report_skipped, to_model_input
from bigbatch.trainer.drop_path import DropPathRamp
from bigbatch.trainer.errors import RecipeError, TrainingFailed
from bigbatch.trainer.evaluate import evaluate
from bigbatch.trainer.grad_clip import clip_gradients, clipped_parameters
from bigbatch.trainer.gradient_noise import GradientNoiseScale
from bigbatch.trainer.hardware import describe
from bigbatch.trainer.mixing import draw as draw_mix
from bigbatch.trainer.mixing import mix_batch
from bigbatch.trainer.models.complexity import count_macs
from bigbatch.trainer.models.norms import RenormSchedule
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.report import read_history, resizes
from bigbatch.trainer.step_outcomes import Settled, StepOutcomes
from bigbatch.trainer.stop import STOP_FILE, StopRequests
from bigbatch.trainer.supernet_path import PathPerStep
from bigbatch.trainer.tensorboard_tracker import TensorBoardTracker
from bigbatch.trainer.track import Console, MetricsFile, notice
from bigbatch.trainer.wandb_tracker import WandbTracker
from bigbatch.trainer.weight_average import make_weight_average
from bigbatch.trainer.worker_times import WorkerTimes

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
    """A worker of an elastic run was signalled (a node shutting down): every rank checkpointed at the same
    step and ends this attempt with this error, so that Ray restarts the group with the workers it can place."""


class Trainer:
    """One worker's share of a run. `on_checkpoint` replaces the barrier after each checkpoint (Ray reports
    the checkpoint to its storage there); a STOP file in the run directory or SIGINT/SIGTERM on any rank
    makes every rank stop after the same step (the next log step) with a checkpoint."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, collective: Collective, resume: str | None = None,
                 on_checkpoint: CheckpointHook | None = None, restartable: bool = False):
        self.recipe, self.collective = recipe, collective
        self.restartable = restartable  # a failure is one attempt's (Ray restarts the group): not the run's end
        # elastic: a signal to a worker is that worker leaving (checkpoint, restart without it), not a stop
        self.leave_on_signal = restartable and recipe.cluster.elastic
        self.run_dir = Path(run_dir)
        self.is_main = collective.rank == 0
        self.parts = build(recipe, collective)
        self.model = self.parts.model
        # the wrapped model (DDP) decides when gradients are all-reduced: no_sync must be entered on it, not on
        # the compiled module around it, or every accumulation micro-step would all-reduce
        # the gradient noise scale: measured on log steps with more than one micro-batch (see _noise_on)
        self.noise = GradientNoiseScale(recipe.track.noise_scale_decay) if recipe.track.noise_scale else None
        # a step of one micro-step per rank reads its local gradient in DDP's comm hook (on nccl a Python hook
        # in place of DDP's built-in one: only registered when some epoch needs it)
        watch = self.noise is not None and 1 in self.parts.plan.epoch_accumulation
        self.wrapped_model, self.optimizer = collective.wrap(self.model, self.parts.optimizer,
                                                             watch_local_gradients=watch)
        self.train_model = torch.compile(self.wrapped_model) if recipe.train.compile else self.wrapped_model
        self.memory_format = torch.channels_last if recipe.train.channels_last else torch.contiguous_format
        self.plan = self.parts.plan
        self.ema = make_weight_average(recipe.train.ema, self.model)
        self.drop_path_ramp = DropPathRamp(self.model) if recipe.model.drop_path_ramp else None
        self.renorm = RenormSchedule(recipe.model.renorm, self.model) if recipe.model.norm == "batch_renorm" else None
        self.paths = PathPerStep.of(self.model, recipe.seed, self.parts.data.image_size)  # a one-shot supernet
        self.clip_params = (clipped_parameters(self.model, recipe.train.clip_mode) if recipe.train.clip_grad
                            else None)
        self.checkpoints = CheckpointDir(self.run_dir / "checkpoints", recipe.train.keep_checkpoints)
        self.on_checkpoint = on_checkpoint
        self.step, self.best_top1, self.skipped_steps, self.bad_images = 0, -1.0, 0, 0
        self.run_id = self._shared_run_id()
        self.resumed_from = self._resume(resume) if resume else None
        self.stop = StopRequests(self.run_dir / STOP_FILE if self.is_main else None)
        self.times = WorkerTimes(collective)
        self.outcomes = StepOutcomes(collective.world_size)
        self.grad_norm: float | None = None
        self.hardware = describe(collective.device, collective.world_size)
        self.macs_per_image = (count_macs(self.model, self.parts.data.channels, self.parts.data.image_size)
                               if self.is_main else 0)  # for the summary, which rank 0 writes

    def _shared_run_id(self) -> str:
        """A fresh id, rank 0's on every rank."""
        raw = torch.tensor(list(uuid.uuid4().bytes[:6]), dtype=torch.uint8, device=self.collective.device)
        if self.collective.world_size > 1:
            self.collective.broadcast(raw, src=0)
        return bytes(raw.cpu().tolist()).hex()

    # ---- resume -------------------------------------------------------------------------------
    def _resume(self, resume: str) -> Path | None:
        """Rank 0 picks and verifies the checkpoint (one read); the others learn which from it and then read it
        once each, unverified: at W ranks that is W + 1 reads of shared storage, not 2W per candidate."""
        path, data, problem = None, None, ""
        if self.is_main:
            if resume == "auto":
                path, data = self.checkpoints.newest_verified() or (None, None)
            else:
                path = Path(resume)
                try:
                    data = read_verified(path)
                except (ValueError, OSError) as e:
                    problem = str(e).removeprefix(f"{path}: ")
        chosen = broadcast_text(f"{'ok' if data else 'error' if problem else 'none'}\n{path}\n{problem}",
                                self.collective)
        status, shared_path, problem = chosen.split("\n", 2)
        if status == "none":
            return None  # --resume auto with nothing to resume: a fresh run
        path = Path(shared_path)
        try:
            if status == "error":
                raise ValueError(problem)
            if data is not None:
                state = load_bytes(data, map_location=self.collective.device)
            else:
                state = load_unverified(path, map_location=self.collective.device)
        except (ValueError, OSError, RuntimeError) as e:
            raise RecipeError(f"{path}: --resume: cannot load checkpoint: {e}") from None
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if "ema" in state:
                self.ema.module.load_state_dict(state["ema"])
            else:
                self.ema.restart_from(self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.parts.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if self.noise is not None and "gradient_noise" in state:
            self.noise.load_state_dict(state["gradient_noise"])
        self.step = self._step_at(state["sampler"]["epoch"], state["sampler"]["offset"], state["step"])
        self.best_top1, self.skipped_steps, self.run_id = state["best_top1"], state["skipped_steps"], state["run_id"]
        return path

    def _step_at(self, epoch: int, offset: int, saved_step: int) -> int:
        """The data position is kept in examples of the epoch, so a run may resume with another world size
        or per-worker batch. If the new global batch does not divide the offset, the position is rounded
        down to a step boundary (fewer than one global batch of the epoch is seen again)."""
        if epoch >= len(self.plan.epoch_steps):
            return self.plan.schedule_steps
        batch = self.plan.global_batch_at(epoch)
        step = self.plan.epoch_start(epoch) + min(offset // batch, self.plan.epoch_steps[epoch])
        if step != saved_step and self.is_main:
            notice(f"bigbatch: the global batch changed since the checkpoint; epoch {epoch}, example {offset} of "
                   f"the epoch -> step {step} (was step {saved_step})")
        return step

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; only tensors and plain types (weights_only loading)."""
        epoch, in_epoch = self.plan.locate(self.step)
        return {
            "format": CHECKPOINT_FORMAT, "run_id": self.run_id, "step": self.step,
            "epoch": epoch, "step_in_epoch": in_epoch,
            "sampler": {"seed": self.recipe.seed, "epoch": epoch,
                        "offset": in_epoch * self.plan.global_batch_at(epoch)},
            "schedule": {"step": self.step, "lr": self.plan.schedule(self.step)},
            "world_size": self.collective.world_size, "global_batch": self.plan.global_batch_at(epoch),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
            **({"gradient_noise": self.noise.state_dict()} if self.noise is not None else {}),
            "scaler": self.parts.scaler.state_dict(), "rng": rng_state(),
            "best_top1": self.best_top1, "skipped_steps": self.skipped_steps,
            "recipe": dataclasses.asdict(self.recipe),
        }

    # ---- one optimizer step -------------------------------------------------------------------
    def _optimizer_step(self, micro_batches: Iterator, lr: float, accum: int, measure: bool = False,
                        noise: bool = False) -> Settled | None:
        """Accumulate over micro-steps (all-reduce only on the last), then step.

        The global loss and any rank's stop request are all-reduced together and kept on the device
        (`self.outcomes`): nothing is read back here, so the host can queue the next step while the device
        works. Only with train.on_nonfinite=skip is the outcome read at once (returned), since skipping a
        step needs its loss before the update. With `measure` (a logging step) the L2 norm of the averaged,
        unscaled gradient goes to `self.grad_norm`. With `noise` (every rank, on a logging step) one micro-batch's
        own gradient is measured too (micro-step 0's, or with one micro-step the local gradient DDP's comm hook
        sees before its all-reduce), its squared norm rides in the step's all-reduce, and rank 0 feeds both
        norms to the gradient noise scale."""
        model, device = self.train_model, self.collective.device
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seed_step(self.recipe.seed, self.step, self.collective.rank)
        if self.renorm is not None:
            self.renorm.at(self.step)
        if self.paths is not None:
            self.paths.at(self.step)
        loss_sum = torch.zeros((), device=device)
        mixup, mix, criterion = self.recipe.train.mixup, None, self.parts.criterion
        if self.parts.soft_criterion is not None and not (mixup.off_epoch and
                                                          self.plan.locate(self.step)[0] >= mixup.off_epoch):
            criterion = self.parts.soft_criterion
        small_sq = None
        for micro in range(accum):
            x, y = next(micro_batches)
            if not len(y):
                raise TrainingFailed(f"step {self.step + 1}: every image of a micro-batch was unreadable")
            x = to_model_input(x, device, self.memory_format, self.parts.data.normalize)
            y = y.to(device, non_blocking=True)
            if criterion is self.parts.soft_criterion:
                mix = mix or draw_mix(mixup, self.recipe.seed, self.step, x.shape[-2], x.shape[-1])
                x, y = mix_batch(x, y, mix, self.parts.data.num_classes, self.recipe.train.label_smoothing)
            sync = contextlib.nullcontext() if micro == accum - 1 else self.collective.no_sync(self.wrapped_model)
            if noise and accum == 1:
                self.collective.begin_local_grad_sq()
            with sync:
                with self.parts.autocast(device):
                    loss = criterion(model(x), y) / accum
                self.parts.scaler.scale(loss).backward()
            if noise and micro == 0:  # the gradient of loss / accum, on the GradScaler's scale
                small_sq = self.collective.local_grad_sq(self.optimizer) * accum ** 2
            loss_sum += loss.detach().float()
        waited = time.perf_counter()
        requested = self.stop.pending() > 0
        leave = requested and self.stop.by_signal and self.leave_on_signal
        flags = [torch.full((), float(flag), device=device) for flag in (requested and not leave, leave)]  # fills
        extra = [small_sq.reshape(())] if small_sq is not None else []
        reduced = self.collective.all_reduce(torch.stack([loss_sum, *flags, *extra]), op="sum")
        self.outcomes.add(self.step + 1, reduced[:3])
        self.times.add_step(time.perf_counter() - waited)
        settled = None
        if self.recipe.train.on_nonfinite == "skip":
            settled = self.outcomes.settle()
            if settled.first_nonfinite() is not None:
                self.optimizer.zero_grad(set_to_none=True)
                return settled
        self.collective.synchronize_gradients(self.optimizer)  # before GradScaler looks for infs in them
        if self.paths is not None:
            self.paths.after_all_reduce()
        if measure or self.clip_params is not None:
            self.parts.scaler.unscale_(self.optimizer)
        if measure:
            self.grad_norm = self._grad_norm()  # before clipping: what the data gave
            if small_sq is not None and self.noise is not None:
                self._measure_noise(reduced[3].item() / self.collective.world_size, accum)
        if self.clip_params is not None:
            clip_gradients(self.clip_params, self.recipe.train.clip_grad, self.recipe.train.clip_mode)
        self.parts.scaler.step(self.optimizer)
        self.parts.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.after_step(self.model, self.step + 1)
        return settled

    def _take_in(self, settled: Settled, window: dict) -> int:
        """Account for settled steps: their losses into the log window, a non-finite one stops the run (or is
        counted as skipped). Returns the signal number of a stop request (0 if none)."""
        for step, loss in settled.losses:
            if math.isfinite(loss):
                window["loss"] += loss
                window["steps"] += 1
            else:
                self._nonfinite(step)
        return int(self.stop.signum or SIGTERM) if settled.stop_requested else 0

    def _grad_norm(self) -> float:
        """Global norm of the unscaled gradient, already averaged over ranks (synchronize_gradients)."""
        grads = gradients(self.optimizer)
        return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0

    def _noise_on(self, accum: int) -> bool:
        """Two batch sizes are needed: a step of one micro-batch (one worker, no accumulation) has only one."""
        return self.noise is not None and self.collective.world_size * accum > 1

    def _measure_noise(self, small_sq_scaled: float, accum: int) -> None:
        """Rank 0: one update of the noise scale from the ranks' mean micro-batch |g|^2 (still on the loss
        scale, which is read before GradScaler.update changes it) and the global |g|^2 (self.grad_norm)."""
        small_sq = small_sq_scaled / self.parts.scaler.get_scale() ** 2
        big_sq = self.grad_norm ** 2
        if math.isfinite(small_sq) and math.isfinite(big_sq):  # an overflowed fp16 step says nothing
            self.noise.update(small_sq, self.plan.per_worker_batch, big_sq, self.plan.global_batch_of_step(self.step))

    def _unreadable(self, bad: Skipped) -> None:
        """A corrupt image: reported by name and skipped, until more than data.max_bad_images on this rank."""
        report_skipped(bad)
        self.bad_images += 1
        if self.bad_images > self.recipe.data.max_bad_images:
            raise TrainingFailed(f"{bad.name}: {self.bad_images} unreadable images on rank {self.collective.rank}, "
                                 f"more than data.max_bad_images={self.recipe.data.max_bad_images}")

    def _nonfinite(self, step: int) -> None:
        """Optimizer step number `step` (1-based) had a non-finite global loss."""
        where = f"step {step} (epoch {self.plan.locate(step - 1)[0]})"
        last = self.checkpoints.latest_valid(report=lambda _: None) if self.is_main else None
        keep = f"; the last good checkpoint is {last}" if last else "; no checkpoint had been written"
        if self.recipe.train.on_nonfinite == "stop":
            raise TrainingFailed(f"non-finite loss at {where}{keep}")
        self.skipped_steps += 1
        if self.skipped_steps > self.recipe.train.max_skipped_steps:
            raise TrainingFailed(f"non-finite loss at {where}: {self.skipped_steps} steps skipped, more than "
                                 f"train.max_skipped_steps={self.recipe.train.max_skipped_steps}{keep}")

    # ---- the run ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to plan.total_steps, evaluating and checkpointing as the recipe says; return the summary."""
        if self.is_main:
            self._start_run_dir()
        self.stop.install()
        try:
            return self._fit()
        except Exception as e:
            if self.is_main and not isinstance(e, Interrupted):
                self._failed(e)
            raise
        finally:
            self.stop.restore()
            if self.is_main:
                self.metrics.close()
                for tracker in self.trackers:
                    tracker.finish()
                self.console.close()

    def _mirror(self, record: dict) -> None:
        for tracker in self.trackers:
            tracker.log(record)

    def _start_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        recipe_yaml = yaml.safe_dump(dataclasses.asdict(self.recipe), sort_keys=False)
        write_atomic(self.run_dir / "recipe.yaml", recipe_yaml)
        resume_step = self.step if self.resumed_from else None
        self.trackers = [WandbTracker(self.recipe.track, self.run_dir, self.run_id, dataclasses.asdict(self.recipe)),
                         TensorBoardTracker(self.recipe.track.tensorboard, self.run_dir, resume_step, recipe_yaml)]
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl", resume_step=resume_step, mirror=self._mirror)
        self.metrics.write({"event": "start", "run_id": self.run_id, "step": self.step,
                            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                            **self.plan.as_dict(), "hardware": self.hardware})
        self.console = Console(self.plan.total_steps, self.step, True, self.recipe.train.progress_bar)
        if line := layout_warning(self.parts.data, self.recipe.data.loader_workers):
            self.console.say(line)
        if self.resumed_from:
            self.console.say(f"bigbatch: resumed from {self.resumed_from} at step {self.step}")

    def _fit(self) -> dict:
        plan, cfg, parts = self.plan, self.recipe.train, self.parts
        start_step, started = self.step, time.perf_counter()
        window = {"loss": 0.0, "steps": 0, "images": 0, "start": time.perf_counter()}
        last_eval: dict = {}
        epoch_started = time.perf_counter()
        stop, leaving = 0, False
        while self.step < plan.total_steps:
            epoch, in_epoch = plan.locate(self.step)
            accum = plan.epoch_accumulation[epoch]
            if self.drop_path_ramp is not None:
                self.drop_path_ramp.set_epoch(epoch, len(plan.epoch_steps))
            order = TrainOrder(seed=self.recipe.seed, num_examples=len(parts.data.train),
                               batch_size=plan.per_worker_batch, world_size=self.collective.world_size,
                               rank=self.collective.rank, accumulation_steps=accum,
                               repeats=self.recipe.data.aug_repeats)
            if hasattr(parts.data.train, "set_epoch"):
                parts.data.train.set_epoch(epoch)
            pin = self.collective.device.type == "cuda"
            if isinstance(parts.data.train, IterableDataset):  # streamed shards: this rank's own stream
                micro_batches = iter(iterate_stream(parts.data.train, epoch, in_epoch * plan.per_worker_batch * accum,
                                                    plan.per_worker_batch, self.recipe.data.loader_workers, pin,
                                                    self._unreadable, self.recipe.data.prefetch_batches, accum))
            else:
                micro_batches = iter(iterate_batches(parts.data.train, order.keyed_micro_batches(epoch, in_epoch),
                                                     self.recipe.data.loader_workers, pin, self._unreadable,
                                                     self.recipe.data.prefetch_batches))
            epoch_end = plan.epoch_start(epoch + 1)
            while self.step < min(epoch_end, plan.total_steps):
                lr = plan.schedule(self.step)
                logging = (self.step + 1) % cfg.log_every_steps == 0 or self.step + 1 == plan.total_steps
                settled = self._optimizer_step(micro_batches, lr, accum, measure=logging and self.is_main,
                                               noise=logging and self._noise_on(accum))
                window["images"] += order.global_batch
                self.step += 1
                checkpoint_due = bool(cfg.checkpoint_every_steps) and self.step % cfg.checkpoint_every_steps == 0
                if settled is None and (logging or checkpoint_due or self.step in (epoch_end, plan.total_steps)):
                    settled = self.outcomes.settle()  # the only host read of the step's outcome
                if settled is not None:
                    stop = self._take_in(settled, window)
                    leaving = settled.leaving
                if logging:
                    workers = self.times.gather() if self.collective.world_size > 1 else {}
                    if self.is_main:
                        self._log_step(window, lr, workers)
                    window = {"loss": 0.0, "steps": 0, "images": 0, "start": time.perf_counter()}
                elif self.is_main:
                    self.console.step(self.step)
                if stop:
                    break
                if checkpoint_due and self.step not in (epoch_end, plan.total_steps):
                    self._save()
            if stop:
                checkpoint = self._save()
                if leaving:
                    raise Preempted(f"signal {stop} to a worker (a node shutting down?): every rank checkpointed at "
                                    f"step {self.step}; the group restarts with the workers Ray can place")
                self._interrupted(stop, checkpoint)
            finished_epoch, done = self.step == epoch_end, self.step == plan.total_steps
            is_best, record = False, {"step": self.step, "epoch": self._epoch_progress()}
            if finished_epoch:
                record["epoch_time_s"] = time.perf_counter() - epoch_started  # training only, since (re)start
            if done or (finished_epoch and cfg.eval_every_epochs and (epoch + 1) % cfg.eval_every_epochs == 0):
                last_eval = self._evaluate()
                record.update(last_eval)
                score = last_eval["top1_ema" if self.recipe.train.ema.best == "ema" else "top1"]
                is_best = score > self.best_top1
                self.best_top1 = max(self.best_top1, score)
            if self.is_main and len(record) > 2:
                self.metrics.write(record)
            if finished_epoch or done:
                self._save(is_best=is_best)
            epoch_started = time.perf_counter()
        return self._finish(last_eval, start_step, time.perf_counter() - started)

    def _epoch_progress(self) -> float:
        epoch, in_epoch = self.plan.locate(self.step)
        if self.step >= self.plan.epoch_start(epoch + 1):
            return float(epoch + 1)
        return epoch + in_epoch / self.plan.epoch_steps[epoch]

    def _log_step(self, window: dict, lr: float, workers: dict) -> None:
        elapsed = time.perf_counter() - window["start"]
        record = {"step": self.step, "epoch": self._epoch_progress(),
                  "loss": window["loss"] / max(1, window["steps"]), "lr": lr,
                  "global_batch": self.plan.global_batch_of_step(self.step),
                  "world_size": self.collective.world_size,
                  "accumulation_steps": self.plan.accumulation_of_step(self.step),
                  "images_per_s": window["images"] / max(elapsed, 1e-9), **workers}
        record["images_per_s_per_worker"] = record["images_per_s"] / self.collective.world_size
        if self.grad_norm is not None:
            record["grad_norm"] = self.grad_norm
            self.grad_norm = None
        if self.noise is not None and self.noise.updates:
            record.update(grad_sq_norm_est=self.noise.grad_sq_norm_est, grad_var_est=self.noise.grad_var_est)
            if math.isfinite(self.noise.b_simple) and self.noise.b_simple > 0:
                record["gradient_noise_scale"] = self.noise.b_simple
        ratios = getattr(self.optimizer, "last_trust_ratios", None)
        if ratios is not None and ratios.numel():
            r = ratios.float().cpu()
            record.update(trust_ratio_min=r.min().item(), trust_ratio_median=r.median().item(),
                          trust_ratio_max=r.max().item())
        self.metrics.write(record)
        self.console.step(self.step, {"loss": record["loss"], "lr": record["lr"], "img/s": record["images_per_s"],
                                      "img/s/worker": record["images_per_s_per_worker"]})

    def _evaluate(self) -> dict:
        """Score the checkpoint's model: rank 0's BatchNorm statistics on every rank first (unsynced BN leaves
        each rank its own; DDP's per-forward broadcast is one batch behind; Horovod has none)."""
        result = self._score(self.model, self.train_model)
        line = f"top1 {result['top1']:.4f} top5 {result['top5']:.4f} val_loss {result['val_loss']:.4f}"
        if self.ema is not None:
            averaged = self._score(self.ema.module, self.ema.module)
            result.update({f"{key}_ema": averaged[key] for key in ("top1", "top5", "val_loss")})
            line += f" top1_ema {averaged['top1']:.4f}"
        if self.is_main:
            self.console.say(f"epoch {self._epoch_progress():.2f} step {self.step}: {line}")
        return result

    def _score(self, model: torch.nn.Module, runnable: torch.nn.Module) -> dict:
        """Evaluate `runnable` (the model, or its compiled form) with rank 0's BatchNorm buffers of `model`."""
        parts = self.parts
        if self.collective.world_size > 1:
            broadcast_buffers(model, self.collective)
        return evaluate(runnable, parts.data.val, self.collective,
                        self.recipe.data.eval_batch_size or self.recipe.data.batch_size,
                        parts.autocast(self.collective.device), self.recipe.data.loader_workers,
                        parts.data.normalize, self.memory_format, self.recipe.data.prefetch_batches,
                        flip=self.recipe.train.eval_flip)

    def _save(self, is_best: bool = False) -> Path | None:
        """Rank 0 writes; every rank waits so nobody runs ahead of a checkpoint being written."""
        path = None
        if self.is_main:
            path = self.checkpoints.save(self.state_dict(), self.step, is_best=is_best)
        if self.on_checkpoint is None:
            self.collective.barrier()
        else:
            self.on_checkpoint(path, {"step": self.step, "epoch": self._epoch_progress()})
        return path

    def _finish(self, last_eval: dict, start_step: int, elapsed: float) -> dict:
        images_per_s = self._images_between(start_step, self.step) / max(elapsed, 1e-9)
        summary = {"status": "finished", "run_id": self.run_id, "step": self.step,
                   "epoch": self._epoch_progress(), "top1": last_eval.get("top1"),
                   "top5": last_eval.get("top5"), "best_top1": self.best_top1,
                   **{key: value for key, value in last_eval.items() if key.endswith("_ema")},
                   "skipped_steps": self.skipped_steps, "elapsed_s": elapsed,
                   "images_per_s": images_per_s,
                   "images_per_s_per_worker": images_per_s / self.collective.world_size,
                   # forward + backward ~ 3 forward passes: comparable across machines and models
                   "model_macs_per_image": self.macs_per_image,
                   "model_macs_per_s": 3 * self.macs_per_image * images_per_s,
                   "world_size": self.collective.world_size,
                   "global_batch": self.plan.global_batch_of_step(self.step),
                   "hardware": self.hardware}
        if self.is_main:
            history = read_history(self.metrics.path)
            summary["resizes"] = resizes(history)
            if noise := summary_entry(history, summary["global_batch"]):
                summary["gradient_noise_scale"] = noise
                self.console.say(f"bigbatch: {noise['advice']}")
            self.metrics.write({"event": "finish", **summary})
            self._write_summary(summary)
        return summary

    def _interrupted(self, signum: int, checkpoint: Path | None) -> None:
        """Record the stop (a Ray driver reads it from summary.json) and raise Interrupted."""
        if self.is_main:
            summary = {"status": "interrupted", "run_id": self.run_id, "step": self.step, "signal": signum,
                       "checkpoint": str(checkpoint)}
            self.metrics.write({"event": "interrupted", **summary})
            self._write_summary(summary)
        raise Interrupted(signum, checkpoint)

    def _failed(self, error: BaseException) -> None:
        """Record why the run died (`bigbatch runs` shows it failed), or, when Ray will restart the group, why
        this attempt did (status "restarting"; the driver records "failed" if Ray gives up): a lost worker, not an
        error that would recur; the error itself still propagates."""
        message = str(error).splitlines()[0] if str(error) else error.__class__.__name__
        again = isinstance(error, (RecipeError, TrainingFailed))  # bad input, non-finite loss: it would fail again
        event, status = ("attempt_failed", "restarting") if self.restartable and not again else ("failed", "failed")
        summary = {"status": status, "run_id": self.run_id, "step": self.step, "error": message}
        with contextlib.suppress(Exception):  # the run directory itself may be what failed
            self.metrics.write({"event": event, **summary})
            self._write_summary(summary)

    def _write_summary(self, summary: dict) -> None:
        write_json_atomic(self.run_dir / "summary.json", summary)

    def _images_between(self, first: int, last: int) -> int:
        """Training examples consumed by steps [first, last): epochs may differ in global batch."""
        plan, total = self.plan, 0
        for epoch in range(len(plan.epoch_steps)):
            lo, hi = max(first, plan.epoch_start(epoch)), min(last, plan.epoch_start(epoch + 1))
            total += max(0, hi - lo) * plan.global_batch_at(epoch)
        return total
