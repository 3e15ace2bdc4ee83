"""Multi-worker training through Ray Train on a real local Ray instance with gloo process groups."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from bigbatch.cluster.launch import launch
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


def final_model(run_dir) -> dict:
    (path,) = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1:]
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_workers_with_sync_bn_equal_one_worker_with_the_double_batch_and_their_checkpoint_resumes_on_one(
        ray_cluster, tiny, tmp_path):
    common = ["train.eval_every_epochs=0", "optim.warmup_epochs=0"]
    # storage on another file system (tmpfs) gets a real copy of each checkpoint
    shared = Path(tempfile.mkdtemp(prefix="bigbatch-storage-", dir="/dev/shm"))
    assert shared.stat().st_dev != tmp_path.stat().st_dev, "needs /dev/shm on another file system"
    try:
        summary = launch(load_recipe(tiny, [*common, "train.max_steps=6", "cluster.backend=torch",
                                            "cluster.workers=2", "bn.sync=all", "data.batch_size=16",
                                            f"cluster.storage_path={shared}"]), tmp_path / "two")
        (reported,) = shared.rglob("step_00000006.pt")  # Ray's copy went to cluster.storage_path
        assert reported.read_bytes() == (tmp_path / "two" / "checkpoints" / "step_00000006.pt").read_bytes()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert summary["world_size"] == 2 and summary["global_batch"] == 32 and summary["step"] == 6
    Trainer(load_recipe(tiny, [*common, "train.max_steps=6", "data.batch_size=32"]), tmp_path / "one",
            LocalCollective()).fit()
    two, one = final_model(tmp_path / "two"), final_model(tmp_path / "one")
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key].float(), one[key].float(), rtol=0, atol=1e-5, msg=key)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["world_size"] == 2
    assert len({r["run_id"] for r in records if "run_id" in r}) == 1
    steps = [r for r in records if "loss" in r]
    assert steps and all(len(r["worker_step_s"]) == len(r["worker_comm_s"]) == 2 for r in steps)
    assert all(0 < r["worker_wait_s"][k] <= r["worker_step_s"][k] and r["worker_comm_s"][k] > 0
               for r in steps for k in (0, 1))
    assert all(r["slowest_rank"] in (0, 1) for r in steps)

    # the two workers' checkpoint resumes in one process, at the same example
    saved = torch.load(tmp_path / "two" / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert saved["world_size"] == 2 and saved["sampler"]["offset"] == 6 * 32
    summary = launch(load_recipe(tiny, [*common, "data.batch_size=32", "train.max_steps=8"]), tmp_path / "two",
                     resume="auto")
    assert summary["world_size"] == 1 and summary["step"] == 8


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_recipe_error_inside_workers_keeps_its_exit_code(ray_cluster, tiny, tmp_path):
    from bigbatch.trainer.errors import TrainingFailed

    recipe = load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=2", "optim.base_lr=1e30",
                                "optim.warmup_epochs=0"])
    with pytest.raises(TrainingFailed, match="non-finite loss at step"):
        launch(recipe, tmp_path / "nf")


def test_ray_storage_copies_checkpoints_only_to_another_file_system(tmp_path):
    from bigbatch.cluster.ray_launch import same_file_system

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert same_file_system(str(run_dir / "ray"), run_dir)  # the default, not created yet
    assert same_file_system(f"file://{tmp_path}/elsewhere/deeper", run_dir)
    assert not same_file_system("s3://bucket/runs", run_dir)
    if Path("/dev/shm").is_dir() and Path("/dev/shm").stat().st_dev != run_dir.stat().st_dev:
        assert not same_file_system("/dev/shm/bigbatch-storage", run_dir)
