"""Turn lists of example indices into (images, labels) batches, and batches into model inputs."""

import atexit
import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from bigbatch.trainer.data.base import InMemoryDataset
from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.records.track import notice


class Skipped:
    """What a data set returns for an example it could not read (corrupt image); `collate` drops it."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason


def collate(samples: list) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """Stack the good samples; hand back the skipped ones so the main process can count and report them."""
    good = [s for s in samples if not isinstance(s[0], Skipped)]
    skipped = [s[0] for s in samples if isinstance(s[0], Skipped)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = stack_images([s[0] for s in good])
    labels = torch.as_tensor([int(s[1]) for s in good], dtype=torch.long)
    return images, labels, skipped


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """One NCHW batch. Decoded images are CHW views of HWC arrays: stacked as NHWC (a plain copy per image,
    ~40x faster than transposing each into NCHW) and returned as the NCHW view of that channels-last memory;
    `to_model_input` picks the layout the model wants."""
    if images[0].dim() == 3 and all(image.permute(1, 2, 0).is_contiguous() for image in images):
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


class UnreadableBudget:
    """Corrupt images are reported by name and skipped, until more than `limit` on this rank (data.max_bad_images):
    then the run fails naming the last one (a data set that rotten is not worth training on)."""

    def __init__(self, limit: int, rank: int):
        self.limit, self.rank, self.seen = limit, rank, 0

    def __call__(self, bad: "Skipped") -> None:
        report_skipped(bad)
        self.seen += 1
        if self.seen > self.limit:
            raise TrainingFailed(f"{bad.name}: {self.seen} unreadable images on rank {self.rank}, "
                                 f"more than data.max_bad_images={self.limit}")


def report_skipped(skipped: Skipped) -> None:
    notice(f"bigbatch: warning: skipping {skipped.name}: {skipped.reason}")


class _Batches:
    """The batch sampler of a persistent DataLoader: the main process sets the next pass's batches."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _persistent_loader(dataset: Dataset, loader_workers: int, pin_memory: bool, prefetch: int) -> DataLoader:
    """One DataLoader per (data set, settings), kept on the data set with its worker processes for its
    lifetime: starting L workers for every epoch and every evaluation costs seconds each time at ImageNet
    scale. (Kept on the data set, not in a registry, so both are collected together.)"""
    loaders = dataset.__dict__.setdefault("_persistent_loaders", {})
    key = (loader_workers, pin_memory, prefetch)
    if key not in loaders:
        loaders[key] = DataLoader(dataset, batch_sampler=_Batches(), num_workers=loader_workers,
                                  pin_memory=pin_memory, persistent_workers=True, collate_fn=collate,
                                  prefetch_factor=prefetch, generator=own_generator(),
                                  worker_init_fn=loader_worker_init())
    return loaders[key]


def release_loaders(*datasets: Dataset | None) -> None:
    """Stop the data sets' persistent loader workers now. Left to the garbage collector, a data set and its
    loader form a cycle, and the cycle's queues are finalised before the loader's shutdown runs: the workers
    never hear that it ended, and the shutdown waits 5 s for each before it kills it."""
    for dataset in datasets:
        for loader in (dataset.__dict__.pop("_persistent_loaders", {}) if dataset is not None else {}).values():
            # torch has no public close; a failed step's traceback may still hold the loader, so dropping our
            # reference is not enough. The shutdown is idempotent (the loader's own __del__ then does nothing).
            if getattr(loader, "_iterator", None) is not None:
                loader._iterator._shutdown_workers()


def outlast_signals(main_exiting, worker_id: int) -> None:
    """A loader worker process outlasts SIGINT and SIGTERM. A node's shutdown (or Ctrl-C in a terminal) signals
    every process; a loader worker that died of it would make the next batch fetch raise before the main process
    writes its checkpoint. The main process decides when to stop; once it is exiting (`main_exiting` is set at
    its exit, before multiprocessing terminates its daemonic children with SIGTERM), SIGTERM ends the worker,
    with a clean exit. A main process that dies outright is noticed by PyTorch's worker loop, which then exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_sigterm(signum, frame) -> None:
        if main_exiting.is_set():
            os._exit(0)  # a clean exit: dying of the signal would make the main process's DataLoader raise

    signal.signal(signal.SIGTERM, on_sigterm)


_main_exiting = None


def loader_worker_init() -> Callable[[int], None]:
    """`outlast_signals` bound to this process's exit flag, made (with its exit hook) on first use: atexit runs
    hooks in reverse order, so ours runs before multiprocessing's, which terminates the workers."""
    global _main_exiting
    if _main_exiting is None:
        _main_exiting = multiprocessing.Event()
        atexit.register(_main_exiting.set)
    return functools.partial(outlast_signals, _main_exiting)


def own_generator() -> torch.Generator:
    """A DataLoader draws its workers' base seed when an iterator starts, from torch's global generator unless
    given its own; that start happens at the first batch of a step, after the step's reseeding (seed_step), so
    the draw would shift the step's dropout / drop-path masks on the first step after a resume but not in an
    uninterrupted run. Our augmentations are keyed per example, so this seed is not used for them."""
    return torch.Generator().manual_seed(0)


def iterate_batches(dataset: Dataset, index_batches: Iterable[torch.Tensor], loader_workers: int = 0,
                    pin_memory: bool = False, on_skip: Callable[[Skipped], None] = report_skipped,
                    prefetch: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-memory data sets are gathered directly; others go through a DataLoader with this exact order, whose
    worker processes persist across epochs and evaluations. `index_batches` holds index tensors, or (indices,
    copy numbers) pairs (`TrainOrder.keyed_micro_batches`). A data set with an `epoch` (augmentation seeded by
    it) gets (epoch, index) keys, or (epoch, index, copy) for repeated copies, since persistent workers hold
    their own copy of it. Unreadable examples are dropped from their batch and passed to `on_skip`."""
    keyed = [item if isinstance(item, tuple) else (item, None) for item in index_batches]
    if isinstance(dataset, InMemoryDataset):
        for idx, _ in keyed:
            yield dataset.images[idx], dataset.labels[idx]
        return
    batches = [_draw_keys(idx, copies, getattr(dataset, "epoch", None)) for idx, copies in keyed]
    if not batches:
        return
    if loader_workers:
        loader = _persistent_loader(dataset, loader_workers, pin_memory, prefetch)
        loader.batch_sampler.batches = batches
    else:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=0, pin_memory=pin_memory,
                            collate_fn=collate, generator=own_generator())
    for images, labels, skipped in loader:
        for bad in skipped:
            on_skip(bad)
        yield images, labels  # possibly short; empty only if every image of the batch was unreadable


def _draw_keys(indices, copies: torch.Tensor | None, epoch: int | None) -> list:
    """The keys a data set's __getitem__ takes: plain indices, (epoch, index) or (epoch, index, copy > 0)."""
    indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    if epoch is None:
        return indices
    copies = copies.tolist() if copies is not None else [0] * len(indices)
    return [(epoch, i, c) if c else (epoch, i) for i, c in zip(indices, copies, strict=True)]


def iterate_stream(dataset: IterableDataset, epoch: int, consumed: int, batch_size: int, loader_workers: int = 0,
                   pin_memory: bool = False, on_skip: Callable[[Skipped], None] = report_skipped,
                   prefetch: int = 2, accumulation: int = 1,
                   phases: list | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of a streamed data set (shards) for `epoch` (whose global batch has `accumulation` micro-steps),
    after the `consumed` samples this rank already took in the epoch's last phase (`phases`: the world shapes
    that read the epoch so far, shards/reading.py)."""
    dataset.set_epoch(epoch, consumed, accumulation, phases=phases)
    batched = getattr(dataset, "train", False)  # a training stream yields whole micro-batches, of planned sizes
    loader = DataLoader(dataset, batch_size=None if batched else batch_size, num_workers=loader_workers,
                        pin_memory=pin_memory,
                        collate_fn=collate, prefetch_factor=prefetch if loader_workers else None,
                        generator=own_generator(), worker_init_fn=loader_worker_init())
    for images, labels, skipped in loader:
        for bad in skipped:
            on_skip(bad)
        yield images, labels


def model_input(batch: tuple[torch.Tensor, torch.Tensor], step: int, device: torch.device,
                memory_format: torch.memory_format, normalize) -> tuple[torch.Tensor, torch.Tensor]:
    """A training micro-batch on the device, as the model takes it; `step` (0-based) names an empty one."""
    x, y = batch
    if not len(y):
        raise TrainingFailed(f"step {step + 1}: every image of a micro-batch was unreadable")
    return to_model_input(x, device, memory_format, normalize), y.to(device, non_blocking=True)


def to_model_input(x: torch.Tensor, device: torch.device, memory_format: torch.memory_format,
                   normalize: Callable[[torch.Tensor, torch.memory_format], torch.Tensor] | None) -> torch.Tensor:
    """Move a batch to the device (uint8 when decoded images: 4x less to copy), then standardise it there into
    the model's memory layout (one pass casts and lays out)."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8 and normalize is not None:
        return normalize(x, memory_format)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x
