"""bench/virtual_ranks.py: one process whose BatchNorm and Batch Renorm behave as 8 unsynced DDP ranks of 4
images do (bench/procedures.py part 2), checked against 8 real gloo ranks; accumulating 8 micro-batches of 4,
what the bench did before, is not the same."""

from pathlib import Path

import pytest
import torch

from bench.virtual_ranks import PerRankNorm, emulate_unsynced_ranks
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.gloo import spawn_gloo

NORMS = {"batch": [], "batch_renorm": ["model.renorm={start_step: 0, r_max_step: 1, d_max_step: 1}"]}
COMMON = ["train.max_steps=4", "train.eval_every_epochs=0", "train.log_every_steps=4", "optim.warmup_epochs=0",
          "bn.sync=none", "track.noise_scale=false"]


def _eight_ranks(rank: int, world: int, recipe_path: str, run_dir: str) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    torch.set_num_threads(1)
    for norm, extra in NORMS.items():
        recipe = load_recipe(Path(recipe_path), [*COMMON, f"model.norm={norm}", *extra, "cluster.backend=torch",
                                                 f"cluster.workers={world}", "data.batch_size=4"])
        Trainer(recipe, Path(run_dir) / norm, TorchDistributedCollective()).fit()


def one_process(recipe_path: Path, norm: str, run_dir: Path, emulate: bool) -> dict:
    shape = ["data.batch_size=32"] if emulate else ["data.batch_size=4", "train.accumulation_steps=8"]
    recipe = load_recipe(recipe_path, [*COMMON, f"model.norm={norm}", *NORMS[norm], *shape])
    trainer = Trainer(recipe, run_dir, LocalCollective())
    if emulate:
        assert emulate_unsynced_ranks(trainer.model, 8) > 0
    trainer.fit()
    for parent in list(trainer.model.modules()):  # back to the plain layers: the 8 ranks' state-dict keys
        for name, child in list(parent.named_children()):
            if isinstance(child, PerRankNorm):
                setattr(parent, name, child.norm)
    return trainer.model.state_dict()


def differs(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-5)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_process_normalises_as_eight_unsynced_ranks_of_four(tiny, tmp_path):
    spawn_gloo(_eight_ranks, 8, str(tiny), str(tmp_path / "ranks"))
    for norm in NORMS:
        ranks = torch.load(tmp_path / "ranks" / norm / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]
        emulated = one_process(tiny, norm, tmp_path / f"emulated-{norm}", emulate=True)
        assert set(emulated) == set(ranks) and differs(ranks, emulated) == [], norm
        accumulated = one_process(tiny, norm, tmp_path / f"accumulated-{norm}", emulate=False)
        moved = [k for k in differs(ranks, accumulated) if "running" in k or "num_batches" in k]
        assert moved, norm  # accumulation moves the statistics 8 times a step: not what 8 ranks do
        if norm == "batch_renorm":  # and r, d read statistics already moved: the weights differ too
            assert any("running" not in k for k in differs(ranks, accumulated))
