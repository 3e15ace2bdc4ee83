"""Restart cost at scale: resuming, rank 0 verifies the checkpoint (one read) and the other ranks read it
once each after learning which one it is - measured as bytes read by each process (/proc/self/io rchar),
on 2 real gloo processes; before, every rank read every candidate twice (hash, then load)."""

import pytest

from tests.gloo import spawn_gloo

BIG = ["model.name=resnet_small", "model.kwargs={widths: [64, 128, 256]}", "train.eval_every_epochs=0"]


def bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _resume_twice(rank: int, world: int, tiny: str, run_dir: str, size: int) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer
    from bigbatch.trainer.run.resume import load_checkpoint

    recipe = load_recipe(tiny, [*BIG, "cluster.backend=torch", "cluster.workers=2", "data.batch_size=16", "train.max_steps=4"])
    trainer = Trainer(recipe, run_dir, TorchDistributedCollective("cpu"), resume="auto")
    assert trainer.step == 2 and trainer.resumed_from.name == "step_00000002.pt"
    before = bytes_read()
    load_checkpoint("auto", trainer.checkpoints, trainer.collective)
    read = bytes_read() - before
    assert size <= read <= 1.2 * size, f"rank {rank} read {read} bytes for a {size}-byte checkpoint"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_each_rank_reads_the_checkpoint_once(tiny, tmp_path):
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    run_dir = tmp_path / "run"
    Trainer(load_recipe(tiny, [*BIG, "data.batch_size=32", "train.max_steps=2"]), run_dir, LocalCollective()).fit()
    size = (run_dir / "checkpoints" / "step_00000002.pt").stat().st_size
    assert size > 5_000_000  # large enough that the checkpoint dominates what a rank reads
    spawn_gloo(_resume_twice, 2, str(tiny), str(run_dir), size)
