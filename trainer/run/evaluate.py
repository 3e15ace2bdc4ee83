"""Exact evaluation: top-1 / top-5 over every held-out example exactly once across ranks."""

import contextlib
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.utils.data import Dataset, IterableDataset

from bigbatch.trainer.data import eval_shard, iterate_batches
from bigbatch.trainer.data.loader import Skipped, iterate_stream, report_skipped, to_model_input
from bigbatch.trainer.distributed.collective import Collective, broadcast_buffers

if TYPE_CHECKING:
    from bigbatch.trainer.recipe.schema import Recipe
    from bigbatch.trainer.run.build import Parts


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, collective: Collective, batch_size: int,
             autocast: contextlib.AbstractContextManager | None = None, loader_workers: int = 0,
             normalize=None, memory_format: torch.memory_format = torch.contiguous_format,
             prefetch: int = 2, flip: bool = False) -> dict:
    """Each rank scores a disjoint contiguous shard; the counts (not averages) are summed. Unreadable images
    are reported and left out (`skipped`); every other example counts exactly once. With `flip` (test-time
    augmentation) an image's class probabilities are the mean of its own and its mirror image's."""
    device = collective.device
    totals = torch.zeros(5, dtype=torch.float64, device=device)  # top1, top5 hits, loss sum, count, skipped

    def skip(bad: Skipped) -> None:
        report_skipped(bad)
        totals[4] += 1

    was_training = model.training
    model.eval()
    try:
        if isinstance(dataset, IterableDataset):  # streamed shards: each validation shard on one rank
            batches = iterate_stream(dataset, 0, 0, batch_size, loader_workers, on_skip=skip, prefetch=prefetch)
        else:
            shard = eval_shard(len(dataset), collective.world_size, collective.rank)
            batches = iterate_batches(dataset, torch.arange(shard.start, shard.stop).split(batch_size),
                                      loader_workers, on_skip=skip, prefetch=prefetch)
        for x, y in batches:
            if not len(y):
                continue
            x, y = to_model_input(x, device, memory_format, normalize), y.to(device, non_blocking=True)
            with autocast or contextlib.nullcontext():
                scores = nn.functional.log_softmax(model(x).float(), dim=1)
                if flip:  # log of the mean probability of the image and its mirror
                    mirrored = nn.functional.log_softmax(model(x.flip(-1)).float(), dim=1)
                    scores = torch.logsumexp(torch.stack([scores, mirrored]), dim=0) - math.log(2)
            top = scores.topk(min(5, scores.shape[1]), dim=1).indices
            hits = top == y[:, None]
            totals[0] += hits[:, 0].sum()
            totals[1] += hits.any(dim=1).sum()
            totals[2] += nn.functional.nll_loss(scores, y, reduction="sum")
            totals[3] += len(y)
    finally:
        model.train(was_training)
    collective.all_reduce(totals, op="sum")
    count, skipped = int(totals[3].item()), int(totals[4].item())
    if count + skipped != len(dataset) or not count:
        raise RuntimeError(f"evaluation covered {count} (+{skipped} unreadable) of {len(dataset)} examples")
    return {"top1": totals[0].item() / count, "top5": totals[1].item() / count,
            "val_loss": totals[2].item() / count, "examples": count, "skipped": skipped}


def score_held_out(model: nn.Module, runnable: nn.Module, recipe: "Recipe", parts: "Parts", collective: Collective,
                   memory_format: torch.memory_format) -> dict:
    """Evaluate `runnable` (the model, or its compiled form) on the run's held-out set with rank 0's BatchNorm
    buffers of `model` on every rank (unsynced BN leaves each rank its own; DDP's per-forward broadcast is one
    batch behind; Horovod has none)."""
    data, cfg = parts.data, recipe.data
    if collective.world_size > 1:
        broadcast_buffers(model, collective)
    return evaluate(runnable, data.val, collective, cfg.eval_batch_size or cfg.batch_size,
                    parts.autocast(collective.device), cfg.loader_workers, data.normalize, memory_format,
                    cfg.prefetch_batches, flip=recipe.train.eval_flip)
