"""Exact evaluation: top-1 / top-5 over every held-out example exactly once across ranks."""

import contextlib

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from trainer.collective import Collective
from trainer.data import eval_shard, iterate_batches


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, collective: Collective, batch_size: int,
             autocast: contextlib.AbstractContextManager | None = None, loader_workers: int = 0) -> dict:
    """Each rank scores a disjoint contiguous shard; the counts (not averages) are summed."""
    shard = eval_shard(len(dataset), collective.world_size, collective.rank)
    indices = torch.arange(shard.start, shard.stop)
    device = collective.device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # top1 hits, top5 hits, loss sum, count
    was_training = model.training
    model.eval()
    try:
        for x, y in iterate_batches(dataset, indices.split(batch_size), loader_workers):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast or contextlib.nullcontext():
                logits = model(x)
            logits = logits.float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == y[:, None]
            totals[0] += hits[:, 0].sum()
            totals[1] += hits.any(dim=1).sum()
            totals[2] += nn.functional.cross_entropy(logits, y, reduction="sum")
            totals[3] += len(y)
    finally:
        model.train(was_training)
    collective.all_reduce(totals, op="sum")
    count = int(totals[3].item())
    if count != len(dataset):
        raise RuntimeError(f"evaluation covered {count} of {len(dataset)} examples")
    return {"top1": totals[0].item() / count, "top5": totals[1].item() / count,
            "val_loss": totals[2].item() / count, "examples": count}
