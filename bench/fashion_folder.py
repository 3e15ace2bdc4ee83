"""Fashion-MNIST (Debian's dataset-fashion-mnist) written as an image folder of JPEG files, for the benchmarks
that need the decoded-image path (crops, augmentation policies, erasing)."""

from pathlib import Path


def write_fashion_folder(root: Path, train_per_class: int, val_per_class: int, test: bool = False) -> None:
    """ROOT/{train,val}/CLASS/*.jpg from the training split: of each class, the first `train_per_class` images
    to train on and the next `val_per_class` held out. With `test`, also ROOT/test/CLASS/*.jpg: all 10,000
    images of the test split (bigbatch never reads test/; a benchmark scores it once, at the end)."""
    import numpy as np
    from PIL import Image

    from bigbatch.trainer.data.idx import FASHION_CLASSES, FASHION_MNIST_ROOT, _find, read_idx

    source = Path(FASHION_MNIST_ROOT)
    splits = [("train", "train", lambda idx: idx[:train_per_class]),
              ("val", "train", lambda idx: idx[train_per_class:train_per_class + val_per_class])]
    if test:
        splits.append(("test", "t10k", lambda idx: idx))
    for split, prefix, choose in splits:
        images = read_idx(_find(source, f"{prefix}-images-idx3-ubyte"), 3)
        labels = read_idx(_find(source, f"{prefix}-labels-idx1-ubyte"), 1)
        for label, name in enumerate(FASHION_CLASSES):
            directory = root / split / f"{label}-{name.replace('/', '-')}"
            directory.mkdir(parents=True, exist_ok=True)
            for i in choose(np.flatnonzero(labels == label)):
                rgb = np.repeat(images[i][:, :, None], 3, axis=2)
                Image.fromarray(rgb).save(directory / f"{i:05d}.jpg", quality=95)
