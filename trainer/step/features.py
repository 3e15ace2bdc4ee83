"""The recipe's features as the step's hooks, in the order their effects must happen.

before the step: Batch Renorm's limits, the supernet's path, mixup's criterion and draw (after the step's seed);
after the all-reduce: the off-path gradients dropped, then the gradient norm and the noise scale measured
(before clipping: what the data gave), then clipping; after the step: the weight average, then the records.
"""

import torch.nn as nn

from bigbatch.trainer.adaptive.pace import AdaptivePace
from bigbatch.trainer.distributed.collective import Collective
from bigbatch.trainer.models.norms import RenormSchedule
from bigbatch.trainer.recipe.plan import Plan
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.step.clipping import ClipGradients
from bigbatch.trainer.step.drop_path_ramp import DropPathRamp
from bigbatch.trainer.step.ema import make_weight_average
from bigbatch.trainer.step.hooks import Hooks
from bigbatch.trainer.step.mixup import MixBatches
from bigbatch.trainer.step.noise_scale import MeasureNoiseScale
from bigbatch.trainer.step.probes import LogGradNorm, LogTrustRatios
from bigbatch.trainer.step.renorm_ramp import RampRenorm
from bigbatch.trainer.step.supernet_path import PathPerStep


def make_hooks(recipe: Recipe, model: nn.Module, plan: Plan, collective: Collective, image_size: int,
               num_classes: int, soft_criterion: nn.Module | None) -> Hooks:
    """`model` is the unwrapped module (what the hooks change, average and clip)."""
    train = recipe.train
    adaptive = train.batch_policy == "adaptive"
    measure_noise = recipe.track.noise_scale or adaptive  # the adaptive batch steers on the noise scale
    noise = MeasureNoiseScale(recipe.track.noise_scale_decay, collective, plan.per_worker_batch,
                              plan.global_batch_of_step, every_rank=adaptive) if measure_noise else None
    return Hooks([
        DropPathRamp(model) if recipe.model.drop_path_ramp else None,
        RampRenorm(RenormSchedule(recipe.model.renorm, model)) if recipe.model.norm == "batch_renorm" else None,
        PathPerStep.of(model, recipe.seed, image_size),
        MixBatches(train.mixup, recipe.seed, num_classes, train.label_smoothing, soft_criterion)
        if soft_criterion is not None else None,
        LogGradNorm(collective.rank),
        noise,
        ClipGradients(model, train.clip_grad, train.clip_mode) if train.clip_grad else None,
        make_weight_average(train.ema, model),
        LogTrustRatios(collective.rank),
        AdaptivePace(recipe, plan, noise.noise, lambda: getattr(collective, "comm_seconds", 0.0))
        if adaptive else None,  # last: it advances the progress by the gain the step took
    ])
