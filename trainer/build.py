"""Assemble what a run needs from a recipe: device, data, model, optimizer, plan."""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from trainer.collective import Collective
from trainer.data import DataSplits, TrainOrder, load_data
from trainer.errors import RecipeError
from trainer.models import create_model
from trainer.recipe.plan import Plan, make_plan
from trainer.recipe.schema import Recipe

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
    order: TrainOrder
    plan: Plan
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    precision: str

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def build(recipe: Recipe, collective: Collective) -> Parts:
    """Everything is built the same way on every rank: same seed, same initial weights."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    data = load_data(recipe.data, recipe.seed)
    order = TrainOrder(seed=recipe.seed, num_examples=len(data.train), batch_size=recipe.data.batch_size,
                       world_size=collective.world_size, rank=collective.rank,
                       accumulation_steps=recipe.train.accumulation_steps)
    plan = make_plan(recipe, len(data.train), collective.world_size)
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, data.num_classes, data.channels, data.image_size,
                         **recipe.model.kwargs).to(collective.device)
    opt = recipe.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=plan.scaled_lr, momentum=opt.momentum,
                                nesterov=opt.nesterov, weight_decay=opt.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.train.label_smoothing)
    scaler = torch.amp.GradScaler(collective.device.type, enabled=recipe.train.precision == "fp16")
    return Parts(data, order, plan, model, optimizer, criterion, scaler, recipe.train.precision)
