"""What an epoch of packed shards trains on at the users' scale: ImageNet-shaped indexes (1,281,167 samples
packed at 1 GB and 256 MB per shard), W = 8 ... 1,024 ranks, batch 32 per rank, 8 loader workers.

"before" is the rule bigbatch used until this change, restated here: each rank took whole shards, and an
epoch counted world x (the floor(shards / world) smallest shards) samples (0 shards per rank: refused).
"after" is counted by reading the plan of trainer/data/shards/plan.py sample by sample (simulate.epoch_reads).

    python bench/shard_coverage.py   (~1 min; writes bench/results/shard_coverage.md)
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigbatch.trainer.data.shards.simulate import IMAGENET_TRAIN, epoch_reads, packed_sizes  # noqa: E402

BATCH, LOADER_WORKERS = 32, 8


def before(sizes: list[int], world: int) -> float | None:
    per_rank = sum(sorted(sizes)[:len(sizes) // world])
    if per_rank == 0:
        return None
    steps = per_rank * world // (world * BATCH)
    return steps * world * BATCH / sum(sizes)


def main() -> None:
    started = time.time()
    lines = ["# Samples an epoch trains on, packed ImageNet (1,281,167), batch 32 per rank, 8 loader workers", "",
             "| shard size | shards | W | before | after | read twice |", "|---|---|---|---|---|---|"]
    for label, shard_bytes in (("1 GB", 10**9), ("256 MB", 256 * 10**6)):
        sizes = packed_sizes(IMAGENET_TRAIN, shard_bytes)
        for world in (8, 64, 256, 1024):
            reads = epoch_reads(sizes, 0, 0, world, BATCH, 1, LOADER_WORKERS)
            old = before(sizes, world)
            lines.append(f"| {label} | {len(sizes)} | {world} | "
                         f"{'refused (fewer shards than ranks)' if old is None else f'{old:.2%}'} | "
                         f"{(reads > 0).mean():.2%} | {(reads > 1).sum()} |")
    lines += ["", f"Command: `python bench/shard_coverage.py` ({time.time() - started:.0f} s)."]
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).parent / "results" / "shard_coverage.md").write_text(text)


if __name__ == "__main__":
    main()
