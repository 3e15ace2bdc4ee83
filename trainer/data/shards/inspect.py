"""`bigbatch data inspect`: counts per class, image sizes from headers, and each shard's health."""

import hashlib
import io
import os
import random
import statistics
import tarfile
from pathlib import Path
from typing import Any

from bigbatch.trainer.data.folder import scan
from bigbatch.trainer.data.shards.index import (
    IMAGE_EXTENSIONS,
    INDEX,
    SPLITS,
    TRUNCATED,
    filesystem,
    join,
    read_index,
    split_member,
)
from bigbatch.trainer.errors import RecipeError


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
                key, ext = split_member(member.name)
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
    fs, base = filesystem(root, storage_options)
    classes = index["classes"]
    report: dict[str, Any] = {"kind": "shards", "path": root, "classes": classes, "splits": {}}
    for split, entry in index["splits"].items():
        every = max(1, -(-entry["samples"] // sample))
        stats, labels, shards, n = _SizeStats(), [], [], 0
        for shard in entry["shards"]:
            path = join(base, shard["name"])
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
