"""Rank 0's written record of a run: recipe.yaml, metrics.jsonl (mirrored to wandb and TensorBoard), the
console, summary.json, and the failure records a restart or `bigbatch runs` reads. The run loop calls these;
other ranks hold a RunRecords that writes nothing (`writes=False`), so the loop never asks who it is."""

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bigbatch.trainer.atomic import write_atomic, write_json_atomic
from bigbatch.trainer.errors import RecipeError, TrainingFailed
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.records.batch_advice import summary_entry
from bigbatch.trainer.records.history import read_history, resizes
from bigbatch.trainer.records.tensorboard_tracker import TensorBoardTracker
from bigbatch.trainer.records.track import Console, MetricsFile
from bigbatch.trainer.records.wandb_tracker import WandbTracker


@dataclass
class LogWindow:
    """The steps since the last log step: their settled losses and the images they took."""

    loss_sum: float = 0.0
    steps: int = 0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.steps)

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)


def throughput(images_per_s: float, world_size: int, macs_per_image: int) -> dict:
    """The summary's speed figures; forward + backward ~ 3 forward passes, so MAC/s compare across machines and
    models."""
    return {"images_per_s": images_per_s, "images_per_s_per_worker": images_per_s / world_size,
            "model_macs_per_image": macs_per_image, "model_macs_per_s": 3 * macs_per_image * images_per_s,
            "world_size": world_size}


class RunRecords:
    def __init__(self, recipe: Recipe, run_dir: Path, run_id: str, writes: bool):
        self.recipe, self.run_dir, self.run_id, self.writes = recipe, Path(run_dir), run_id, writes
        self.metrics: MetricsFile | None = None
        self.trackers: list = []
        self.console = Console(0, 0, False, False)

    def open(self, step: int, total_steps: int, resumed_from: Path | None, start: dict,
             warning: str | None) -> None:
        """The run directory, the recipe as run, the trackers and the start event; a resume first drops
        metrics lines past its step (and a half-written last one)."""
        if not self.writes:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        recipe_yaml = yaml.safe_dump(dataclasses.asdict(self.recipe), sort_keys=False)
        write_atomic(self.run_dir / "recipe.yaml", recipe_yaml)
        resume_step = step if resumed_from else None
        self.trackers = [WandbTracker(self.recipe.track, self.run_dir, self.run_id, dataclasses.asdict(self.recipe)),
                         TensorBoardTracker(self.recipe.track.tensorboard, self.run_dir, resume_step, recipe_yaml)]
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl", resume_step=resume_step, mirror=self._mirror)
        self.write({"event": "start", "run_id": self.run_id, "step": step,
                    "resumed_from": str(resumed_from) if resumed_from else None, **start})
        self.console = Console(total_steps, step, True, self.recipe.train.progress_bar)
        if warning:
            self.say(warning)
        if resumed_from:
            self.say(f"bigbatch: resumed from {resumed_from} at step {step}")
            self._mark_resize(step)

    def _mark_resize(self, step: int) -> None:
        """A start on another world size than the last one: a resize event for wandb and TensorBoard (the
        summary's `resizes` and `bigbatch report` read it from metrics.jsonl)."""
        try:
            changes = resizes(read_history(self.metrics.path))
        except (RecipeError, OSError):  # a damaged metrics line never blocks a resume; the trackers go without
            return
        if changes and changes[-1]["step"] == step:
            change = changes[-1]
            for tracker in self.trackers:
                tracker.mark(step, "resize", f"{change['from']} -> {change['to']} workers ({change['why']})",
                             change["to"])

    def _mirror(self, record: dict) -> None:
        for tracker in self.trackers:
            tracker.log(record)

    def write(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def say(self, message: str) -> None:
        self.console.say(message)

    def progress(self, step: int, fields: dict | None = None) -> None:
        self.console.step(step, fields)

    def log_step(self, record: dict) -> None:
        self.write(record)
        fields = {"loss": record["loss"], "lr": record["lr"], "img/s": record["images_per_s"],
                  "img/s/worker": record["images_per_s_per_worker"]}
        if "adascale_gain" in record:  # an adaptive batch: which batch, and its gain over the recipe's
            fields.update(batch=record["global_batch"], gain=record["adascale_gain"])
        self.progress(record["step"], fields)

    def batch_changed(self, change: dict) -> None:
        """The adaptive batch changed (trainer/adaptive/pace.py): its event line with the predicted goodputs
        that justified it, a console line, and a mark on the trackers' batch curve."""
        self.write(change)
        what = f"{change['from']} -> {change['to']}" if change["to"] != change["from"] else f"kept at {change['to']}"
        line = f"step {change['step']}: global batch {what} ({change['why']})"
        self.say(f"bigbatch: {line}")
        for tracker in self.trackers:
            tracker.mark(change["step"], "batch_change", line, change["to"])

    def finished(self, summary: dict) -> dict:
        """The finish event and summary.json, with what the history says: the resizes and the batch advice."""
        if not self.writes:
            return summary
        history = read_history(self.metrics.path)
        summary["resizes"] = resizes(history)
        if noise := summary_entry(history, summary["global_batch"]):
            summary["gradient_noise_scale"] = noise
            self.say(f"bigbatch: {noise['advice']}")
        self.write({"event": "finish", **summary})
        self._summary(summary)
        return summary

    def interrupted(self, step: int, signum: int, checkpoint: Path | None) -> None:
        """A stop by signal or STOP file (a Ray driver reads it from summary.json, which lists the resizes so
        far as a finished run's does)."""
        summary = {"status": "interrupted", "run_id": self.run_id, "step": step, "signal": signum,
                   "checkpoint": str(checkpoint)}
        self.write({"event": "interrupted", **summary})
        if self.writes:
            self._summary({**summary, "resizes": resizes(read_history(self.metrics.path))})

    def failed(self, step: int, error: BaseException, restartable: bool) -> None:
        """Why the run died (`bigbatch runs` shows it failed), or, when Ray will restart the group, why this
        attempt did (status "restarting"; the driver records "failed" if Ray gives up): a lost worker, not an
        error that would recur."""
        message = str(error).splitlines()[0] if str(error) else error.__class__.__name__
        again = isinstance(error, (RecipeError, TrainingFailed))  # bad input, non-finite loss: it would fail again
        event, status = ("attempt_failed", "restarting") if restartable and not again else ("failed", "failed")
        summary = {"status": status, "run_id": self.run_id, "step": step, "error": message}
        with contextlib.suppress(Exception):  # the run directory itself may be what failed
            self.write({"event": event, **summary})
            self._summary(summary)

    def _summary(self, summary: dict) -> None:
        if self.writes:
            write_json_atomic(self.run_dir / "summary.json", summary)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        for tracker in self.trackers:
            tracker.finish()
        self.console.close()
