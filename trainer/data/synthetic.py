"""Synthetic images for throughput runs and tests: learnable (each class has its own mean pattern)."""

import torch

from bigbatch.trainer.data.base import DataSplits, InMemoryDataset


def _make(num: int, num_classes: int, channels: int, size: int, prototypes: torch.Tensor,
          generator: torch.Generator) -> InMemoryDataset:
    labels = torch.randint(0, num_classes, (num,), generator=generator)
    noise = torch.randn(num, channels, size, size, generator=generator)
    return InMemoryDataset(prototypes[labels] + noise, labels)


def load_synthetic_splits(seed: int, num_classes: int, train_examples: int, val_examples: int,
                          image_size: int = 0, channels: int = 0) -> DataSplits:
    size, chans = image_size or 32, channels or 3
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, chans, size, size, generator=generator)
    return DataSplits(
        train=_make(train_examples, num_classes, chans, size, prototypes, generator),
        val=_make(val_examples, num_classes, chans, size, prototypes, generator),
        num_classes=num_classes, channels=chans, image_size=size,
        classes=[str(c) for c in range(num_classes)],
    )
