"""Image data sets as sharded tar streams in the WebDataset layout: pack a folder, stream it back, inspect it.

Why: a folder of a million small files is slow to list and to read from network
storage; a few hundred ~1 GB tar files read sequentially are not, and any
fsspec URI (s3://, gs://, http://, local) can hold them.

Layout (OUT/): SPLIT-000000.tar, SPLIT-000001.tar, ... and index.json. A
sample is the group of consecutive tar members sharing a key (the member name
up to its first dot): KEY.jpg (or .png, ... : the source file's bytes,
unchanged) and KEY.cls (the class index as ASCII text). Keys are
`{class_index:04d}_{file stem}` with anything but [A-Za-z0-9_-] replaced by
`_` (no dots), made unique by a numeric suffix. Training samples are written in
one fixed shuffle so every shard mixes classes. index.json records the classes,
and per split each shard's name, sample count, byte size and sha256.

Training order (ShardedDataset with train=True): each epoch the shard list is
shuffled from (seed, epoch); rank r takes every world_size-th shard from r,
and DataLoader worker w of W every W-th of those; each worker streams its
shards in turn through a shuffle buffer seeded by (seed, epoch, rank, worker).
This is NOT the global permutation of trainer.data.order that the in-memory and
folder data sets use: the order depends on the world size and the number of
loader workers, and ranks get whole shards, so their sample counts differ
(`rank_samples` gives them; a synchronous trainer runs min(...) // batch
steps). A rank's stream is what its DataLoader delivers: batches of
`batch_size` from the workers in turn (the DataLoader's in-order round-robin),
a worker dropping out when its shards end. Resume mid-epoch replays the epoch's
shard stream and skips the recorded number of samples this rank already
consumed: `worker_skips` splits that count among the workers by the
round-robin, each worker discards its share without decoding it, and the
workers are rotated so the one whose turn was next runs as the new loader's
worker 0. So resume at a batch boundary is exact for the same world size, loader
workers and batch size. The worker stream lengths come from the index: a sample
dropped as unreadable shortens its worker's stream and can shift the
round-robin near the end of an epoch; with `mark_skipped=True` such samples are
yielded as loader.Skipped markers instead (`loader.collate` drops and reports
them), hold their place, and the count stays exact.

Evaluation (train=False): no shuffle; shard i goes to rank i % world_size and
then round-robin to that rank's workers, so every validation sample is
evaluated exactly once across ranks, without padding or duplicates.
"""

import hashlib
import io
import json
import os
import random
import re
import statistics
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import IterableDataset, get_worker_info

from trainer.data.base import DataSplits
from trainer.data.decode import CorruptImage, decode_eval, decode_train
from trainer.data.folder import scan
from trainer.data.order import epoch_permutation
from trainer.errors import RecipeError

FORMAT = "bigbatch-webdataset"
FORMAT_VERSION = 1
INDEX = "index.json"
SPLITS = ("train", "val")
PACK_SEED = 0  # the fixed shuffle of training samples in the shards
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp")
_BLOCK, _RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE


class CorruptSampleWarning(UserWarning):
    """A sample that could not be read (corrupt image, truncated tar member) and was skipped."""


class Record(NamedTuple):
    """One sample as stored: its shard, key, label and encoded image bytes (error set when unreadable)."""

    shard: str
    key: str
    label: int
    data: bytes
    error: str | None = None


# ---------------------------------------------------------------------------------------------- packing


def sample_key(class_index: int, path: str | os.PathLike) -> str:
    """The sample's key before de-duplication: class index and the file stem, with no dots or odd characters."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem) or "_"
    return f"{class_index:04d}_{stem}"


def _unique_keys(samples: list[tuple[str, int]]) -> list[str]:
    seen: set[str] = set()
    keys = []
    for path, label in samples:
        base = key = sample_key(label, path)
        n = 1
        while key in seen:
            n += 1
            key = f"{base}_{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member header that depends only on name and size, so shards (and their checksums) are reproducible."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info


def _member_bytes(info: tarfile.TarInfo) -> int:
    header = len(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    return header + -(-info.size // _BLOCK) * _BLOCK


def _archive_bytes(members: int) -> int:
    """File size of a tar holding `members` bytes of headers + data: two zero blocks, padded to a record."""
    return -(-(members + 2 * _BLOCK) // _RECORD) * _RECORD


class _HashingWriter:
    """File wrapper that hashes and counts what tarfile writes, so a shard is read once, not twice."""

    def __init__(self, f):
        self.f, self.sha256, self.n = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha256.update(b)
        self.f.write(b)
        self.n += len(b)
        return len(b)

    def tell(self) -> int:
        return self.n


class _ShardWriter:
    """Writes SPLIT-NNNNNN.tar under a temporary name; renamed into place when closed."""

    def __init__(self, out: Path, split: str, number: int):
        self.name = f"{split}-{number:06d}.tar"
        self.path, self.tmp = out / self.name, out / f".{self.name}.tmp"
        self.file = open(self.tmp, "wb")
        self.writer = _HashingWriter(self.file)
        self.tar = tarfile.open(fileobj=self.writer, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        self.samples, self.members = 0, 0

    def add(self, members: list[tuple[tarfile.TarInfo, bytes]], size: int) -> None:
        for info, data in members:
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self.members += size

    def close(self) -> dict:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return {"name": self.name, "samples": self.samples, "bytes": self.writer.n,
                "sha256": self.writer.sha256.hexdigest()}


def _pack_split(samples: list[tuple[str, int]], split: str, out: Path, shard_size_bytes: int) -> dict:
    keys = _unique_keys(samples)
    order = range(len(samples))
    if split == "train":  # one fixed shuffle, so each shard mixes classes
        order = epoch_permutation(PACK_SEED, 0, len(samples)).tolist()
    shards: list[dict] = []
    writer: _ShardWriter | None = None
    try:
        for i in order:
            path, label = samples[i]
            data = Path(path).read_bytes()
            ext = Path(path).suffix.lower().lstrip(".").replace("jpeg", "jpg")
            cls = str(label).encode("ascii")
            members = [(_tarinfo(f"{keys[i]}.{ext}", len(data)), data), (_tarinfo(f"{keys[i]}.cls", len(cls)), cls)]
            size = sum(_member_bytes(info) for info, _ in members)
            if writer is not None and writer.samples and _archive_bytes(writer.members + size) > shard_size_bytes:
                shards.append(writer.close())
                writer = None
            if writer is None:
                writer = _ShardWriter(out, split, len(shards))
            writer.add(members, size)
        if writer is not None:
            shards.append(writer.close())
            writer = None
    finally:
        if writer is not None:  # an error mid-shard: leave no temporary file behind
            writer.file.close()
            writer.tmp.unlink(missing_ok=True)
    return {"shards": shards, "samples": sum(s["samples"] for s in shards), "bytes": sum(s["bytes"] for s in shards)}


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pack_folder(src: Path, out: Path, shard_size_bytes: int, split: str | None = None) -> dict:
    """Pack SRC/{train,val}/CLASS/* into OUT/SPLIT-NNNNNN.tar shards of at most `shard_size_bytes` (a sample
    larger than that gets a shard of its own) plus OUT/index.json, which is returned. Image bytes are copied,
    never re-encoded. The old index is removed first and the new one written last, so a pack that stops half
    way leaves no index that could be mistaken for a complete data set; with `split`, the other split's
    entries of an existing index with the same classes are kept."""
    src, out = Path(src), Path(out)
    if shard_size_bytes <= 0:
        raise RecipeError(f"shard_size_bytes: must be positive, got {shard_size_bytes}")
    if split is not None and split not in SPLITS:
        raise RecipeError(f"{src}: split: must be one of {', '.join(SPLITS)}, got {split!r}")
    if not src.is_dir():
        raise RecipeError(f"{src}: directory not found (expected train/CLASS/ and val/CLASS/ subdirectories)")
    splits = [split] if split else [s for s in SPLITS if (src / s).is_dir()]
    if not splits:
        raise RecipeError(f"{src}: neither train/ nor val/ found (expected SPLIT/CLASS/ subdirectories of images)")
    classes = scan(src / "train")[1] if (src / "train").is_dir() else None
    scanned = {}
    for s in splits:
        scanned[s], found = scan(src / s, classes)
        classes = classes or found
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    previous = _read_local_index(index_path) if split else None
    index_path.unlink(missing_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "classes": classes, "splits": {}}
    if previous and previous.get("classes") == classes:
        index["splits"] = {k: v for k, v in previous.get("splits", {}).items() if k not in splits}
    for s in splits:
        index["splits"][s] = _pack_split(scanned[s], s, out, shard_size_bytes)
    index["samples"] = sum(v["samples"] for v in index["splits"].values())
    index["bytes"] = sum(v["bytes"] for v in index["splits"].values())
    _write_json_atomic(index_path, index)
    for s in splits:  # shards left over from an earlier, larger pack of this split
        keep = {shard["name"] for shard in index["splits"][s]["shards"]}
        for stale in out.glob(f"{s}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
            if stale.name not in keep:
                stale.unlink()
    return index


def _read_local_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- reading


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _filesystem(root: str, storage_options: dict | None):
    import fsspec

    return fsspec.core.url_to_fs(root, **(storage_options or {}))


def read_index(root: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """index.json of a shard directory (local path or fsspec URI), checked for format and version."""
    import fsspec

    uri = _join(str(root), INDEX)
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            index = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{uri}: not found (a shard directory written by `bigbatch data pack`)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RecipeError(f"{uri}: not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise RecipeError(f"{uri}: not a bigbatch shard index (format should be {FORMAT!r})")
    if index.get("version") != FORMAT_VERSION:
        raise RecipeError(f"{uri}: index version {index.get('version')!r}; this bigbatch reads {FORMAT_VERSION}")
    return index


def check_shards(root: str | os.PathLike, shards: list[dict], storage_options: dict | None = None) -> None:
    """Every shard present with the byte size the index records (a cheap listing; no data is read)."""
    fs, base = _filesystem(str(root), storage_options)
    try:
        listing = {Path(e["name"]).name: e.get("size") for e in fs.ls(base, detail=True)}
    except (OSError, NotImplementedError):
        listing = {}
    for shard in shards:
        uri = _join(str(root), shard["name"])
        size = listing.get(shard["name"])
        if size is None:
            try:
                size = fs.size(_join(base, shard["name"]))
            except FileNotFoundError:
                size = None
        if size is None:
            raise RecipeError(f"{uri}: shard missing (listed in {INDEX})")
        if size != shard["bytes"]:
            raise RecipeError(f"{uri}: shard is {size} bytes, {INDEX} says {shard['bytes']} (truncated or "
                              f"replaced; pack again)")


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's convention: key = path up to the first dot of the file name, extension = the rest."""
    directory, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def _record(shard: str, key: str, members: dict[str, bytes], num_classes: int) -> Record:
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None:
        return Record(shard, key, -1, b"", "no image member")
    try:
        label = int(members["cls"].decode("ascii").strip())
    except (KeyError, ValueError, UnicodeDecodeError):
        return Record(shard, key, -1, image, "no valid .cls member")
    if not 0 <= label < num_classes:
        return Record(shard, key, label, image, f"class index {label} outside 0..{num_classes - 1}")
    return Record(shard, key, label, image)


TRUNCATED = "truncated or damaged tar member"


def read_shard(fs, path: str, name: str, num_classes: int) -> Iterator[Record]:
    """The samples of one tar, streamed; a truncated or damaged tail ends it with one Record carrying the error."""
    try:
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise RecipeError(f"{path}: shard missing (listed in {INDEX})") from None
    key, members, reading = None, {}, None
    with f:
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    k, ext = _split_member(member.name)
                    if k != key and key is not None:
                        yield _record(name, key, members, num_classes)
                        members = {}
                    key = reading = k
                    members[ext] = tar.extractfile(member).read()
                    reading = None
        except (tarfile.TarError, EOFError, OSError) as e:
            last = _record(name, key, members, num_classes) if reading is None and key is not None else None
            if last is not None and last.error is None:  # the damage is past the last whole sample: keep it
                yield last
            yield Record(name, reading or f"(after {key or 'the start'})", -1, b"", f"{TRUNCATED} ({e})")
            return
    if key is not None:
        yield _record(name, key, members, num_classes)


def _shuffled(records: Iterable[Record], size: int, rng: random.Random) -> Iterator[Record]:
    """A shuffle buffer: hold `size` records, emit a random one as each new one arrives, then the rest."""
    if size <= 1:
        yield from records
        return
    buffer: list[Record] = []
    for record in records:
        if len(buffer) < size:
            buffer.append(record)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = record
    rng.shuffle(buffer)
    yield from buffer


def worker_skips(consumed: int, lengths: list[int], batch_size: int) -> tuple[list[int], int]:
    """Where a rank stands after `consumed` samples of its DataLoader stream (batches of `batch_size` from
    workers 0, 1, ... in turn, a worker dropping out when its stream ends): how many samples each worker has
    delivered, and which worker delivers the next batch (a fresh DataLoader starts with its worker 0, so the
    resumed workers are rotated by that much)."""
    taken = [0] * len(lengths)
    active = [w for w, n in enumerate(lengths) if n > 0]
    remaining, turn = consumed, 0
    while remaining > 0 and active:
        w = active[turn]
        n = min(batch_size, lengths[w] - taken[w], remaining)
        taken[w] += n
        remaining -= n
        if taken[w] == lengths[w]:
            active.pop(turn)
        elif n == batch_size:
            turn += 1
        turn = turn % len(active) if active else 0
    return taken, active[turn] if active else 0


class ShardedDataset(IterableDataset):
    """Samples of one split of a shard directory, streamed: decoded (uint8 CHW, label) pairs, or `Record`s
    with decode=False. Shard assignment, shuffling and resume: see the module docstring. Set the epoch (and
    the samples this rank already consumed, when resuming) before creating each epoch's DataLoader iterator;
    persistent workers would not see the change."""

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 224, *,
                 train: bool | None = None, seed: int = 0, world_size: int = 1, rank: int = 0,
                 shuffle_buffer: int = 1000, batch_size: int = 1, decode: bool = True, mark_skipped: bool = False,
                 verify: bool = True, storage_options: dict | None = None):
        self.root, self.split, self.image_size = str(root), split, image_size
        self.train = split == "train" if train is None else train
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.shuffle_buffer, self.batch_size = shuffle_buffer, batch_size
        self.decode, self.mark_skipped, self.storage_options = decode, mark_skipped, storage_options
        self.epoch, self.consumed, self.skipped = 0, 0, 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        index = read_index(self.root, storage_options)
        if split not in index.get("splits", {}):
            raise RecipeError(f"{_join(self.root, INDEX)}: no {split!r} split (has: "
                              f"{', '.join(index.get('splits', {})) or 'none'})")
        self.classes: list[str] = index["classes"]
        self.shards: list[dict] = index["splits"][split]["shards"]
        self.num_samples: int = index["splits"][split]["samples"]
        if self.train and len(self.shards) < world_size:
            raise RecipeError(f"{_join(self.root, INDEX)}: {split} has {len(self.shards)} shards, fewer than "
                              f"{world_size} ranks; pack with a smaller --shard-size")
        if verify:
            check_shards(self.root, self.shards, storage_options)

    def __len__(self) -> int:
        """Samples in the whole split (all ranks), as the folder data set counts them."""
        return self.num_samples

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """The epoch to stream next and how many samples of it this rank has already consumed (resume)."""
        self.epoch, self.consumed = epoch, consumed

    def rank_shards(self, epoch: int, rank: int | None = None) -> list[dict]:
        """The shards a rank reads in `epoch`, in reading order."""
        rank = self.rank if rank is None else rank
        if not self.train:
            return self.shards[rank::self.world_size]
        order = epoch_permutation(self.seed, epoch, len(self.shards)).tolist()
        return [self.shards[i] for i in order[rank::self.world_size]]

    def rank_samples(self, epoch: int) -> list[int]:
        """Samples per rank in `epoch` as the index counts them (before any unreadable ones are skipped)."""
        return [sum(s["samples"] for s in self.rank_shards(epoch, r)) for r in range(self.world_size)]

    def worker_shards(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[dict]:
        return self.rank_shards(epoch)[worker::num_workers]

    def records(self, epoch: int, worker: int = 0, num_workers: int = 1) -> Iterator[Record]:
        """One worker's records in stream order (shuffle buffer applied when training), not decoded."""
        fs, base = _filesystem(self.root, self.storage_options)
        shards = self.worker_shards(epoch, worker, num_workers)
        stream = (r for s in shards for r in read_shard(fs, _join(base, s["name"]), s["name"], len(self.classes)))
        if not self.train:
            return stream
        rng = random.Random(f"{self.seed}:{epoch}:{self.rank}:{worker}")
        return _shuffled(stream, self.shuffle_buffer, rng)

    def stream(self, epoch: int, worker: int = 0, num_workers: int = 1, skip: int = 0) -> Iterator:
        """One worker's samples, after skipping its first `skip` (read from the tars, not decoded)."""
        records = self.records(epoch, worker, num_workers)
        for _ in zip(range(skip), records, strict=False):
            pass
        for record in records:
            sample = self._sample(record, epoch)
            if sample is not None:
                yield sample

    def rank_batches(self, epoch: int, num_workers: int = 1, consumed: int = 0) -> Iterator[list]:
        """This rank's batches in the order its DataLoader delivers them (`num_workers` workers, batches of
        `batch_size`, resumed after `consumed` samples), computed in this process: the reference for the order
        and for resume."""
        lengths = [sum(s["samples"] for s in self.worker_shards(epoch, w, num_workers)) for w in range(num_workers)]
        skips, first = worker_skips(consumed, lengths, self.batch_size)
        order = [(first + i) % num_workers for i in range(num_workers)]
        streams = {w: self.stream(epoch, w, num_workers, skips[w]) for w in order}
        while order:
            for w in list(order):
                batch = [x for _, x in zip(range(self.batch_size), streams[w], strict=False)]
                if batch:
                    yield batch
                if len(batch) < self.batch_size:
                    order.remove(w)

    def rank_stream(self, epoch: int, num_workers: int = 1, consumed: int = 0) -> Iterator:
        """`rank_batches`, one sample at a time."""
        return (x for batch in self.rank_batches(epoch, num_workers, consumed) for x in batch)

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lengths = [sum(s["samples"] for s in self.worker_shards(self.epoch, w, num_workers))
                   for w in range(num_workers)]
        skips, first = worker_skips(self.consumed, lengths, self.batch_size)
        logical = (first + worker) % num_workers  # the worker whose turn is next runs as the loader's worker 0
        return self.stream(self.epoch, logical, num_workers, skips[logical])

    def _sample(self, record: Record, epoch: int):
        error = record.error
        if error is None and not self.decode:
            return record
        if error is None:
            try:
                if self.train:
                    rng = random.Random(f"{self.seed}:{epoch}:{record.key}")
                    image = decode_train(record.data, self.image_size, rng)
                else:
                    image = decode_eval(record.data, self.image_size)
                return image, record.label
            except CorruptImage as e:
                error = f"corrupt image ({e})"
        self.skipped += 1
        name = f"{_join(self.root, record.shard)}:{record.key}"
        if self.mark_skipped and self.decode:
            from trainer.data.loader import Skipped

            return Skipped(name, error), record.label
        warnings.warn(f"skipping {name}: {error}", CorruptSampleWarning, stacklevel=2)
        return None


# ---------------------------------------------------------------------------------------------- inspecting


def _image_header(data: bytes) -> tuple[int, int]:
    """(width, height) from the file header only: simplejpeg for JPEGs, PIL (lazy) for the rest."""
    import simplejpeg

    if simplejpeg.is_jpeg(data):
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        return width, height
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height


class _SizeStats:
    def __init__(self):
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.unreadable: list[str] = []

    def add(self, name: str, data: bytes) -> None:
        try:
            w, h = _image_header(data)
        except Exception:  # simplejpeg and PIL raise several types for broken headers
            self.unreadable.append(name)
            return
        self.widths.append(w)
        self.heights.append(h)

    def summary(self) -> dict:
        def mmm(values: list[int]) -> dict | None:
            return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None

        return {"sampled": len(self.widths) + len(self.unreadable), "width": mmm(self.widths),
                "height": mmm(self.heights), "unreadable": len(self.unreadable),
                "unreadable_names": self.unreadable[:10]}


def _per_class(labels: list[int], classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for label in labels:
        name = classes[label] if 0 <= label < len(classes) else f"?{label}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _inspect_folder(root: Path, sample: int) -> dict:
    classes = scan(root / "train")[1] if (root / "train").is_dir() else None
    report: dict[str, Any] = {"kind": "folder", "path": str(root), "splits": {}}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        samples, found = scan(root / split, classes)
        classes = classes or found
        picked = samples if len(samples) <= sample else random.Random(0).sample(samples, sample)
        stats = _SizeStats()
        for path, _ in picked:
            try:
                stats.add(str(Path(path).relative_to(root)), Path(path).read_bytes())
            except OSError:
                stats.unreadable.append(str(Path(path).relative_to(root)))
        report["splits"][split] = {"samples": len(samples), "per_class": _per_class([s[1] for s in samples], classes),
                                   "images": stats.summary()}
    if not report["splits"]:
        raise RecipeError(f"{root}: neither train/ nor val/ nor {INDEX} found")
    report["classes"] = classes
    return report


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _scan_headers(fs, path: str, name: str, every: int, n: int, labels: list[int], stats: _SizeStats,
                  row: dict) -> int:
    """Labels and every `every`-th image of one shard, reading tar headers and seeking over the other images
    (no full read unless --verify). Returns the running image count."""
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                key, ext = _split_member(member.name)
                if not member.isfile():
                    continue
                if ext == "cls":
                    text = tar.extractfile(member).read()
                    labels.append(int(text) if text.strip().isdigit() else -1)
                elif ext in IMAGE_EXTENSIONS:
                    if n % every == 0:
                        stats.add(f"{name}:{key}", tar.extractfile(member).read())
                    n += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        row["problem"] = row["problem"] or f"{TRUNCATED} ({e})"
    return n


def _inspect_shards(root: str, verify: bool, sample: int, storage_options: dict | None) -> dict:
    index = read_index(root, storage_options)
    fs, base = _filesystem(root, storage_options)
    classes = index["classes"]
    report: dict[str, Any] = {"kind": "shards", "path": root, "classes": classes, "splits": {}}
    for split, entry in index["splits"].items():
        every = max(1, -(-entry["samples"] // sample))
        stats, labels, shards, n = _SizeStats(), [], [], 0
        for shard in entry["shards"]:
            path = _join(base, shard["name"])
            row = {"name": shard["name"], "samples": shard["samples"], "bytes": shard["bytes"], "problem": None,
                   "sha256_ok": None}
            try:
                size = fs.size(path)
            except FileNotFoundError:
                row["problem"] = "missing"
                shards.append(row)
                continue
            if size != shard["bytes"]:
                row["problem"] = f"{size} bytes, index says {shard['bytes']}"
            if verify:
                row["sha256_ok"] = _sha256(fs, path) == shard["sha256"]
                if not row["sha256_ok"] and row["problem"] is None:
                    row["problem"] = "sha256 differs"
            n = _scan_headers(fs, path, shard["name"], every, n, labels, stats, row)
            shards.append(row)
        report["splits"][split] = {"samples": entry["samples"], "bytes": entry["bytes"],
                                   "per_class": _per_class(labels, classes), "images": stats.summary(),
                                   "shards": shards}
    return report


def inspect(path: str | os.PathLike, verify: bool = False, sample: int = 1000,
            storage_options: dict | None = None) -> dict:
    """Counts per class and split, image sizes (from headers, at most `sample` images per split) of a folder
    data set or a shard directory; for shards also each shard's presence and size, and with `verify` whether
    its sha256 matches the index (that reads every byte, so it is asked for explicitly)."""
    root = str(path)
    local = "://" not in root
    if local and not Path(root).exists():
        raise RecipeError(f"{root}: not found")
    if local and not (Path(root) / INDEX).is_file():
        return _inspect_folder(Path(root), sample)
    return _inspect_shards(root, verify, sample, storage_options)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_inspect(report: dict) -> str:
    """The report as a few lines per split; problem shards named, healthy ones only summarised."""
    lines = [f"{report['kind']} {report['path']}: {len(report['classes'])} classes"]
    for split, s in report["splits"].items():
        counts = s["per_class"]
        head = f"{split}: {s['samples']} samples"
        if report["kind"] == "shards":
            head += f" in {len(s['shards'])} shards, {_human(s['bytes'])}"
        lines.append(head)
        if len(counts) <= 20:
            lines.append("  per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        else:
            low = min(counts, key=counts.get)
            lines.append(f"  per class: min {counts[low]} ({low}), median {statistics.median(counts.values()):g}, "
                         f"max {max(counts.values())}")
        im = s["images"]
        if im["width"]:
            w, h = im["width"], im["height"]
            lines.append(f"  image size ({im['sampled']} sampled, min/median/max): width {w['min']}/{w['median']:g}/"
                         f"{w['max']}, height {h['min']}/{h['median']:g}/{h['max']}")
        if im["unreadable"]:
            lines.append(f"  unreadable headers: {im['unreadable']} ({', '.join(im['unreadable_names'])})")
        if report["kind"] == "shards":
            sizes = [r["bytes"] for r in s["shards"]]
            lines.append(f"  shard size min/median/max: {_human(min(sizes))}/{_human(statistics.median(sizes))}/"
                         f"{_human(max(sizes))}")
            checked = [r for r in s["shards"] if r["sha256_ok"] is not None]
            if checked:
                good = sum(r["sha256_ok"] for r in checked)
                lines.append(f"  sha256: {good}/{len(checked)} shards match")
            for r in s["shards"]:
                if r["problem"]:
                    lines.append(f"  PROBLEM {r['name']}: {r['problem']}")
    return "\n".join(lines)



def load_shard_splits(root: str, seed: int, image_size: int, batch_size: int, shuffle_buffer: int,
                      world_size: int, rank: int) -> DataSplits:
    """Train and validation streams of a packed directory for one rank. The plan counts, per epoch, world size
    x the fewest samples any rank can be dealt (the floor(shards / world) smallest shards), so every rank has
    that many steps in every epoch whatever the shard shuffle gives it."""
    from trainer.data.decode import normalize_batch

    if not root:
        raise RecipeError("data.root: the shards data set needs data.root, the directory or URI of index.json")
    train = ShardedDataset(root, "train", image_size, train=True, seed=seed, world_size=world_size, rank=rank,
                           shuffle_buffer=shuffle_buffer, batch_size=batch_size, mark_skipped=True)
    val = ShardedDataset(root, "val", image_size, train=False, seed=seed, world_size=world_size, rank=rank,
                         batch_size=batch_size, mark_skipped=True, verify=False)
    counts = sorted(s["samples"] for s in train.shards)
    per_rank = sum(counts[:len(counts) // world_size])
    return DataSplits(train=train, val=val, num_classes=len(train.classes), channels=3, image_size=image_size,
                      classes=train.classes, normalize=normalize_batch, plan_examples=per_rank * world_size)
