"""Turn lists of example indices into (images, labels) batches."""

from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from trainer.data.base import InMemoryDataset


def iterate_batches(dataset: Dataset, index_batches: Iterable[torch.Tensor], loader_workers: int = 0,
                    pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-memory data sets are gathered directly; others go through a DataLoader with this exact order."""
    if isinstance(dataset, InMemoryDataset):
        for idx in index_batches:
            yield dataset.images[idx], dataset.labels[idx]
        return
    batches = [idx.tolist() if isinstance(idx, torch.Tensor) else list(idx) for idx in index_batches]
    if not batches:
        return
    yield from DataLoader(dataset, batch_sampler=batches, num_workers=loader_workers, pin_memory=pin_memory,
                          persistent_workers=False)
