"""Assemble what a run needs from a recipe: device, data, model, optimizer, plan."""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from bigbatch import optim
from bigbatch.optim import split_param_groups
from bigbatch.trainer.data import DataSplits, load_data
from bigbatch.trainer.distributed.collective import Collective, broadcast_text
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.bilinear import with_bilinear_head
from bigbatch.trainer.models.norms import replace_batchnorm
from bigbatch.trainer.recipe.plan import Plan, make_plan
from bigbatch.trainer.recipe.schema import OptimConfig, Recipe

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a recipe error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Parts:
    data: DataSplits
    plan: Plan
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    precision: str
    soft_criterion: nn.Module | None = None  # for mixed (soft) targets: train.mixup

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


class AuxiliaryLoss(nn.Module):
    """The loss of a model's output: its logits, or (logits, auxiliary logits) from a model with an auxiliary
    head in training (DARTS, NASNet, Inception: loss + weight x auxiliary loss, Szegedy et al. 2015)."""

    def __init__(self, loss: nn.Module, weight: float):
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, output: torch.Tensor | tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, tuple):
            logits, aux = output
            return self.loss(logits, target) + self.weight * self.loss(aux, target)
        return self.loss(output, target)


def make_optimizer(opt: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer over (adapted, decayed) and (excluded) parameter groups."""
    groups = split_param_groups(model, opt.weight_decay, opt.exclude_norm_and_bias, opt.exclude_patterns)
    if opt.name == "sgd":
        return optim.SGD(groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                         weight_decay=opt.weight_decay, momentum_correction=opt.momentum_correction)
    if opt.name == "lars":
        return optim.LARS(groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                          weight_decay=opt.weight_decay, trust_coefficient=opt.lars.trust_coefficient,
                          eps=opt.lars.eps, trust_clip=opt.lars.trust_clip)
    if opt.name == "lamb":
        return optim.LAMB(groups, lr=lr, betas=tuple(opt.lamb.betas), eps=opt.lamb.eps,
                          weight_decay=opt.weight_decay, bias_correction=opt.lamb.bias_correction)
    if opt.name == "rmsproptf":
        from timm.optim import RMSpropTF

        # TensorFlow's form: eps inside the square root, the mean square starting at 1, the lr inside the momentum
        # buffer (so a changing lr needs no momentum correction), L2 weight decay on the gradient
        return RMSpropTF(groups, lr=lr, alpha=opt.rmsprop.alpha, eps=opt.rmsprop.eps, momentum=opt.momentum,
                         weight_decay=opt.weight_decay)
    raise RecipeError(f"optim.name: unknown optimizer {opt.name!r}")


def build_model(recipe: Recipe, data: DataSplits, device: torch.device) -> nn.Module:
    """The recipe's network for this data, with its head and normalization, seeded by the recipe (the same
    initial weights on every rank and in every process that builds it)."""
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, data.num_classes, data.channels, data.image_size,
                         zero_init_residual=recipe.model.zero_init_residual,
                         drop_path_rate=recipe.model.drop_path_rate, **recipe.model.kwargs)
    if recipe.model.head == "bilinear":
        model = with_bilinear_head(model, recipe.model.name, data.num_classes, data.channels, data.image_size,
                                   recipe.model.head_channels, recipe.model.head_isqrt_iters)
    model = replace_batchnorm(model, recipe.model).to(device)
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build(recipe: Recipe, collective: Collective) -> Parts:
    """Everything is built the same way on every rank: same seed, same initial weights."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    if collective.device.type == "cuda":
        torch.backends.cudnn.benchmark = recipe.train.cudnn_benchmark
    data = load_data(recipe.data, recipe.seed, collective.world_size, collective.rank,
                     share=lambda text: broadcast_text(text, collective))
    plan = make_plan(recipe, len(data.train), collective.world_size)
    model = build_model(recipe, data, collective.device)
    if recipe.bn.sync != "none" and collective.world_size > 1:
        group = collective if recipe.bn.sync == "all" else collective.subgroup(recipe.bn.group_size)
        model = group.sync_batchnorm(model)
    optimizer = make_optimizer(recipe.optim, model, plan.scaled_lr)
    criterion = AuxiliaryLoss(nn.CrossEntropyLoss(label_smoothing=recipe.train.label_smoothing),
                              recipe.train.auxiliary_weight)
    soft = None
    if recipe.train.mixup.alpha or recipe.train.mixup.cutmix_alpha:
        from timm.loss import SoftTargetCrossEntropy

        soft = AuxiliaryLoss(SoftTargetCrossEntropy(), recipe.train.auxiliary_weight)
    scaler = torch.amp.GradScaler(collective.device.type, enabled=recipe.train.precision == "fp16")
    return Parts(data, plan, model, optimizer, criterion, scaler, recipe.train.precision, soft)
