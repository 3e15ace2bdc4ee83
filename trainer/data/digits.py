"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): real data, no download.

The held-out split is fixed (20% of each class, chosen with seed 0) whatever the
recipe's seed, so results of different runs are comparable.
"""

import numpy as np
import torch

from bigbatch.trainer.data.base import DataSplits, InMemoryDataset, resize_channels

HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_splits(image_size: int = 0, channels: int = 0) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = (images - 0.5) / 0.5
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    rng = np.random.default_rng(SPLIT_SEED)
    val_idx = []
    for c in range(10):
        members = np.flatnonzero(bunch.target == c)
        val_idx.extend(rng.choice(members, size=round(len(members) * HELD_OUT_FRACTION), replace=False))
    val_mask = np.zeros(len(labels), dtype=bool)
    val_mask[np.array(val_idx)] = True
    val_sel, train_sel = torch.from_numpy(val_mask), torch.from_numpy(~val_mask)
    images = resize_channels(images, image_size, channels)
    return DataSplits(
        train=InMemoryDataset(images[train_sel], labels[train_sel]),
        val=InMemoryDataset(images[val_sel], labels[val_sel]),
        num_classes=10, channels=images.shape[1], image_size=images.shape[-1],
        classes=[str(c) for c in range(10)],
    )
