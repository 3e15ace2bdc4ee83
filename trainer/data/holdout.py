"""`data.holdout`: a split of the TRAINING set that the run never trains on, for decisions (an architecture
search's scores, hyperparameter choices), so the test set (`val`) is scored only for the final report.

The split is fixed: the first N of one permutation drawn with seed 0 whatever the recipe's seed, so every
run of a search or a sweep holds out the same examples. Held-out examples are read like `val` (the folder
data set's evaluation crop, no augmentation).
"""

import copy

import torch

from bigbatch.trainer.data.base import DataSplits, InMemoryDataset
from bigbatch.trainer.errors import RecipeError

SPLIT_SEED = 0


def holdout_indices(num_examples: int, holdout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept for training, held out): sorted indices of the training set."""
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


def carve_holdout(splits: DataSplits, holdout: int) -> DataSplits:
    train = splits.train
    if not (isinstance(train, InMemoryDataset) or hasattr(train, "samples")):
        raise RecipeError("data.holdout: needs an indexed data set (digits, mnist, fashion_mnist, synthetic, "
                          "folder); streamed shards cannot set examples apart")
    if holdout >= len(train):
        raise RecipeError(f"data.holdout: {holdout} examples leave none to train on (the training set has "
                          f"{len(train)})")
    kept, held = holdout_indices(len(train), holdout)
    if isinstance(train, InMemoryDataset):
        new_train = InMemoryDataset(train.images[kept], train.labels[kept])
        held_out = InMemoryDataset(train.images[held], train.labels[held])
    else:  # an image folder: the same files, split; the held-out part is read as evaluation images
        new_train, held_out = copy.copy(train), copy.copy(splits.val)
        new_train.samples = [train.samples[i] for i in kept.tolist()]
        held_out.samples = [train.samples[i] for i in held.tolist()]
        for part in (new_train, held_out):  # a loader kept on the original reads the original's samples
            part.__dict__.pop("_persistent_loaders", None)
    return DataSplits(new_train, splits.val, splits.num_classes, splits.channels, splits.image_size,
                      splits.classes, splits.normalize, held_out)
