"""What the trainer needs of a data set: train and held-out splits plus their shape."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


class InMemoryDataset(Dataset):
    """Small data sets held as two tensors; batches are gathered by index, no loader processes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.contiguous()
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int
    channels: int
    image_size: int
    classes: list[str]
    # uint8 batches (decoded images) are made float and standardised on the device by this
    normalize: Callable[[torch.Tensor, torch.memory_format], torch.Tensor] | None = None  # uint8 -> model input
    holdout: Dataset | None = None  # data.holdout: training examples never trained on, scored like `val`


def resize_channels(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Bring an (N, C, H, W) float tensor to `image_size` (bilinear) and `channels` (grayscale repeat)."""
    if image_size and images.shape[-1] != image_size:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    if channels == 3 and images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images
