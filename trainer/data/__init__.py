"""Data sets by recipe name, the per-rank order, and batch iteration."""

from collections.abc import Callable

from bigbatch.trainer.data.augment import augment_of
from bigbatch.trainer.data.base import DataSplits, InMemoryDataset
from bigbatch.trainer.data.holdout import carve_holdout
from bigbatch.trainer.data.loader import iterate_batches
from bigbatch.trainer.data.order import TrainOrder, eval_shard
from bigbatch.trainer.data.sizes import SizeSchedule, size_schedule
from bigbatch.trainer.recipe.schema import DataConfig


def load_data(cfg: DataConfig, seed: int, world_size: int = 1, rank: int = 0,
              share: Callable[[str], str] | None = None) -> DataSplits:
    """Build the train and held-out splits the recipe's `data:` section names (streamed shards need this
    worker's rank and the world size). `share(text)` returns rank 0's `text` on every rank (a broadcast):
    folder listings are made once, by rank 0, not by every rank. With `data.holdout`, that many training
    examples move to `holdout` (trainer/data/holdout.py)."""
    splits = _load_splits(cfg, seed, world_size, rank, share)
    return carve_holdout(splits, cfg.holdout) if cfg.holdout else splits


def _load_splits(cfg: DataConfig, seed: int, world_size: int, rank: int,
                 share: Callable[[str], str] | None) -> DataSplits:
    if cfg.name == "digits":
        from bigbatch.trainer.data.digits import load_digits_splits

        return load_digits_splits(cfg.image_size, cfg.channels)
    if cfg.name == "synthetic":
        from bigbatch.trainer.data.synthetic import load_synthetic_splits

        return load_synthetic_splits(seed, cfg.num_classes, cfg.train_examples, cfg.val_examples,
                                     cfg.image_size, cfg.channels)
    if cfg.name in ("fashion_mnist", "mnist"):
        from bigbatch.trainer.data.idx import FASHION_CLASSES, FASHION_MNIST_ROOT, load_idx_splits

        classes = FASHION_CLASSES if cfg.name == "fashion_mnist" else [str(c) for c in range(10)]
        return load_idx_splits(cfg.root or FASHION_MNIST_ROOT, classes, cfg.image_size, cfg.channels)
    if cfg.name == "shards":
        from bigbatch.trainer.data.shards import load_shard_splits

        return load_shard_splits(cfg.root, seed, cfg.image_size or 224, cfg.batch_size, cfg.shuffle_buffer,
                                 world_size, rank, resize_quality=cfg.resize_quality,  # accumulation: set_epoch
                                 decode_region=cfg.decode_region,
                                 augment=augment_of(cfg), eval_image_size=cfg.eval_image_size,
                                 eval_crop_pct=cfg.eval_crop_pct, sizes=_sizes(cfg))
    if cfg.name == "folder":
        from bigbatch.trainer.data.folder import load_folder_splits

        return load_folder_splits(cfg.root, seed, cfg.image_size, cfg.channels, rank, share, cfg.resize_quality,
                                  augment_of(cfg), cfg.eval_image_size, cfg.eval_crop_pct, _sizes(cfg),
                                  cfg.decode_region)
    raise ValueError(f"unknown data set {cfg.name!r}")


def _sizes(cfg: DataConfig) -> SizeSchedule | None:
    schedule = cfg.image_size_schedule  # None when a DataConfig is built directly, without its sections
    return size_schedule(schedule, cfg.image_size) if schedule is not None and schedule.start else None


def layout_warning(data: DataSplits, loader_workers: int) -> str | None:
    """One warning line when the training data's layout makes the run read more than it needs (shards:
    a format-1 index), with the command that fixes it; None otherwise."""
    check = getattr(data.train, "layout_warning", None)
    line = check(loader_workers) if check is not None else None
    return f"bigbatch: warning: {line}" if line else None


__all__ = ["DataSplits", "InMemoryDataset", "TrainOrder", "eval_shard", "iterate_batches", "layout_warning",
           "load_data"]
