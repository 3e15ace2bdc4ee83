"""Training on packed shards: the loop streams them, evaluation covers every sample once, resume is exact."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.images import write_packed_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_packed_shards(tmp_path_factory.mktemp("shards"), 40_000, classes=3, per_class=8, val_per_class=3,
                               size=(96, 128))


def run(tiny, shards, run_dir, steps, resume=None, loader_workers=0):
    recipe = load_recipe(tiny, ["data.name=shards", f"data.root={shards}", "data.image_size=32",
                                "data.batch_size=4", f"data.loader_workers={loader_workers}", "model.name=resnet_small",
                                "train.epochs=3", f"train.max_steps={steps}", "train.eval_every_epochs=0",
                                "train.log_every_steps=1"])
    return Trainer(recipe, run_dir, LocalCollective(), resume=resume).fit()


@pytest.mark.parametrize("loader_workers", [0, 3])
def test_shard_training_resumes_mid_epoch_bitwise_and_evaluates_every_sample(tiny, shards, tmp_path,
                                                                             loader_workers):
    index = json.loads((shards / "index.json").read_text())
    assert len(index["splits"]["train"]["shards"]) > 1  # really several shards
    straight = run(tiny, shards, tmp_path / "a", 9, loader_workers=loader_workers)
    # stops inside the first epoch (24 samples / 4 = 6 steps); with 3 loader workers, on the second's turn
    run(tiny, shards, tmp_path / "b", 4, loader_workers=loader_workers)
    resumed = run(tiny, shards, tmp_path / "b", 9, resume="auto", loader_workers=loader_workers)
    assert straight["step"] == resumed["step"] == 9
    a = torch.load(tmp_path / "a" / "checkpoints" / "step_00000009.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "step_00000009.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    evaluation = [r for r in records if "top1" in r and "event" not in r][-1]
    assert evaluation["examples"] == index["splits"]["val"]["samples"] == 9
