"""Restart cost at scale: resuming, rank 0 reads and verifies the checkpoint (one read of the file) and
broadcasts its bytes; the other ranks never open it (at W = 1,024 ranks a ResNet-50 checkpoint read by every
rank is about 0.25 TB of reads of one file). Measured as bytes each process reads from files
(/proc/self/io rchar, less what gloo's sockets bring: they are received with recv, not read) on real gloo
processes."""

import hashlib

import pytest
import torch

from tests.gloo import spawn_gloo

BIG = ["model.name=resnet_small", "model.kwargs={widths: [64, 128, 256]}", "train.eval_every_epochs=0"]


def bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def fingerprint(state: dict) -> str:
    """One digest of a loaded checkpoint's tensors and numbers, equal on ranks holding equal states."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        digest.update(value.numpy().tobytes() if isinstance(value, torch.Tensor) else repr(value).encode())
    return digest.hexdigest()


def _load_on_every_rank(rank: int, world: int, directory: str, size: int, expected: str) -> None:
    from pathlib import Path

    import torch.distributed as dist

    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.run.checkpoint import CheckpointDir
    from bigbatch.trainer.run.resume import load_checkpoint

    collective = TorchDistributedCollective("cpu")
    checkpoints = CheckpointDir(Path(directory))
    for resume in ("auto", str(checkpoints.path_for(2))):
        dist.barrier()
        before = bytes_read()
        path, state = load_checkpoint(resume, checkpoints, collective)
        read = bytes_read() - before
        assert path == checkpoints.path_for(2)
        assert fingerprint(state) == expected, f"rank {rank} loaded another state ({resume})"
        if rank == 0:
            assert size <= read <= 1.1 * size, f"rank 0 read {read} bytes for a {size}-byte checkpoint ({resume})"
        else:
            assert read < 0.05 * size, f"rank {rank} read {read} bytes of a {size}-byte checkpoint ({resume})"
        del state


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_only_rank_0_reads_the_checkpoint_and_every_rank_gets_its_state(tmp_path):
    from bigbatch.trainer.run.checkpoint import CheckpointDir

    generator = torch.Generator().manual_seed(0)
    state = {"model": torch.randn(2_000_000, generator=generator), "step": 2, "best_top1": 0.5}
    checkpoints = CheckpointDir(tmp_path / "checkpoints")
    checkpoints.directory.mkdir()
    checkpoints.save({**state, "step": 1, "model": torch.zeros(3)}, 1)
    path = checkpoints.save(state, 2)
    spawn_gloo(_load_on_every_rank, 4, str(checkpoints.directory), path.stat().st_size, fingerprint(state))


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
    if rank == 0:
        assert size <= read <= 1.2 * size, f"rank 0 read {read} bytes for a {size}-byte checkpoint"
    else:
        assert read < 0.05 * size, f"rank {rank} read {read} bytes of a {size}-byte checkpoint"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_trainer_resumes_with_one_read_of_the_checkpoint(tiny, tmp_path):
    from bigbatch.trainer.distributed.collective import LocalCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    run_dir = tmp_path / "run"
    Trainer(load_recipe(tiny, [*BIG, "data.batch_size=32", "train.max_steps=2"]), run_dir, LocalCollective()).fit()
    size = (run_dir / "checkpoints" / "step_00000002.pt").stat().st_size
    assert size > 5_000_000  # large enough that the checkpoint dominates what a rank reads
    spawn_gloo(_resume_twice, 2, str(tiny), str(run_dir), size)
