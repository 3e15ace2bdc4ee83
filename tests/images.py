"""Real photographs for image tests: JPEG crops cut from the two sample photos scikit-learn ships."""

from pathlib import Path

import numpy as np


def sample_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china.jpg and flower.jpg, 427 x 640 RGB


def write_jpeg_folder(root: Path, classes: int = 3, per_class: int = 4, val_per_class: int = 2,
                      size: tuple[int, int] = (160, 200)) -> Path:
    """ROOT/{train,val}/cCLASS/NNN.jpg: crops at varied positions of the sample photos, quality 90."""
    from PIL import Image

    photos = sample_photos()
    h, w = size
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            directory = root / split / f"c{c}"
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo = photos[(c + i) % len(photos)]
                top = (37 * (c * count + i)) % (photo.shape[0] - h)
                left = (53 * (c * count + i)) % (photo.shape[1] - w)
                Image.fromarray(photo[top:top + h, left:left + w]).save(directory / f"{i:03d}.jpg", quality=90)
    return root


def write_packed_shards(base: Path, shard_size_bytes: int, **folder) -> Path:
    """BASE/folder (write_jpeg_folder with `folder`'s arguments) packed into shards at BASE/packed."""
    from bigbatch.trainer.data.shards import pack_folder

    pack_folder(write_jpeg_folder(base / "folder", **folder), base / "packed", shard_size_bytes=shard_size_bytes)
    return base / "packed"
