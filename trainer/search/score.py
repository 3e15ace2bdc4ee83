"""Score a path of a trained one-shot supernet, as Guo et al. 2019 do before every candidate's inference:
recalibrate every BatchNorm's statistics on training images for that path (the supernet's running statistics
mix all paths), then measure top-1 on `data.holdout`, a split of the training set the supernet never trained
on (never the test set). The recalibration images are the same for every candidate: the first
`search.recalibrate_images` of the training set's epoch-0 order (training crops for image folders).
"""

from pathlib import Path

import torch
import torch.nn as nn

from bigbatch.trainer.data import iterate_batches, load_data
from bigbatch.trainer.data.base import DataSplits
from bigbatch.trainer.data.loader import to_model_input
from bigbatch.trainer.data.order import epoch_permutation
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe.schema import Recipe
from bigbatch.trainer.run.build import build_model
from bigbatch.trainer.run.checkpoint import load_checkpoint
from bigbatch.trainer.run.evaluate import evaluate


def recalibrate_batchnorm(model: nn.Module, batches, normalize=None) -> None:
    """Running statistics of every BatchNorm = the plain average over `batches` (momentum None), in train
    mode without gradients; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        for images, _ in batches:
            model(to_model_input(images, device, torch.contiguous_format, normalize))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


class CandidateScorer:
    """Holds the supernet (from `checkpoint`) and the data; `score(choices)` is the held-out top-1 of that path."""

    def __init__(self, recipe: Recipe, checkpoint: Path, device: str = "cpu"):
        self.recipe, self.device = recipe, torch.device(device)
        self.data = load_data(recipe.data, recipe.seed)
        if self.data.holdout is None:
            raise RecipeError("data.holdout: a search scores candidates on training examples set apart; set it "
                              "(e.g. 10 percent of the training set)")
        self.model = load_trained(recipe, self.data, checkpoint, self.device)
        count = min(recipe.search.recalibrate_images, len(self.data.train))
        order = epoch_permutation(recipe.seed, 0, len(self.data.train))[:count]
        self.recalibration = list(order.split(recipe.data.eval_batch_size or recipe.data.batch_size))

    def score(self, choices: list[int]) -> float:
        self.model.set_path(list(choices))
        data = self.data
        recalibrate_batchnorm(self.model, iterate_batches(data.train, self.recalibration), data.normalize)
        return holdout_top1(self.model, data, self.recipe, self.device)


def load_trained(recipe: Recipe, data: DataSplits, checkpoint: Path, device: torch.device) -> nn.Module:
    """The recipe's model with the weights of a verified checkpoint."""
    model = build_model(recipe, data, device)
    model.load_state_dict(load_checkpoint(Path(checkpoint), device)["model"])
    return model


def holdout_top1(model: nn.Module, data: DataSplits, recipe: Recipe, device: torch.device) -> float:
    """Top-1 of `model` (as it is: eval mode, its own BatchNorm statistics) on `data.holdout`."""
    batch = recipe.data.eval_batch_size or recipe.data.batch_size
    return evaluate(model, data.holdout, LocalCollective(device), batch, normalize=data.normalize)["top1"]


def standalone_holdout_top1(recipe: Recipe, checkpoint: Path, device: str = "cpu") -> float:
    """Held-out top-1 of a network trained alone (a `search.verify` run) from its checkpoint."""
    data = load_data(recipe.data, recipe.seed)
    return holdout_top1(load_trained(recipe, data, checkpoint, torch.device(device)), data, recipe,
                        torch.device(device))
