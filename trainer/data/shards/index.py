"""The shard directory's format: index.json, the tar members of a sample, and reading samples back.

Layout (OUT/): SPLIT-000000.tar, SPLIT-000001.tar, ... and index.json. A sample
is the group of consecutive tar members sharing a key (the member name up to its
first dot): KEY.jpg (or .png, ...: the source file's bytes, unchanged) and
KEY.cls (the class index as ASCII text). index.json records the classes and,
per split, each shard's name, sample count, byte size, sha256 and (format 2)
`offsets`: the byte offset of each sample's first tar header, so a reader can
start at any sample with one seek (a range request on an object store) instead
of reading the shard from its start. Format 1 indexes (no offsets) are still
read: a reader skips the samples before its start by reading them.
"""

import json
import os
import tarfile
from collections.abc import Iterator
from typing import NamedTuple

from bigbatch.trainer.errors import RecipeError

FORMAT = "bigbatch-webdataset"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
INDEX = "index.json"
SPLITS = ("train", "val")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp")
TRUNCATED = "truncated or damaged tar member"


class CorruptSampleWarning(UserWarning):
    """A sample that could not be read (corrupt image, truncated tar member) and was skipped."""


class Record(NamedTuple):
    """One sample as stored: its shard, key, label and encoded image bytes (error set when unreadable)."""

    shard: str
    key: str
    label: int
    data: bytes
    error: str | None = None


def join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def filesystem(root: str, storage_options: dict | None):
    import fsspec

    return fsspec.core.url_to_fs(root, **(storage_options or {}))


def read_index(root: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """index.json of a shard directory (local path or fsspec URI), checked for format and version."""
    import fsspec

    uri = join(str(root), INDEX)
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            index = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{uri}: not found (a shard directory written by `bigbatch data pack`)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RecipeError(f"{uri}: not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise RecipeError(f"{uri}: not a bigbatch shard index (format should be {FORMAT!r})")
    if index.get("version") not in READABLE_VERSIONS:
        raise RecipeError(f"{uri}: index version {index.get('version')!r}; this bigbatch reads "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
    return index


def check_shards(root: str | os.PathLike, shards: list[dict], storage_options: dict | None = None) -> None:
    """Every shard present with the byte size the index records (a cheap listing; no data is read)."""
    fs, base = filesystem(str(root), storage_options)
    try:
        listing = {os.path.basename(e["name"]): e.get("size") for e in fs.ls(base, detail=True)}
    except (OSError, NotImplementedError):
        listing = {}
    for shard in shards:
        uri = join(str(root), shard["name"])
        size = listing.get(shard["name"])
        if size is None:
            try:
                size = fs.size(join(base, shard["name"]))
            except FileNotFoundError:
                size = None
        if size is None:
            raise RecipeError(f"{uri}: shard missing (listed in {INDEX})")
        if size != shard["bytes"]:
            raise RecipeError(f"{uri}: shard is {size} bytes, {INDEX} says {shard['bytes']} (truncated or "
                              f"replaced; pack again)")


def split_member(name: str) -> tuple[str, str]:
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


def read_shard(fs, path: str, name: str, num_classes: int, start: int = 0, count: int | None = None,
               offsets=None) -> Iterator[Record]:
    """Samples start.. of one tar (at most `count`), streamed from one seek to `offsets[start]` (each
    sample's byte offset; needed when start > 0). A truncated or damaged tail ends the stream with one
    Record carrying the error."""
    if count is not None and count <= 0:
        return
    if start and offsets is None:
        raise ValueError(f"{path}: reading from sample {start} needs the samples' byte offsets")
    try:
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise RecipeError(f"{path}: shard missing (listed in {INDEX})") from None
    if start:
        f.seek(int(offsets[start]))
    key, members, reading, emitted = None, {}, None, 0
    with f:
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    k, ext = split_member(member.name)
                    if k != key and key is not None:
                        yield _record(name, key, members, num_classes)
                        emitted += 1
                        if count is not None and emitted >= count:
                            return
                        members = {}
                    key = reading = k
                    members[ext] = tar.extractfile(member).read()
                    reading = None
        except (tarfile.TarError, EOFError, OSError) as e:
            last = _record(name, key, members, num_classes) if reading is None and key is not None else None
            if last is not None and last.error is None:  # the damage is past the last whole sample: keep it
                yield last
                emitted += 1
                if count is not None and emitted >= count:
                    return
            yield Record(name, reading or f"(after {key or 'the start'})", -1, b"", f"{TRUNCATED} ({e})")
            return
    if key is not None:
        yield _record(name, key, members, num_classes)
