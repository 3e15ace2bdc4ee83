"""Image data sets as sharded tar streams in the WebDataset layout, one job per module:

- index.py: the directory format (index.json, tar members of a sample) and reading samples back;
- pack.py: `bigbatch data pack`, a folder of images into shards;
- plan.py: which samples each rank and loader worker reads in an epoch (pure arithmetic);
- stream.py: the IterableDataset that follows the plan, with exact resume;
- inspect.py: `bigbatch data inspect`.

Why shards: a folder of a million small files is slow to list and to read from
network storage; a few hundred ~1 GB tar files read sequentially are not, and
any fsspec URI (s3://, gs://, http://, local) can hold them.
"""

from bigbatch.trainer.data.shards.index import (
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    CorruptSampleWarning,
    Record,
    check_shards,
    read_index,
    read_shard,
)
from bigbatch.trainer.data.shards.inspect import format_inspect, inspect
from bigbatch.trainer.data.shards.pack import PACK_SEED, pack_folder, sample_key
from bigbatch.trainer.data.shards.stream import ShardedDataset, load_shard_splits

__all__ = ["FORMAT", "FORMAT_VERSION", "INDEX", "PACK_SEED", "CorruptSampleWarning", "Record", "ShardedDataset",
           "check_shards", "format_inspect", "inspect", "load_shard_splits", "pack_folder",
           "read_index", "read_shard", "sample_key"]
