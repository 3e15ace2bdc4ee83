"""train_step on its own: no Trainer, no run directory, no recipe. One step of accumulated micro-batches is
plain SGD on the mean loss of the whole global batch, and hooks see the five events in order."""

import contextlib

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.distributed.worker_times import WorkerTimes
from bigbatch.trainer.step import Hook, Hooks, Learner, StepContext, train_step
from bigbatch.trainer.step.ema import WeightAverage
from bigbatch.trainer.step.noise_scale import MeasureNoiseScale
from bigbatch.trainer.step.outcomes import StepOutcomes


def learner_of(model: nn.Module, lr: float = 0.1) -> Learner:
    collective = LocalCollective()
    return Learner(model, model, torch.optim.SGD(model.parameters(), lr=lr), torch.amp.GradScaler("cpu", enabled=False),
                   collective, contextlib.nullcontext, lambda batch, step: batch, StepOutcomes(1),
                   WorkerTimes(collective), seed=0)


def data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def context(accumulation: int, **kw) -> StepContext:
    return StepContext(step=0, epoch=0, accumulation=accumulation, lr=0.1, logging=False,
                       criterion=nn.CrossEntropyLoss(), **kw)


@pytest.mark.parametrize("accumulation", [1, 2, 4])
def test_one_step_is_sgd_on_the_mean_loss_of_the_global_batch(accumulation):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    reference = nn.Linear(5, 3)
    reference.load_state_dict(model.state_dict())
    x, y = data()
    # the definition: w <- w - lr * d/dw (1/G) sum_i loss_i over the G = 8 examples of the step
    nn.functional.cross_entropy(reference(x), y).backward()
    expected = {name: p.detach() - 0.1 * p.grad for name, p in reference.named_parameters()}

    learner = learner_of(model)
    micro = zip(x.chunk(accumulation), y.chunk(accumulation), strict=True)
    train_step(learner, context(accumulation), iter(micro), Hooks([]))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-6, atol=1e-6)
    settled = learner.outcomes.settle()
    loss = nn.functional.cross_entropy(reference(x), y).item()
    assert settled.losses == [(1, pytest.approx(loss, rel=1e-5))]


class Recorder(Hook):
    """Records the events; adds one float to the all-reduce and swaps the criterion for a doubled loss."""

    def __init__(self):
        self.events = []

    def on_epoch_start(self, epoch, epochs):
        self.events.append(("epoch", epoch, epochs))

    def before_step(self, ctx):
        self.events.append(("before", ctx.step))
        ctx.criterion = lambda out, y: 2 * nn.functional.cross_entropy(out, y)

    def after_backward(self, ctx, micro):
        self.events.append(("backward", micro))
        if micro == 0:
            ctx.extras.append(torch.tensor(3.0))

    def after_all_reduce(self, ctx):
        self.events.append(("all_reduce", ctx.reduced_extras.tolist()))

    def after_step(self, ctx):
        self.events.append(("after", ctx.step))
        ctx.record["seen"] = True


def test_hooks_see_five_events_in_order_and_shape_the_step():
    torch.manual_seed(0)
    model, reference = nn.Linear(5, 3), nn.Linear(5, 3)
    reference.load_state_dict(model.state_dict())
    x, y = data()
    (2 * nn.functional.cross_entropy(reference(x), y)).backward()  # the swapped criterion's gradient
    expected = reference.weight.detach() - 0.1 * reference.weight.grad
    recorder = Recorder()
    hooks = Hooks([recorder, None])  # None: a feature that is off
    hooks.on_epoch_start(2, 5)
    ctx = context(2)
    train_step(learner_of(model), ctx, iter(zip(x.chunk(2), y.chunk(2), strict=True)), hooks)
    assert recorder.events == [("epoch", 2, 5), ("before", 0), ("backward", 0), ("backward", 1),
                               ("all_reduce", [3.0]), ("after", 0)]
    assert ctx.record == {"seen": True}
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-6, atol=1e-6)


def test_feature_state_goes_under_its_checkpoint_key_and_a_missing_entry_restarts_it():
    from bigbatch.trainer.recipe.schema import EmaConfig

    model = nn.Linear(5, 3)
    noise = MeasureNoiseScale(0.9, LocalCollective(), 4, lambda step: 8)
    noise.noise.update(2.0, 4, 1.0, 8)
    ema = WeightAverage(EmaConfig(decay=0.5), model)
    hooks = Hooks([noise, ema, Recorder()])
    state = hooks.state_dict()
    assert set(state) == {"gradient_noise", "ema"} and state["gradient_noise"]["updates"] == 1
    with torch.no_grad():
        model.weight.add_(1.0)
    fresh_noise = MeasureNoiseScale(0.9, LocalCollective(), 4, lambda step: 8)
    fresh = Hooks([fresh_noise, WeightAverage(EmaConfig(decay=0.5), nn.Linear(5, 3))])
    fresh.load_state_dict(state)
    assert fresh_noise.noise.state_dict() == noise.noise.state_dict()
    restarted = Hooks([ema])
    restarted.load_state_dict({})  # a checkpoint from before EMA was switched on: the average restarts here
    torch.testing.assert_close(ema.module.weight, model.weight)
