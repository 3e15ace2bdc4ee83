"""Image folders in the ImageNet layout: ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg.

Augmentation follows torchvision's reference recipe (RandomResizedCrop + flip
for training; resize to size*256/224 and centre crop for evaluation), decoded by
`trainer/data/decode.py` into uint8 tensors that are normalised on the device.
Each example's random crop is seeded from (seed, epoch, index), so the data
order and the augmentation are the same with any number of loader workers and
after resume. Unreadable images are skipped, counted and reported by name.
"""

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from bigbatch.trainer.data.augment import NO_AUGMENT, Augment
from bigbatch.trainer.data.base import DataSplits
from bigbatch.trainer.data.decode import (
    EVAL_CROP_PCT,
    CorruptImage,
    decode_eval,
    decode_train,
    normalize_batch,
)
from bigbatch.trainer.data.loader import Skipped
from bigbatch.trainer.data.sizes import SizeSchedule
from bigbatch.trainer.errors import RecipeError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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
    """Encoded images decoded per example (libjpeg-turbo, DCT-downscaled, only the crop's region) into uint8 CHW
    tensors; an unreadable file becomes a `Skipped` marker that the loader drops and reports."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, train: bool, seed: int, channels: int,
                 resize_quality: str = "antialias", augment: Augment = NO_AUGMENT, crop_pct: float = EVAL_CROP_PCT,
                 sizes: SizeSchedule | None = None, decode_region: bool = True):
        self.samples, self.size, self.train, self.seed, self.epoch = samples, image_size, train, seed, 0
        self.decode_region = decode_region  # JPEGs: decompress only the crop (same pixels)
        self.crop_pct, self.size_schedule = crop_pct, sizes  # the training size per epoch (progressive resizing)
        self.channels, self.resize_quality, self.augment = channels, resize_quality, augment

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, ...]) -> tuple[torch.Tensor | Skipped, int]:
        """`key` is an index, or (epoch, index) from a persistent loader (its workers' copy of `epoch` is stale),
        or (epoch, index, copy) for the copy-th repeat of data.aug_repeats."""
        epoch, index, *copy = key if isinstance(key, tuple) else (self.epoch, key)
        path, label = self.samples[index]
        try:
            data = Path(path).read_bytes()
            if self.train:  # per example (and repeat); as shards do by key
                rng = random.Random(f"{self.seed}:{epoch}:{index}" + "".join(f":{c}" for c in copy))
                size = self.size_schedule.at(epoch) if self.size_schedule else self.size
                image = self.augment(decode_train(data, size, rng, self.resize_quality, self.decode_region), rng)
            else:
                image = decode_eval(data, self.size, self.resize_quality, self.crop_pct, self.decode_region)
        except (CorruptImage, OSError) as e:
            return Skipped(path, str(e)), label
        if self.channels == 1:  # ITU-R 601 luma, as PIL's "L" mode
            gray = image.float().mul_(torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
            image = gray.round_().clamp_(0, 255).to(torch.uint8)
        return image, label


def list_splits(root: str) -> dict:
    """Classes and the (file, class index) pairs of train/ and val/ under `root`."""
    base = Path(root)
    if not base.is_dir():
        raise RecipeError(f"{base}: data.root: directory not found")
    train, classes = scan(base / "train")
    val, _ = scan(base / "val", classes)
    return {"classes": classes, "train": train, "val": val}


def load_folder_splits(root: str, seed: int, image_size: int = 0, channels: int = 0, rank: int = 0,
                       share: Callable[[str], str] | None = None, resize_quality: str = "antialias",
                       augment: Augment = NO_AUGMENT, eval_image_size: int = 0,
                       eval_crop_pct: float = EVAL_CROP_PCT, sizes: SizeSchedule | None = None,
                       decode_region: bool = True) -> DataSplits:
    """With `share` (rank 0's text on every rank), only rank 0 lists the folder: listing ImageNet's 1.28M
    files takes minutes on a network file system, and every rank doing it multiplies that load by W.
    A listing error on rank 0 reaches every rank, so all stop with the same message."""
    if share is None:
        listing = list_splits(root)
    else:
        text = ""
        if rank == 0:
            try:
                text = json.dumps(list_splits(root))
            except RecipeError as e:
                text = json.dumps({"error": str(e)})
        listing = json.loads(share(text))
        if "error" in listing:
            raise RecipeError(listing["error"])
    train, val = ([(path, int(label)) for path, label in listing[s]] for s in ("train", "val"))
    size, chans = image_size or 224, channels or 3
    return DataSplits(
        train=ImageFolderDataset(train, size, True, seed, chans, resize_quality, augment, sizes=sizes,
                                 decode_region=decode_region),
        val=ImageFolderDataset(val, eval_image_size or size, False, seed, chans, resize_quality,
                               crop_pct=eval_crop_pct, decode_region=decode_region),
        num_classes=len(listing["classes"]), channels=chans, image_size=size, classes=listing["classes"],
        normalize=normalize_batch,
    )
