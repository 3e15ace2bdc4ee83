"""`bigbatch data pack` and `bigbatch data inspect`: turn a folder data set into tar shards, and look at either."""

import argparse
import json
import re
import sys
from pathlib import Path

from bigbatch.trainer.errors import RecipeError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str, option: str = "--shard-size") -> int:
    """'500MB', '1GB', '64KB', '1.5GiB', '4096' -> bytes (KB/MB/GB decimal, KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if unit is not None and unit not in _UNITS and unit + "B" in _UNITS:
        unit += "B"  # 500M, 1G, 64k
    if match is None or unit not in _UNITS:
        raise RecipeError(f"{option}: {text!r} is not a size (e.g. 500MB, 1GB, 64KB, 1GiB or a number of bytes)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise RecipeError(f"{option}: {text!r} must be more than 0 bytes")
    return size


def add_commands(sub, recipe_args) -> dict:
    """Register `data pack` and `data inspect` on `sub`; return {command: handler}."""
    data = sub.add_parser("data", help="pack a folder data set into WebDataset tar shards, or inspect one")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    pack = data_sub.add_parser("pack", help="write SRC/{train,val}/CLASS/* as OUT/SPLIT-NNNNNN.tar + index.json "
                                            "(image bytes copied, not re-encoded)")
    pack.add_argument("src", help="folder data set: SRC/train/CLASS/*.jpg, SRC/val/CLASS/*")
    pack.add_argument("out", help="shard directory to write")
    pack.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 500MB, 1GB, 64KB (default 1GB); "
                                                          "a larger single image gets a shard of its own")
    pack.add_argument("--split", choices=("train", "val"), help="pack only this split (default: both present)")
    inspect = data_sub.add_parser("inspect", help="counts per class and split, image sizes, shard sizes")
    inspect.add_argument("path", help="folder data set, or shard directory (local path or fsspec URI)")
    inspect.add_argument("--verify", action="store_true", help="also check every shard's sha256 (reads it all)")
    inspect.add_argument("--sample", type=int, default=1000, help="images per split whose headers are read "
                                                                  "for the size distribution (default 1000)")
    inspect.add_argument("--json", action="store_true", help="print the full report as JSON")
    return {"data": cmd_data}


def cmd_data(args: argparse.Namespace) -> int:
    from bigbatch.trainer.data import shards

    if args.data_command == "pack":
        size = parse_size(args.shard_size)
        index = shards.pack_folder(Path(args.src), Path(args.out), size, args.split)
        parts = [f"{split} {s['samples']} samples in {len(s['shards'])} shards ({s['bytes'] / 1e6:.1f} MB)"
                 for split, s in index["splits"].items()]
        print(f"bigbatch: packed {args.src} into {args.out}: {', '.join(parts)}; {len(index['classes'])} classes")
        return 0
    if args.sample < 1:
        raise RecipeError(f"--sample: must be at least 1, got {args.sample}")
    report = shards.inspect(args.path, verify=args.verify, sample=args.sample)
    print(json.dumps(report, indent=1) if args.json else shards.format_inspect(report))
    bad = [r for s in report["splits"].values() for r in s.get("shards", []) if r["problem"]]
    if bad:
        print(f"bigbatch: {len(bad)} damaged shard(s) in {args.path}, first {bad[0]['name']}: {bad[0]['problem']}",
              file=sys.stderr)
        return 2  # damaged input, like a bad recipe
    return 0
