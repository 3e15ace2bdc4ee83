"""Ranks that share a global batch unevenly (issue 30): 3 gloo ranks taking 22, 21 and 21 of 64 examples a step
train what one process with the batch of 64 trains, a run resized from 4 ranks to 3 mid-run too, and
cross-replica BatchNorm over the uneven ranks normalises as BatchNorm over the 64."""

import json
from pathlib import Path

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo
from tests.trainer.run.test_elastic import ELASTIC

# test_elastic's recipe (mlp: no BatchNorm) on 4 workers: G = 4 x 16 = 64; noise scale off (its measurement on
# uneven steps is tests/trainer/step/test_noise_in_loop.py's)
UNEVEN = ELASTIC.replace("workers: 2,", "workers: 4,") + "track: {noise_scale: false}\n"
SYNCED = ["model.name=resnet_small", "model.kwargs={widths: [8, 16, 16]}", "bn.sync=all", "train.max_steps=1"]


def _ranks(rank: int, world: int, path: str, out: str) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    torch.set_num_threads(1)
    recipe = load_recipe(Path(path), ["train.max_steps=4"])
    if world == 4:  # the first 2 steps of the resized run
        Trainer(load_recipe(Path(path), ["train.max_steps=2"]), Path(out) / "resized", TorchDistributedCollective()).fit()
        return
    Trainer(recipe, Path(out) / "three", TorchDistributedCollective()).fit()
    Trainer(recipe, Path(out) / "resized", TorchDistributedCollective(), resume="auto").fit()
    Trainer(load_recipe(Path(path), SYNCED), Path(out) / "synced", TorchDistributedCollective()).fit()


def weights(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


def one_process(path: Path, run_dir: Path, overrides: list[str]) -> dict:
    recipe = load_recipe(path, [*overrides, "cluster.workers=1", "cluster.min_workers=0", "data.batch_size=64"])
    return Trainer(recipe, run_dir, LocalCollective()).fit()


def test_three_uneven_ranks_and_a_resize_from_four_train_what_one_process_with_the_batch_trains(write, tmp_path):
    path = write("u.yaml", UNEVEN)
    spawn_gloo(_ranks, 4, str(path), str(tmp_path))
    spawn_gloo(_ranks, 3, str(path), str(tmp_path))
    one_process(path, tmp_path / "one", ["train.max_steps=4"])
    reference = weights(tmp_path / "one", 4)
    for run in ("three", "resized"):
        other = weights(tmp_path / run, 4)
        for name, tensor in reference.items():
            torch.testing.assert_close(other[name], tensor, rtol=0, atol=1e-5, msg=f"{run}: {name}")
    records = [json.loads(line) for line in (tmp_path / "three" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and "event" not in r]
    assert {(r["world_size"], r["global_batch"], r["accumulation_steps"]) for r in steps} == {(3, 64, 2)}
    one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in one if "loss" in r and "event" not in r]
    assert [r["loss"] for r in steps] == [pytest.approx(loss, rel=1e-5) for loss in losses]  # the global mean, by count

    # one process with 2 micro-steps of 32: the ranks' blocks are 11 + 11 + 10 and 11 + 10 + 11 (shares.py)
    recipe = load_recipe(path, [*SYNCED, "cluster.workers=1", "cluster.min_workers=0", "data.batch_size=32",
                                "train.accumulation_steps=2"])
    Trainer(recipe, tmp_path / "synced-one", LocalCollective()).fit()
    reference, synced = weights(tmp_path / "synced-one", 1), weights(tmp_path / "synced", 1)
    for name, tensor in reference.items():  # weights: the gradient; running statistics: the forward
        torch.testing.assert_close(synced[name].double(), tensor.double(), rtol=1e-4, atol=1e-5, msg=name)

