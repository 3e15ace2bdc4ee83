"""Image folders in the ImageNet layout: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg.

Augmentation follows torchvision's reference recipe (RandomResizedCrop + flip
for training; resize to size*256/224 and centre crop for evaluation). Each
example's random crop is seeded from (seed, epoch, index), so the data order and
the augmentation are the same with any number of loader workers and after resume.
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data.base import DataSplits
from trainer.errors import RecipeError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def scan(split_dir: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(file, class index) pairs and the sorted class names of one split directory."""
    if not split_dir.is_dir():
        raise RecipeError(f"{split_dir}: data.root: directory not found (expected CLASS/ subdirectories of images)")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    classes = classes or found
    if not classes:
        raise RecipeError(f"{split_dir}: data.root: no class subdirectories")
    samples = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).glob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise RecipeError(f"{split_dir / name}: data.root: class directory holds no images")
        samples.extend((str(f), index) for f in files)
    return samples, classes


class ImageFolderDataset(Dataset):
    def __init__(self, samples: list[tuple[str, int]], image_size: int, train: bool, seed: int, channels: int):
        from torchvision.transforms import v2

        self.samples, self.train, self.seed, self.epoch = samples, train, seed, 0
        self.mode = "L" if channels == 1 else "RGB"
        mean, std = (MEAN[:1], STD[:1]) if channels == 1 else (MEAN, STD)
        resize = (v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()) if train else \
            (v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size))
        self.transform = v2.Compose([v2.PILToTensor(), *resize, v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(mean, std)])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as im:
            image = im.convert(self.mode)
        if not self.train:
            return self.transform(image), label
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


def load_folder_splits(root: str, seed: int, image_size: int = 0, channels: int = 0) -> DataSplits:
    base = Path(root)
    if not base.is_dir():
        raise RecipeError(f"{base}: data.root: directory not found")
    train_samples, classes = scan(base / "train")
    val_samples, _ = scan(base / "val", classes)
    size, chans = image_size or 224, channels or 3
    return DataSplits(
        train=ImageFolderDataset(train_samples, size, True, seed, chans),
        val=ImageFolderDataset(val_samples, size, False, seed, chans),
        num_classes=len(classes), channels=chans, image_size=size, classes=classes,
    )
