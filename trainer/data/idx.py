"""MNIST-family data in the IDX format (LeCun's original files, gzipped or not): MNIST, Fashion-MNIST.

IDX: a 4-byte magic (two zero bytes, a type code - 0x08 for unsigned bytes - and
the number of dimensions), one big-endian uint32 per dimension, then the data.
Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package
(`make fashion-mnist` installs it); the official train (60,000) and test
(10,000) files are the training and held-out splits.
"""

import gzip
from pathlib import Path

import numpy as np
import torch

from bigbatch.trainer.data.base import DataSplits, InMemoryDataset, resize_channels
from bigbatch.trainer.errors import RecipeError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
UNSIGNED_BYTE = 0x08


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array of an IDX file with `dims` dimensions; a malformed file is a one-line RecipeError."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise RecipeError(f"{path}: data.root: cannot read IDX file ({e})") from None
    if len(raw) < 4 + 4 * dims or raw[0] != 0 or raw[1] != 0 or raw[2] != UNSIGNED_BYTE or raw[3] != dims:
        raise RecipeError(f"{path}: data.root: not an IDX file of unsigned bytes with {dims} dimensions "
                          f"(magic {raw[:4].hex() or 'missing'})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = raw[4 + 4 * dims:]
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise RecipeError(f"{path}: data.root: IDX header says {shape} = {expected} bytes, the file holds "
                          f"{len(body)} (truncated or corrupt)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    hint = " (install it with `make fashion-mnist`: Debian's dataset-fashion-mnist)" \
        if str(root) == FASHION_MNIST_ROOT else ""
    raise RecipeError(f"{root / stem}[.gz]: data.root: IDX file not found{hint}")


def load_idx_splits(root: str, classes: list[str], image_size: int = 0, channels: int = 0) -> DataSplits:
    """Both splits as normalised float tensors in memory ((x / 255 - 0.5) / 0.5, as the digits)."""
    base = Path(root)
    splits = {}
    for split, (images_file, labels_file) in FILES.items():
        images = read_idx(_find(base, images_file), 3)
        labels = read_idx(_find(base, labels_file), 1)
        if len(images) != len(labels):
            raise RecipeError(f"{base}: data.root: {split} split has {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(classes):
            raise RecipeError(f"{base}: data.root: {split} label {labels.max()} >= {len(classes)} classes")
        x = (torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 255.0 - 0.5) / 0.5
        splits[split] = InMemoryDataset(resize_channels(x, image_size, channels),
                                        torch.from_numpy(labels.astype(np.int64)))
    first = splits["train"].images
    return DataSplits(train=splits["train"], val=splits["val"], num_classes=len(classes),
                      channels=first.shape[1], image_size=first.shape[-1], classes=classes)
