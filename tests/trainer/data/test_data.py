"""Data: bundled digits split, per-epoch order split across ranks, exact evaluation shards."""

import os

import pytest
import torch

from bigbatch.trainer.data import TrainOrder, eval_shard, load_data
from bigbatch.trainer.data.order import epoch_permutation
from bigbatch.trainer.recipe.schema import DataConfig


def test_digits_split_is_fixed_and_disjoint():
    a = load_data(DataConfig(name="digits", batch_size=8), seed=0)
    b = load_data(DataConfig(name="digits", batch_size=8), seed=123)
    assert len(a.train) + len(a.val) == 1797
    assert torch.equal(a.val.images, b.val.images)  # held-out split does not depend on the recipe seed
    train_rows = {tuple(x.flatten().tolist()) for x in a.train.images}
    overlap = sum(tuple(x.flatten().tolist()) in train_rows for x in a.val.images)
    assert overlap < 5  # the raw data holds a few duplicate images; the split itself shares no index


def test_ranks_get_disjoint_slices_of_one_shuffle():
    n, b, world, accum = 100, 4, 3, 2
    orders = [TrainOrder(seed=7, num_examples=n, batch_size=b, world_size=world, rank=r, accumulation_steps=accum)
              for r in range(world)]
    assert orders[0].steps_per_epoch == n // (b * world * accum)
    seen = [torch.cat(list(o.micro_batches(epoch=0))) for o in orders]
    everything = torch.cat(seen)
    assert len(set(everything.tolist())) == len(everything) == orders[0].steps_per_epoch * b * world * accum
    one = TrainOrder(seed=7, num_examples=n, batch_size=b * world * accum)
    assert set(torch.cat(list(one.micro_batches(0))).tolist()) == set(everything.tolist())


def test_order_changes_by_epoch_and_resumes_mid_epoch():
    o = TrainOrder(seed=1, num_examples=64, batch_size=8)
    e0, e1 = list(o.micro_batches(0)), list(o.micro_batches(1))
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    tail = list(o.micro_batches(0, start_step=3))
    assert all(torch.equal(x, y) for x, y in zip(tail, e0[3:], strict=True))


def test_eval_shards_cover_each_example_once():
    for n in (10, 359, 1000):
        for world in (1, 2, 3, 7):
            covered = [i for r in range(world) for i in eval_shard(n, world, r)]
            assert covered == list(range(n))


def global_sequence(orders: list[TrainOrder], epoch: int, start_step: int) -> list[int]:
    """The examples all ranks take from `start_step` on, in global order: step by step, micro by micro, rank
    by rank (the [micro][rank][example] layout the module docstring defines)."""
    streams = [list(o.micro_batches(epoch, start_step)) for o in orders]
    out = []
    for k in range(len(streams[0])):
        for stream in streams:
            out += stream[k].tolist()
    return out


def test_resuming_with_another_world_size_continues_with_exactly_the_remaining_examples():
    n, seed, epoch = 1000, 3, 2
    perm = epoch_permutation(seed, epoch, n).tolist()
    before = [TrainOrder(seed=seed, num_examples=n, batch_size=8, world_size=2, rank=r) for r in range(2)]
    consumed = 7 * 16  # 7 steps of global batch 16 done, then the job restarts on 4 workers
    assert global_sequence(before, epoch, 0)[:consumed] == perm[:consumed]
    after = [TrainOrder(seed=seed, num_examples=n, batch_size=4, world_size=4, rank=r) for r in range(4)]
    assert global_sequence(after, epoch, consumed // 16) == perm[consumed:(n // 16) * 16]
    # another global batch (3 x 8 = 24): the position rounds down to its step boundary, as the loop reports
    third = [TrainOrder(seed=seed, num_examples=n, batch_size=8, world_size=3, rank=r) for r in range(3)]
    start = consumed // 24
    assert global_sequence(third, epoch, start) == perm[start * 24:(n // 24) * 24]
    assert consumed - start * 24 < 24  # fewer than one global batch is seen again


def keyed_global_batches(orders: list[TrainOrder], epoch: int) -> list[list[list[tuple[int, int]]]]:
    """Per step, the (index, copy) pairs of every micro-batch, in [micro][rank] order."""
    streams = [list(o.keyed_micro_batches(epoch)) for o in orders]
    micro = [[list(zip(idx.tolist(), copies.tolist(), strict=True)) for idx, copies in batches]
             for batches in zip(*streams, strict=True)]
    accum = orders[0].accumulation_steps
    return [micro[s * accum:(s + 1) * accum] for s in range(len(micro) // accum)]


def test_repeated_augmentation_takes_g_over_r_examples_r_times_each_on_other_micro_batches():
    """timm's RepeatAugSampler / DeiT's RASampler, in bigbatch's order: step s draws the next G/R examples of the
    epoch's shuffle and every one appears R times, as copies 0..R-1, each copy in another micro-batch."""
    n, seed, repeats = 500, 5, 3
    perm = epoch_permutation(seed, 1, n).tolist()
    orders = [TrainOrder(seed=seed, num_examples=n, batch_size=4, world_size=2, rank=r, accumulation_steps=3,
                         repeats=repeats) for r in range(2)]
    steps = keyed_global_batches(orders, epoch=1)
    assert len(steps) == n // 24  # the epoch keeps N // G steps
    for s, step in enumerate(steps):
        pairs = [pair for micro in step for batch in micro for pair in batch]
        expected = perm[s * 8:(s + 1) * 8]  # G / R = 24 / 3 distinct examples, next in the shuffle
        assert sorted(pairs) == sorted((i, c) for i in expected for c in range(repeats))
        for i in expected:  # each copy in a different (micro-step, rank) micro-batch
            holders = [k for k, batch in enumerate(b for micro in step for b in micro) if any(j == i for j, _ in batch)]
            assert len(holders) == repeats


def test_repeated_augmentation_draws_the_same_global_batches_at_any_world_size():
    n, seed = 300, 2
    reference = None
    for world, batch, accum in ((1, 24, 1), (2, 6, 2), (4, 3, 2), (8, 3, 1)):
        orders = [TrainOrder(seed=seed, num_examples=n, batch_size=batch, world_size=world, rank=r,
                             accumulation_steps=accum, repeats=3) for r in range(world)]
        flat = [[pair for micro in step for b in micro for pair in b] for step in keyed_global_batches(orders, 0)]
        reference = reference or flat
        assert flat == reference, world


def test_repeats_at_1024_workers_on_imagenet_lay_the_global_batch_of_one_process():
    """ImageNet's 1,281,167 images, 1,024 workers x 32, R = 4: the first, a middle and the last rank take their
    slices of the batch one process draws (G/R = 8,192 distinct examples, each copy G/R positions apart)."""
    n, repeats = 1_281_167, 4
    one = TrainOrder(seed=0, num_examples=n, batch_size=32 * 1024, repeats=repeats)
    (indices, copies), = [next(one.keyed_micro_batches(epoch=3, start_step=17))]
    assert len(set(indices.tolist())) == 32 * 1024 // repeats
    for rank in (0, 511, 1023):
        order = TrainOrder(seed=0, num_examples=n, batch_size=32, world_size=1024, rank=rank, repeats=repeats)
        mine, mine_copies = next(order.keyed_micro_batches(epoch=3, start_step=17))
        assert torch.equal(mine, indices[rank * 32:(rank + 1) * 32])
        assert torch.equal(mine_copies, copies[rank * 32:(rank + 1) * 32])
    assert one.steps_per_epoch == n // (32 * 1024)


def test_each_repeat_of_a_folder_example_is_augmented_apart_and_copy_0_keeps_the_plain_key(tmp_path):
    from bigbatch.trainer.data.loader import iterate_batches
    from tests.images import write_jpeg_folder

    data = load_data(DataConfig(name="folder", root=str(write_jpeg_folder(tmp_path)), batch_size=4, image_size=32),
                     seed=0)
    train = data.train
    train.set_epoch(2)
    batches = [(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))]
    (images, _), = list(iterate_batches(train, batches))
    assert torch.equal(images[0], train[(2, 0)][0]) and torch.equal(images[1], train[(2, 1)][0])
    assert torch.equal(images[2], train[(2, 0, 1)][0]) and torch.equal(images[3], train[(2, 1, 1)][0])
    assert not torch.equal(images[0], images[2]) and not torch.equal(images[1], images[3])  # other crops


def test_repeats_must_divide_the_global_batch_and_need_an_indexed_data_set(tiny):
    from bigbatch.trainer.errors import RecipeError
    from bigbatch.trainer.recipe import load_recipe

    with pytest.raises(RecipeError, match="data.aug_repeats: must divide the global batch"):
        load_recipe(tiny, ["data.batch_size=8", "data.aug_repeats=3"])
    with pytest.raises(RecipeError, match="data.aug_repeats: needs an indexed data set"):
        load_recipe(tiny, ["data.name=shards", "data.root=x", "data.batch_size=8", "data.aug_repeats=2"])


def test_a_holdout_sets_training_examples_apart_the_same_for_every_seed():
    def rows(images: torch.Tensor) -> set:
        return {tuple(x.flatten().tolist()) for x in images}

    full = load_data(DataConfig(name="digits", batch_size=8), seed=0)
    splits = [load_data(DataConfig(name="digits", batch_size=8, holdout=200), seed=seed) for seed in (0, 9)]
    for split in splits:
        assert (len(split.train), len(split.holdout)) == (len(full.train) - 200, 200)
        assert torch.equal(split.val.images, full.val.images)  # the test split is untouched
        assert rows(split.train.images) | rows(split.holdout.images) == rows(full.train.images)
        assert len(rows(split.train.images) & rows(split.holdout.images)) < 5  # the raw data's few duplicates
    assert torch.equal(splits[0].holdout.images, splits[1].holdout.images)


def test_a_folder_holdout_is_read_as_evaluation_images(tmp_path):
    from tests.images import write_jpeg_folder

    root = str(write_jpeg_folder(tmp_path))
    split = load_data(DataConfig(name="folder", root=root, batch_size=4, image_size=32, holdout=4), seed=0)
    assert len(split.train) == 8 and len(split.holdout) == 4
    assert not {path for path, _ in split.train.samples} & {path for path, _ in split.holdout.samples}
    assert split.holdout.train is False and split.train.train is True
    image, _ = split.holdout[0]
    again, _ = split.holdout[0]
    assert torch.equal(image, again) and image.shape[-2:] == (32, 32)  # no random crop: the centre crop


def test_decoded_images_are_batched_in_channels_last_memory_and_given_to_the_model_in_its_layout():
    from bigbatch.trainer.data.decode import normalize_batch
    from bigbatch.trainer.data.loader import stack_images, to_model_input

    gen = torch.Generator().manual_seed(0)
    hwc = [torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8, generator=gen) for _ in range(4)]
    chw = [image.permute(2, 0, 1) for image in hwc]  # what decode_train/decode_eval return
    batch = stack_images(chw)
    expected = torch.stack([image.contiguous() for image in chw])
    assert torch.equal(batch, expected) and batch.is_contiguous(memory_format=torch.channels_last)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = to_model_input(batch, torch.device("cpu"), layout, normalize_batch)
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=layout)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        reference = (expected.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        torch.testing.assert_close(x, reference, rtol=0, atol=1e-5)
    gray = [torch.randint(0, 256, (1, 5, 6), dtype=torch.uint8, generator=gen) for _ in range(2)]
    assert torch.equal(stack_images(gray), torch.stack(gray))


class _LoggedDataset(torch.utils.data.Dataset):
    """Appends each index it is asked for to a file (loader workers are separate processes)."""

    def __init__(self, log):
        self.log = log

    def __len__(self):
        return 64

    def __getitem__(self, index):
        with open(self.log, "a") as f:
            f.write(f"{index}\n")
        return torch.zeros(1, 2, 2, dtype=torch.uint8), index % 3


@pytest.mark.parametrize("prefetch", [1, 3])
def test_each_loader_worker_prepares_data_prefetch_batches_batches_ahead(tmp_path, prefetch):
    import time

    from bigbatch.trainer.data.loader import iterate_batches, release_loaders

    log, dataset = tmp_path / "log", _LoggedDataset(tmp_path / "log")
    batches = iterate_batches(dataset, torch.arange(64).split(4), loader_workers=1, prefetch=prefetch)
    _, labels = next(batches)
    time.sleep(1.5)  # the worker fills its queue meanwhile
    loaded = len(log.read_text().split())
    release_loaders(dataset)
    assert labels.tolist() == [0, 1, 2, 0] and loaded == 4 * (1 + prefetch)


def test_released_loader_workers_exit_at_once_though_a_batch_iterator_still_holds_the_loader(tmp_path):
    """A failed step's traceback keeps the batch iterator (and its loader) alive: releasing must still stop the
    workers. Left to the garbage collector, the loader / data set cycle waits 5 s per worker, then kills it."""
    import time

    from bigbatch.trainer.data.loader import iterate_batches, release_loaders
    from tests.run_files import descendants

    dataset, before = _LoggedDataset(tmp_path / "log"), set(descendants(os.getpid()))
    batches = iterate_batches(dataset, torch.arange(64).split(4), loader_workers=2)
    next(batches)
    workers = set(descendants(os.getpid())) - before
    assert len(workers) == 2
    started = time.monotonic()
    release_loaders(dataset)
    assert time.monotonic() - started < 4  # under one of the 5 s joins of a stalled shutdown
    assert {_state(pid) for pid in workers} == {"gone"}  # joined, not left running or as zombies
    assert "_persistent_loaders" not in vars(dataset) and batches is not None


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _list_once(rank: int, world: int, root: str, pids_dir: str) -> None:
    import bigbatch.trainer.data.folder as folder
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.data import load_data
    from bigbatch.trainer.distributed.collective import broadcast_text
    from bigbatch.trainer.recipe.schema import DataConfig

    scans = []
    real_scan = folder.scan
    folder.scan = lambda *a, **k: scans.append(a) or real_scan(*a, **k)
    collective = TorchDistributedCollective("cpu")
    data = load_data(DataConfig(name="folder", root=root, batch_size=2), 0, world, rank,
                     share=lambda text: broadcast_text(text, collective))
    assert len(scans) == (2 if rank == 0 else 0)  # train/ and val/, by rank 0 only
    alone = folder.load_folder_splits(root, 0)
    assert data.train.samples == alone.train.samples and data.classes == alone.classes


@pytest.mark.timeout(120)
def test_only_rank_0_lists_a_folder_data_set(tmp_path):
    from tests.gloo import spawn_gloo
    from tests.images import write_jpeg_folder

    root = write_jpeg_folder(tmp_path / "folder", classes=3, per_class=4, val_per_class=2)
    spawn_gloo(_list_once, 2, str(root), str(tmp_path))


def test_loader_workers_persist_across_epochs_and_evaluations(tiny, tmp_path, monkeypatch):
    """The processes that load images: two for training, two for evaluation, for 2 epochs x 2 evaluations."""
    import os

    from bigbatch.trainer.data.folder import ImageFolderDataset
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer
    from tests.images import write_jpeg_folder

    root = write_jpeg_folder(tmp_path / "folder", classes=3, per_class=4, val_per_class=2)
    pids = tmp_path / "pids"
    real = ImageFolderDataset.__getitem__

    def record_pid(self, key):  # runs in the loader worker processes (forked: they inherit this)
        with open(pids, "a") as f:
            f.write(f"{os.getpid()} {'train' if self.train else 'val'}\n")
        return real(self, key)

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", record_pid)
    recipe = load_recipe(tiny, ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                                "data.loader_workers=2", "model.name=resnet_small", "train.epochs=2",
                                "train.eval_every_epochs=1"])
    Trainer(recipe, tmp_path / "run", LocalCollective()).fit()
    seen = {tuple(line.split()) for line in pids.read_text().splitlines()}
    assert os.getpid() not in {int(pid) for pid, _ in seen}
    assert len({pid for pid, split in seen if split == "train"}) == 2
    assert len({pid for pid, split in seen if split == "val"}) == 2
