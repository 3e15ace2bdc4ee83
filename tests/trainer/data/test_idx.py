"""IDX files (MNIST, Fashion-MNIST): the format read from its definition, errors, and the Debian data set."""

import gzip
import struct

import pytest
import torch

from bigbatch.trainer.data.idx import FASHION_MNIST_ROOT, read_idx
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


def idx_bytes(dims: tuple[int, ...], data: bytes, type_code: int = 0x08) -> bytes:
    """An IDX file as LeCun's page defines it: 0, 0, type, ndim, big-endian uint32 sizes, then the data."""
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def test_reads_what_the_format_defines_gzipped_or_not(tmp_path):
    pixels = bytes(range(2 * 3 * 4))
    (tmp_path / "a").write_bytes(idx_bytes((2, 3, 4), pixels))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes((2, 3, 4), pixels)))
    for name in ("a", "a.gz"):
        array = read_idx(tmp_path / name, 3)
        assert array.shape == (2, 3, 4) and array[1, 2, 3] == 23 and array[0, 1, 0] == 4


@pytest.mark.parametrize("content, message", [
    (idx_bytes((2, 3), bytes(6)), "with 3 dimensions"),
    (idx_bytes((2, 3, 4), bytes(24), type_code=0x0D), "unsigned bytes"),
    (idx_bytes((2, 3, 4), bytes(20)), "truncated or corrupt"),
    (b"\x00\x00", "magic 0000"),
])
def test_malformed_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=message) as error:
        read_idx(path, 3)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_fashion_mnist_from_debian_trains(tiny, tmp_path):
    recipe = load_recipe(tiny, ["data.name=fashion_mnist", "model.name=mlp", "model.kwargs={}", "train.max_steps=20",
                                "train.eval_every_epochs=0", "data.batch_size=64", "train.log_every_steps=1"])
    trainer = Trainer(recipe, tmp_path / "run", LocalCollective())
    data = trainer.parts.data
    assert (len(data.train), len(data.val), data.image_size, data.num_classes) == (60000, 10000, 28, 10)
    assert data.classes[9] == "Ankle boot"
    counts = torch.bincount(data.val.labels, minlength=10)
    assert torch.equal(counts, torch.full((10,), 1000))  # the test split is balanced: 1,000 per class
    summary = trainer.fit()
    assert summary["step"] == 20 and summary["top1"] > 0.5  # 20 steps of an MLP already beat chance (0.1)


def test_a_missing_fashion_mnist_says_how_to_install_it(tiny, tmp_path):
    from bigbatch.trainer.data import load_data

    recipe = load_recipe(tiny, ["data.name=fashion_mnist", f"data.root={tmp_path}"])
    with pytest.raises(RecipeError, match="IDX file not found"):
        load_data(recipe.data, 0)
    assert FASHION_MNIST_ROOT == "/usr/share/datasets/fashion-mnist"
