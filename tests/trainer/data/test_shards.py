"""Tar shards (WebDataset layout): pack round trip, size limit, rank x worker assignment, order, resume,
unreadable samples, decoding, fsspec URIs, inspect. Real JPEG crops of scikit-learn's sample photos."""

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import fsspec
import pytest
import torch
from torch.utils.data import DataLoader

from bigbatch.trainer.data.loader import Skipped
from bigbatch.trainer.data.shards import (
    CorruptSampleWarning,
    ShardedDataset,
    format_inspect,
    inspect,
    pack_folder,
)
from bigbatch.trainer.errors import RecipeError
from tests.images import sample_photos

CLASSES = ["ant", "bee", "cow"]
SHARD_SIZE = 12_000
CORRUPT = "0002_broken"  # key of the truncated JPEG


def _jpeg(photo, top: int, left: int, h: int, w: int, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo[top:top + h, left:left + w]).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_folder(root: Path) -> Path:
    """3 classes; train 8 crops each of varied sizes + a PNG (same stem as a JPEG) + a dotted name + a truncated
    JPEG; val 4 crops each."""
    from PIL import Image

    photos = sample_photos()
    n = 0
    for split, count in (("train", 8), ("val", 4)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo = photos[(c + i) % 2]
                h, w = 40 + (17 * n) % 110, 48 + (29 * n) % 130
                top, left = (37 * n) % (photo.shape[0] - h), (53 * n) % (photo.shape[1] - w)
                (d / f"{i:03d}.jpg").write_bytes(_jpeg(photo, top, left, h, w))
                n += 1
    Image.fromarray(photos[0][:60, :70]).save(root / "train" / "bee" / "003.png")
    (root / "train" / "cow" / "img.v2.jpg").write_bytes(_jpeg(photos[1], 100, 100, 64, 64))
    whole = _jpeg(photos[1], 200, 300, 120, 150)
    (root / "train" / "cow" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def packed(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    pack_folder(folder, out, SHARD_SIZE)
    return out


def source(folder: Path, split: str) -> Counter:
    return Counter((p.read_bytes(), CLASSES.index(p.parent.name)) for p in (folder / split).glob("*/*"))


def records(ds: ShardedDataset, epoch: int = 0, workers: int = 1) -> list:
    return [r for w in range(workers) for r in ds.records(epoch, w, workers)]


def keys(stream) -> list[str]:
    return [r.key for r in stream]


def copy(packed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(packed, tmp_path / "copy"))


def test_pack_round_trips_bytes_labels_and_index(folder, packed):
    index = json.loads((packed / "index.json").read_text())
    assert index["classes"] == CLASSES and index["version"] == 2
    for split in ("train", "val"):
        got = records(ShardedDataset(packed, split, train=False, decode=False))
        assert all(r.error is None and "." not in r.key for r in got)
        assert len({r.key for r in got}) == len(got)
        assert Counter((r.data, r.label) for r in got) == source(folder, split)  # bytes unchanged, labels right
        entry = index["splits"][split]
        assert entry["samples"] == len(got) == sum(s["samples"] for s in entry["shards"])
        assert entry["bytes"] == sum(s["bytes"] for s in entry["shards"])
        for shard in entry["shards"]:
            data = (packed / shard["name"]).read_bytes()
            assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
            with tarfile.open(packed / shard["name"]) as tar:
                members = tar.getmembers()
                assert len(members) == 2 * shard["samples"]
                assert shard["offsets"] == [m.offset for m in members[::2]]  # each sample's first header
    assert index["samples"] == 27 + 12
    train_keys = {r.key for r in records(ShardedDataset(packed, "train", decode=False))}
    assert {"0001_003", "0001_003_2", "0002_img_v2", CORRUPT} <= train_keys
    assert not list(packed.glob(".*"))  # no temporary files left


def test_pack_again_is_identical_and_split_only_keeps_the_other(folder, packed, tmp_path):
    first = json.loads((packed / "index.json").read_text())
    out = tmp_path / "again"
    pack_folder(folder, out, SHARD_SIZE)
    assert json.loads((out / "index.json").read_text()) == first  # reproducible: same bytes, same checksums
    pack_folder(folder, out, 10**9, split="val")  # one big val shard replaces the small ones
    index = json.loads((out / "index.json").read_text())
    assert index["splits"]["train"] == first["splits"]["train"] and len(index["splits"]["val"]["shards"]) == 1
    assert sorted(p.name for p in out.glob("val-*")) == ["val-000000.tar"]


def test_shards_are_split_by_size_and_mix_classes(packed):
    index = json.loads((packed / "index.json").read_text())
    for split in ("train", "val"):
        shards = index["splits"][split]["shards"]
        assert len(shards) > 4
        assert all(s["bytes"] <= SHARD_SIZE or s["samples"] == 1 for s in shards)
    by_shard: dict[str, set] = {}
    for r in records(ShardedDataset(packed, "train", train=False, decode=False)):
        by_shard.setdefault(r.shard, set()).add(r.label)
    mixed = [len(v) for v in by_shard.values()]
    assert max(mixed) >= 2


def test_one_sample_over_the_limit_gets_its_own_shard(folder, tmp_path):
    index = pack_folder(folder, tmp_path / "tiny", 1, split="val")
    shards = index["splits"]["val"]["shards"]
    assert len(shards) == 12 and all(s["samples"] == 1 for s in shards)


def test_ranks_and_workers_see_training_samples_at_most_once_and_all_but_a_global_batch(packed):
    everything = set(keys(records(ShardedDataset(packed, "train", train=False, decode=False))))
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            ds = ShardedDataset(packed, "train", seed=3, world_size=2, rank=rank, decode=False, shuffle_buffer=4,
                                batch_size=2)
            seen += keys(records(ds, epoch, workers=3))
            assert ds.rank_samples() == 27 // 4 * 2  # 6 steps of the global batch 4 = 2 ranks x 2
        assert len(seen) == len(set(seen)) == 24 and set(seen) <= everything


def test_evaluation_streams_cover_each_validation_sample_once(packed):
    everything = keys(records(ShardedDataset(packed, "val", decode=False)))
    assert len(everything) == 12
    for world in (1, 2, 3):
        for workers in (1, 2):
            seen = [k for rank in range(world)
                    for k in keys(records(ShardedDataset(packed, "val", world_size=world, rank=rank, decode=False),
                                          workers=workers))]
            assert sorted(seen) == sorted(everything)


def test_same_seed_and_epoch_same_stream_other_epoch_other_order(packed):
    def stream(seed: int, epoch: int) -> list[str]:
        ds = ShardedDataset(packed, "train", seed=seed, world_size=2, rank=1, decode=False, shuffle_buffer=5,
                            batch_size=2)
        return keys(ds.rank_stream(epoch, num_workers=2))

    a = stream(0, 0)
    assert a == stream(0, 0)
    assert stream(0, 1) != a
    assert stream(1, 0) != a


def test_every_batch_is_full_and_resume_skips_exactly_the_consumed_samples(packed):
    ds = ShardedDataset(packed, "train", seed=5, world_size=2, rank=0, decode=False, shuffle_buffer=3, batch_size=3)
    for workers in (1, 2, 4):
        batches = list(ds.rank_batches(2, num_workers=workers))
        full = [r.key for b in batches for r in b]
        assert len(full) == ds.rank_samples() == 12 and all(len(b) == 3 for b in batches)
        for done in range(len(batches) + 1):
            assert keys(ds.rank_stream(2, num_workers=workers, consumed=3 * done)) == full[3 * done:]


def test_dataloader_workers_deliver_the_rank_stream_and_resume_exactly(packed):
    ds = ShardedDataset(packed, "train", seed=5, world_size=2, rank=1, decode=False, shuffle_buffer=3, batch_size=2)
    batches = list(ds.rank_batches(1, num_workers=2))
    expected = [r.key for b in batches for r in b]

    def load(consumed: int) -> list[str]:
        ds.set_epoch(1, consumed)
        loader = DataLoader(ds, batch_size=None, num_workers=2, collate_fn=list)  # the stream yields batches
        return [r.key for batch in loader for r in batch]

    assert load(0) == expected
    assert all(len(b) == 2 for b in batches)
    for i in (1, len(batches) - 2):  # the second worker's turn next; late in the epoch
        consumed = sum(len(b) for b in batches[:i])
        assert load(consumed) == expected[consumed:]


def test_unreadable_jpeg_is_counted_and_skipped_with_its_name(packed):
    ds = ShardedDataset(packed, "train", image_size=24, train=False)
    with pytest.warns(CorruptSampleWarning, match=rf"train-\d{{6}}\.tar:{CORRUPT}: corrupt image"):
        samples = list(ds)
    assert ds.skipped == 1 and len(samples) == len(ds) - 1
    marked = ShardedDataset(packed, "train", image_size=24, train=False, mark_skipped=True)
    bad = [x for x, _ in marked if isinstance(x, Skipped)]
    assert len(bad) == 1 and bad[0].name.endswith(CORRUPT) and marked.skipped == 1


def test_truncated_shard_member_is_counted_and_skipped(packed, tmp_path):
    root = copy(packed, tmp_path)
    index = json.loads((root / "index.json").read_text())
    shard = next(s for s in index["splits"]["val"]["shards"] if s["samples"] >= 2)
    path = root / shard["name"]
    with tarfile.open(path) as tar:
        image = tar.getmembers()[-2]  # cut into the last sample's image: its key is known, the samples before it kept
    path.write_bytes(path.read_bytes()[: image.offset_data + image.size // 2])
    shard["bytes"] = path.stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    key = image.name.partition(".")[0]
    ds = ShardedDataset(root, "val", train=False, decode=False)
    with pytest.warns(CorruptSampleWarning, match=rf"{shard['name']}:{key}: truncated or damaged tar member"):
        got = list(ds.stream(0))
    assert ds.skipped == 1 and len(got) == 11 and key not in keys(got)


def test_shard_of_the_wrong_size_or_missing_is_a_recipe_error(packed, tmp_path):
    root = copy(packed, tmp_path)
    with open(root / "train-000002.tar", "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(RecipeError, match=r"train-000002\.tar: shard is \d+ bytes, index\.json says \d+"):
        ShardedDataset(root, "train")
    (root / "val-000001.tar").unlink()
    with pytest.raises(RecipeError, match=r"val-000001\.tar: shard missing"):
        ShardedDataset(root, "val")
    with pytest.raises(RecipeError, match="index.json: not found"):
        ShardedDataset(tmp_path, "val")


def test_decoded_samples_are_uint8_chw_of_the_requested_size(packed):
    train = ShardedDataset(packed, "train", image_size=32, shuffle_buffer=8)
    val = ShardedDataset(packed, "val", image_size=40)
    with pytest.warns(CorruptSampleWarning):
        for ds, size in ((train, 32), (val, 40)):
            for image, label in ds.stream(0):
                assert image.dtype == torch.uint8 and image.shape == (3, size, size) and 0 <= label < 3
    first = next(train.stream(0))[0]
    assert torch.equal(first, next(train.stream(0))[0])  # per-sample augmentation seeded by (seed, epoch, key)
    assert not torch.equal(first, next(ShardedDataset(packed, "train", image_size=32, shuffle_buffer=1,
                                                      seed=9).stream(0))[0])


def test_reads_through_fsspec_uris(packed):
    fs = fsspec.filesystem("memory")
    for p in packed.iterdir():
        fs.pipe(f"/bigbatch-test/{p.name}", p.read_bytes())
    try:
        remote = keys(records(ShardedDataset("memory://bigbatch-test", "val", decode=False)))
        assert remote == keys(records(ShardedDataset(packed, "val", decode=False)))
        assert inspect("memory://bigbatch-test", verify=True)["splits"]["val"]["samples"] == 12
        fs.pipe("/bigbatch-test/val-000000.tar", b"short")
        with pytest.raises(RecipeError, match="memory://bigbatch-test/val-000000.tar: shard is 5 bytes"):
            ShardedDataset("memory://bigbatch-test", "val")
    finally:
        fs.rm("/bigbatch-test", recursive=True)


def test_inspect_folder_and_shards(folder, packed, tmp_path):
    report = inspect(folder)
    assert report["kind"] == "folder"
    assert report["splits"]["train"]["per_class"] == {"ant": 8, "bee": 9, "cow": 10}
    sizes = report["splits"]["val"]["images"]
    assert sizes["sampled"] == 12 and sizes["width"]["min"] >= 48 and sizes["height"]["max"] <= 150
    report = inspect(packed, verify=True)
    assert report["kind"] == "shards" and report["splits"]["val"]["per_class"] == {"ant": 4, "bee": 4, "cow": 4}
    assert all(r["sha256_ok"] and r["problem"] is None for s in report["splits"].values() for r in s["shards"])
    assert report["splits"]["train"]["images"]["sampled"] == 27
    assert inspect(packed, sample=5)["splits"]["train"]["images"]["sampled"] == 5
    assert "sha256: " in format_inspect(report) and "train: 27 samples in" in format_inspect(report)
    root = copy(packed, tmp_path)
    data = bytearray((root / "val-000000.tar").read_bytes())
    data[600] ^= 0xFF  # same size, other bytes: only --verify sees it
    (root / "val-000000.tar").write_bytes(bytes(data))
    assert inspect(root)["splits"]["val"]["shards"][0]["problem"] is None
    bad = inspect(root, verify=True)["splits"]["val"]["shards"][0]
    assert bad["sha256_ok"] is False and bad["problem"] == "sha256 differs"


def test_a_format_1_index_without_offsets_reads_the_same_samples_and_says_how_to_repack(packed, tmp_path):
    root = copy(packed, tmp_path)
    index = json.loads((root / "index.json").read_text())
    index["version"] = 1
    for entry in index["splits"].values():
        for shard in entry["shards"]:
            del shard["offsets"]
    (root / "index.json").write_text(json.dumps(index))
    for rank in range(2):
        old = ShardedDataset(root, "train", seed=2, world_size=2, rank=rank, decode=False, batch_size=2)
        new = ShardedDataset(packed, "train", seed=2, world_size=2, rank=rank, decode=False, batch_size=2)
        assert keys(old.rank_stream(1, num_workers=2)) == keys(new.rank_stream(1, num_workers=2))
        assert new.layout_warning(2) is None
        warning = old.layout_warning(2)
        assert "format-1 index" in warning and f"bigbatch data pack SOURCE_FOLDER {root}" in warning
        assert "\n" not in warning
