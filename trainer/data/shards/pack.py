"""`bigbatch data pack`: a folder of images into tar shards plus index.json (layout: shards/index.py).

Training samples are written in one fixed shuffle (PACK_SEED) so every shard
mixes classes; keys are `{class_index:04d}_{file stem}` with anything but
[A-Za-z0-9_-] replaced by `_` (no dots), made unique by a numeric suffix. Shards
and index are reproducible byte for byte (member headers depend only on name and
size) and written atomically; the index, written last, records each sample's
byte offset so readers can start anywhere in a shard.
"""

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from bigbatch.trainer.atomic import atomic_open, write_json_atomic
from bigbatch.trainer.data.folder import scan
from bigbatch.trainer.data.order import epoch_permutation
from bigbatch.trainer.data.shards.index import FORMAT, FORMAT_VERSION, INDEX, SPLITS
from bigbatch.trainer.errors import RecipeError

PACK_SEED = 0  # the fixed shuffle of training samples in the shards
_BLOCK, _RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE


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
    """Writes SPLIT-NNNNNN.tar under a temporary name (trainer.atomic); renamed into place when closed, removed
    when aborted. Records each sample's byte offset for the index."""

    def __init__(self, out: Path, split: str, number: int):
        self.name = f"{split}-{number:06d}.tar"
        self._file = atomic_open(out / self.name, "wb")
        self.writer = _HashingWriter(self._file.__enter__())
        self.tar = tarfile.open(fileobj=self.writer, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        self.samples, self.members, self.offsets = 0, 0, []

    def add(self, members: list[tuple[tarfile.TarInfo, bytes]], size: int) -> None:
        self.offsets.append(self.writer.n)
        for info, data in members:
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self.members += size

    def close(self) -> dict:
        self.tar.close()
        self._file.__exit__(None, None, None)
        return {"name": self.name, "samples": self.samples, "bytes": self.writer.n,
                "sha256": self.writer.sha256.hexdigest(), "offsets": self.offsets}

    def abort(self) -> None:
        error = RuntimeError("pack aborted")
        self._file.__exit__(type(error), error, None)


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
            writer.abort()
    return {"shards": shards, "samples": sum(s["samples"] for s in shards), "bytes": sum(s["bytes"] for s in shards)}


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
    write_json_atomic(index_path, index, indent=None)
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
