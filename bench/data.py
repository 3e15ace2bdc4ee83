"""Training input pipeline throughput per core: bigbatch's folder loader against torchvision's ImageFolder.

Why: on CPU-bound runs the input pipeline sets the pace; ImageNet JPEGs are
~500x375. bigbatch decodes with simplejpeg (libjpeg-turbo), shrinking in the DCT
domain when the random crop allows, crops and resizes on uint8 and leaves
normalisation to the device; the baseline is the torchvision reference pipeline
(PIL decode, RandomResizedCrop(224), flip, ToTensor, Normalize).

How: an ImageNet-like folder of real photographs - 500x375 JPEG crops (quality
90, varied positions and mirrored) cut from the sample photos scikit-learn ships
- then both pipelines produce the same number of 224 px training batches of 32
in one process (loader_workers 0, 1 torch thread: images/s per core),
alternating baseline, bigbatch folder, bigbatch shards (the same images packed
by `bigbatch data pack` into 4 MB tar shards, read as a stream), ... and the
ratios are of the medians. bigbatch's uint8 batches are turned into model inputs
too (laid out NCHW and normalised on the CPU here, as the device), so every
pipeline ends with float batches ready for a model.

    .venv/bin/python bench/data.py [--images 512] [--repeats 3]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_folder(root: Path, images: int, classes: int = 8) -> None:
    import numpy as np
    from PIL import Image

    from tests.images import sample_photos

    photos = sample_photos()
    rng = np.random.default_rng(0)
    for i in range(images):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 375 + 1), rng.integers(0, photo.shape[1] - 500 + 1)
        crop = photo[top:top + 375, left:left + 500]
        crop = crop[:, ::-1] if i % 4 >= 2 else crop
        directory = root / "train" / f"class{i % classes}"
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(directory / f"{i:05d}.jpg", quality=90)
    for c in range(classes):  # the folder layout wants a val split too (not timed)
        (root / "val" / f"class{c}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "train" / f"class{c}" / f"{c:05d}.jpg", root / "val" / f"class{c}" / "0.jpg")


def _consume(batches, normalize) -> float:
    """images/s to turn these uint8 batches into float NCHW model inputs (the default layout)."""
    import torch

    from trainer.data.loader import to_model_input

    started, count = time.perf_counter(), 0
    for x, _ in batches:
        x = to_model_input(x, torch.device("cpu"), torch.contiguous_format, normalize)
        count += len(x)
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224)
    return count / (time.perf_counter() - started)


def run_bigbatch(root: Path, batch: int) -> float:
    from trainer.data import TrainOrder, iterate_batches
    from trainer.data.folder import load_folder_splits

    splits = load_folder_splits(str(root), seed=0, image_size=224, channels=3)
    order = TrainOrder(seed=0, num_examples=len(splits.train), batch_size=batch, world_size=1, rank=0)
    return _consume(iterate_batches(splits.train, order.micro_batches(0, 0)), splits.normalize)


def run_shards(packed: Path, batch: int) -> float:
    from trainer.data.decode import normalize_batch
    from trainer.data.loader import iterate_stream
    from trainer.data.shards import ShardedDataset

    dataset = ShardedDataset(packed, "train", 224, train=True, seed=0, batch_size=batch, shuffle_buffer=256,
                             mark_skipped=True)
    return _consume(iterate_stream(dataset, 0, 0, batch), normalize_batch)


def run_torchvision(root: Path, batch: int) -> float:
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root / "train"), transform), batch_size=batch,
                                         shuffle=True, num_workers=0, drop_last=True)
    started, count = time.perf_counter(), 0
    for x, _ in loader:
        count += len(x)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from trainer.data.shards import pack_folder

    baseline, folder, sharded = "torchvision ImageFolder + PIL", "bigbatch folder (simplejpeg)", "bigbatch shards"
    rates: dict[str, list[float]] = {baseline: [], folder: [], sharded: []}
    with tempfile.TemporaryDirectory(prefix="bigbatch-data-") as tmp:
        root = Path(tmp) / "folder"
        make_folder(root, args.images)
        pack_folder(root, Path(tmp) / "packed", shard_size_bytes=4_000_000, split="train")
        for _ in range(args.repeats):
            rates[baseline].append(run_torchvision(root, args.batch_size))
            rates[folder].append(run_bigbatch(root, args.batch_size))
            rates[sharded].append(run_shards(Path(tmp) / "packed", args.batch_size))
    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [f"Training input pipeline, 1 process, 1 thread: {args.images} JPEGs 500x375 (real photos), "
             f"RandomResizedCrop(224) + flip + normalise, batch {args.batch_size}, median of {args.repeats} "
             "interleaved runs", "", f"{'pipeline':32} {'images/s':>9}   runs", "-" * 60]
    lines += [f"{k:32} {med[k]:9.1f}   {', '.join(f'{r:.0f}' for r in v)}" for k, v in rates.items()]
    lines += [""] + [f"ratio {name} / torchvision: {med[name] / med[baseline]:.2f} (target >= 2)"
                     for name in (folder, sharded)]
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "results" / "data.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
