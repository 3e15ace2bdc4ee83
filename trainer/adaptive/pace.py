"""How far a run has come, what lr its next step takes and when it ends.

`FixedPace` is the recipe's plan: step t takes the schedule's lr at t, and the run ends at the plan's last step.

`AdaptivePace` (train.batch_policy: adaptive) lets the run choose its global batch. The lr of a step at batch G
is AdaScale's (Johnson et al. 2020): r x lr_ref(tau), where r is the gain of G over the recipe's batch G0 and
tau the scale-invariant progress, tau += r per step, in steps of G0 (so warmup, decay and the end of the run
keep the recipe's meaning: the run ends when tau reaches the recipe's step budget at G0, train.max_steps
included). At log steps, at most every train.adaptive.every_steps, it predicts the goodput of every candidate
batch (goodput.py) and switches when one beats the current batch by train.adaptive.min_improvement; the plan
is then laid out again from that step (recipe/plan.py `adaptive_plan`), so the data continue where they stood.

Every rank holds the same state and decides alike, with no extra collective: the noise-scale averages come
from the step's all-reduced values (every rank measures them), the step times from the all-reduced worker
times (or the declared model of train.adaptive.assume_step_s / assume_example_s), and the state travels in the
checkpoint ("adaptive_batch"), so a resume continues exactly.

The noise scale steered on is the lower bound of GradientNoiseScale.noise_scale_lower (an upper bound on |G|^2
two standard errors above its average), never the bare ratio: a |G|^2 average near zero is noise, and its ratio
would call for the largest batch and lr. Until train.adaptive.min_readings averages exist the batch stays G0.
"""

import math
import time

from bigbatch.optim.adascale import adascale_gain
from bigbatch.trainer.adaptive.choice import BatchChoice, choose_batch
from bigbatch.trainer.adaptive.goodput import StepReading, StepTimeModel, fit_step_times, goodput
from bigbatch.trainer.recipe.plan import Plan, adaptive_batches, adaptive_plan
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.step.hooks import Hook
from bigbatch.trainer.step.noise_scale import GradientNoiseScale

KEEP_READINGS = 200  # log windows of step times kept (in the checkpoint too): the newest ones


class FixedPace:
    """The plan's schedule by step; the run ends at plan.total_steps."""

    adaptive = False

    def __init__(self, plan: Plan):
        self.plan = plan

    def lr(self, step: int) -> float:
        return self.plan.schedule(step)

    def is_last(self, step: int) -> bool:
        return step + 1 >= self.plan.total_steps

    def done(self, step: int) -> bool:
        return step >= self.plan.total_steps

    @property
    def budget(self) -> int:
        return self.plan.total_steps

    def look(self, step: int, workers: dict) -> dict | None:
        """A fixed batch never changes."""
        return None


class AdaptivePace(Hook):
    """The adaptive batch's state and decisions. A hook for its checkpoint entry and its step records; the run
    loop asks it for the lr (`lr`), whether the run is done, and at log steps whether to change batch (`look`)."""

    state_key = "adaptive_batch"
    adaptive = True

    def __init__(self, recipe: Recipe, base: Plan, noise: GradientNoiseScale, comm_seconds=lambda: 0.0):
        self.recipe, self.base, self.noise, self.comm_seconds = recipe, base, noise, comm_seconds
        self.settings, self.world, self.reference = recipe.train.adaptive, base.world_size, recipe.global_batch
        self.schedule_budget = base.total_steps  # steps of G0; train.max_steps included
        self.candidates = adaptive_batches(recipe, self.world, base.train_examples)
        self.progress, self.gain, self.last_look, self.resized_from = 0.0, 1.0, 0, 0
        self.changes: list[tuple[int, int]] = [(0, self.reference)]
        self.readings: list[StepReading] = []
        self.predicted: dict[int, float] = {}
        self._window_start: tuple[float, int, float] | None = None
        self.plan = self._layout()

    # ---- the plan and the lr ------------------------------------------------------------------
    def _layout(self) -> Plan:
        """The plan for the changes so far, laid out over as many epochs as the budget can take: a step at
        batch G advances tau by at least min(1, G / G0), so the budget reads at most budget x max(G, G0)
        examples."""
        most = max(self.candidates[-1], self.reference)
        epochs = math.ceil(self.schedule_budget * most / (self.base.train_examples - most + 1)) + 1
        return adaptive_plan(self.recipe, self.base, self.changes, epochs)

    @property
    def batch(self) -> int:
        return self.changes[-1][1]

    @property
    def budget(self) -> int:
        return self.schedule_budget

    def steering(self) -> bool:
        return self.noise.updates >= self.settings.min_readings

    def noise_scale(self) -> float:
        return self.noise.noise_scale_lower() if self.steering() else math.nan

    def lr(self, step: int) -> float:
        """r x lr_ref(tau) for the next step; r is kept for `after_step`, which advances tau by it."""
        self.gain = adascale_gain(self.noise_scale(), self.batch, self.reference)
        return self.gain * self.base.schedule(self.progress)

    def is_last(self, step: int) -> bool:
        return self.progress + self.gain >= self.schedule_budget or step + 1 >= self.plan.total_steps

    def done(self, step: int) -> bool:
        return self.progress >= self.schedule_budget or step >= self.plan.total_steps

    def after_step(self, ctx) -> None:
        self.progress += self.gain
        if ctx.logging:
            ctx.record.update(adascale_gain=self.gain, progress=self.progress)
            if self.batch in self.predicted:
                ctx.record["predicted_goodput"] = self.predicted[self.batch]

    # ---- the decision ---------------------------------------------------------------------------
    def look(self, step: int, workers: dict) -> dict | None:
        """At a log step (every rank, the same step): note the window's step time, and every every_steps decide
        the batch. Returns the change as a record (and lays out the plan again), or None; after a resize the
        record of the decision, changed or not ("from" == "to"), so the records say what the resize did."""
        self._read_window(step, workers)
        if step - self.last_look < self.settings.every_steps and not self.resized_from:
            return None
        model = self.step_time_model()
        scale = self.noise_scale()
        if model is None or math.isnan(scale):
            return None
        self.last_look = step
        choice = choose_batch(self.batch, self.candidates,
                              lambda b: goodput(b, self.world, scale, self.reference, model),
                              self.settings.min_improvement)
        self.predicted = choice.predicted
        cause, self.resized_from = self._cause(), 0
        if choice.batch == self.batch and not cause:
            return None
        return self._change(step, choice, scale, model, cause)

    def _cause(self) -> str:
        return f"after a resize ({self.resized_from} -> {self.world} workers): " if self.resized_from else ""

    def _change(self, step: int, choice: BatchChoice, scale: float, model: StepTimeModel, cause: str) -> dict:
        before = self.batch
        if choice.batch != before:
            self.changes.append((step, choice.batch))
            self.plan = self._layout()
            self._window_start = None  # the first window at a new batch holds its start-up: not a reading
        return {"event": "batch_change", "step": step, "from": before, "to": choice.batch,
                "why": cause + choice.reason, "noise_scale_lower": scale, "progress": self.progress,
                "step_time_model": {"fixed_s": model.fixed_s, "per_example_s": model.per_example_s,
                                    "source": model.source},
                "predicted_goodput": {str(b): v for b, v in choice.predicted.items()}}

    def step_time_model(self) -> StepTimeModel | None:
        assumed_step, assumed_example = self.settings.assume_step_s, self.settings.assume_example_s
        if assumed_step or assumed_example:
            return StepTimeModel(assumed_step, assumed_example, "assumed")
        return fit_step_times(self.readings, self.world)

    def _read_window(self, step: int, workers: dict) -> None:
        """The group's mean step time since the last log step: the slowest rank's (all-reduced, so every rank
        reads the same) or, on one worker, this process's clock. The first window after a (re)start or a
        change is skipped: it holds the loaders' start."""
        now, comm = time.perf_counter(), self.comm_seconds()
        start, self._window_start = self._window_start, (now, step, comm)
        if start is None or step <= start[1]:
            return
        if workers:
            step_s, comm_s = max(workers["worker_step_s"]), max(workers["worker_comm_s"])
        else:
            step_s, comm_s = (now - start[0]) / (step - start[1]), (comm - start[2]) / (step - start[1])
        self.readings = [*self.readings, StepReading(self.world, self.batch, step_s, comm_s)][-KEEP_READINGS:]

    # ---- the checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"progress": self.progress, "changes": [list(c) for c in self.changes], "last_look": self.last_look,
                "world": self.world, "predicted": {str(b): v for b, v in self.predicted.items()},
                "readings": [[r.world, r.batch, r.step_s, r.comm_s] for r in self.readings]}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            return
        self.progress, self.last_look = state["progress"], state["last_look"]
        self.changes = [(int(s), int(b)) for s, b in state["changes"]]
        self.predicted = {int(b): v for b, v in state["predicted"].items()}
        self.readings = [StepReading(int(w), int(b), t, c) for w, b, t, c in state["readings"]]
        self.resized_from = state["world"] if state["world"] != self.world else 0
        self.plan = self._layout()
