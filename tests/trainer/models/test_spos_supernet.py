"""The SPOS supernet (Guo et al. 2019): one path per step from (seed, step), within a multiply-add range by
the authors' bins, and no update at all for the blocks off the path."""

import json

import numpy as np
import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models import create_model
from bigbatch.trainer.models.complexity import count_macs
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo

SUPERNET = """
seed: 3
model: {name: spos_supernet, kwargs: {stage_channels: [24, 32, 48, 64]}}
data: {name: digits, batch_size: 16}
train: {epochs: 1, log_every_steps: 1, eval_every_epochs: 0, progress_bar: false}
optim: {name: sgd, base_lr: 0.1, momentum: 0.9, weight_decay: 0.001, exclude_norm_and_bias: false,
        warmup_epochs: 0, schedule: constant}
cluster: {workers: 1, backend: local}
"""


def independent_macs(choices: list[int], image_size: int) -> int:
    """The catalogue's counter on the stand-alone network of that path (built on the meta device)."""
    with torch.device("meta"):
        net = create_model("spos", num_classes=10, in_chans=3, image_size=image_size, choices=choices)
    return count_macs(net, 3, image_size)


def test_a_steps_path_depends_on_seed_and_step_only_and_stays_in_the_range_by_an_independent_count():
    kwargs = dict(num_classes=10, image_size=32, macs_range_m=[24, 30])
    one, two = create_model("spos_supernet", **kwargs), create_model("spos_supernet", **kwargs)
    paths = [one.draw_path(7, step, 32) for step in range(8)]
    assert paths == [two.draw_path(7, step, 32) for step in range(8)]  # another process / rank: the same
    assert len({tuple(p) for p in paths}) == 8 and paths != [one.draw_path(8, s, 32) for s in range(8)]
    for path in paths:
        assert 24e6 <= independent_macs(path, 32) <= 30e6


def test_the_bin_of_a_step_is_uniform_over_the_authors_equal_bins():
    net = create_model("spos_supernet", num_classes=10, image_size=32, macs_range_m=[24, 29], macs_bins=5)
    edges = np.linspace(24e6, 29e6, 6)
    macs = [net.path_macs(net.draw_path(0, step, 32), 32) for step in range(500)]
    counts = np.histogram(macs, bins=edges)[0]
    assert counts.sum() == 500 and counts.min() >= 70, counts  # 100 expected per bin; uniform paths would pile
    # into the middle bins: the space's distribution of multiply-adds is a sum of 20 independent choices
    free = create_model("spos_supernet", num_classes=10, image_size=32)
    unrestricted = np.histogram([free.path_macs(free.draw_path(0, s, 32), 32) for s in range(500)], bins=edges)[0]
    assert unrestricted[2] > 2 * unrestricted[0], unrestricted


def test_a_training_step_moves_the_path_and_leaves_every_other_block_untouched(write, tmp_path):
    """The authors set exactly-zero gradients to None so that momentum and weight decay skip those blocks."""
    trainer = Trainer(load_recipe(write("s.yaml", SUPERNET), ["train.max_steps=1"]), tmp_path, LocalCollective())
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.fit()
    path = trainer.model.draw_path(3, 0, trainer.parts.data.image_size)
    assert trainer.model.path == path
    state = trainer.optimizer.state
    for name, p in trainer.model.named_parameters():
        parts = name.split(".")
        on_path = parts[0] != "blocks" or int(parts[2]) == path[int(parts[1])]
        if on_path:
            assert not torch.equal(p, before[name]), name
            assert "momentum_buffer" in state[p], name
        else:
            assert torch.equal(p, before[name]), name
            assert not state.get(p), name


def _record_paths(rank: int, world: int, recipe_path: str, out: str) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    trainer = Trainer(load_recipe(recipe_path, ["train.max_steps=3", "cluster.backend=torch", "cluster.workers=2",
                                   "data.batch_size=8"]),
                      out, TorchDistributedCollective("cpu"))
    paths = []
    trainer.model.register_forward_pre_hook(lambda module, args: paths.append(list(module.path))
                                            if module.training else None)
    trainer.fit()
    (trainer.run_dir / f"paths_{rank}.json").write_text(json.dumps(paths))
    torch.save(trainer.model.state_dict(), trainer.run_dir / f"weights_{rank}.pt")


@pytest.mark.timeout(120)
def test_every_rank_trains_the_same_path_under_ddp_without_find_unused_parameters(write, tmp_path):
    spawn_gloo(_record_paths, 2, str(write("s.yaml", SUPERNET)), str(tmp_path))
    paths = [json.loads((tmp_path / f"paths_{r}.json").read_text()) for r in range(2)]
    net = create_model("spos_supernet", num_classes=10, image_size=8, stage_channels=[24, 32, 48, 64])
    assert paths[0] == paths[1] == [net.draw_path(3, step, 8) for step in range(3)]
    weights = [torch.load(tmp_path / f"weights_{r}.pt", weights_only=True) for r in range(2)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


@pytest.mark.parametrize("override, message", [
    ("train.compile=true", "train.compile: the supernet trains another path every step"),
    ("model.head=bilinear", "model.head: the supernet draws its path itself"),
])
def test_settings_that_would_hide_the_path_are_refused(write, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write("s.yaml", SUPERNET), [override])


@pytest.mark.parametrize("kwargs, message", [
    (dict(macs_range_m=[30, 24]), r"macs_range_m: expected \[low, high\]"),
    (dict(macs_range_m=[1, 2]), r"macs_range_m: \[1, 2\] holds no path .* span \d+\.\d+-\d+\.\d+M"),
    (dict(macs_bins=0), "macs_bins: expected a positive integer"),
])
def test_bad_supernet_settings_name_the_key(kwargs, message):
    with pytest.raises(RecipeError, match=message):
        create_model("spos_supernet", num_classes=10, image_size=32, **kwargs)
