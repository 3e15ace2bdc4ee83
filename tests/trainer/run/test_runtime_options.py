"""Per-step seeding, graceful stop through the STOP file, a grow through the GROW file, channels_last and
torch.compile."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.checkpoint import seed_step
from bigbatch.trainer.run.loop import Interrupted, Preempted, Trainer
from bigbatch.trainer.run.stop import GROW_FILE, request_grow, request_stop


def trainer(recipe_path, run_dir, overrides=()) -> Trainer:
    return Trainer(load_recipe(recipe_path, ["train.eval_every_epochs=0", *overrides]), run_dir, LocalCollective())


def test_step_seeds_differ_between_ranks_and_steps_and_repeat_exactly():
    def draw(seed, step, rank):
        seed_step(seed, step, rank)
        return torch.rand(8)

    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    others = [draw(0, 5, 0), draw(0, 6, 1), draw(1, 5, 1)]
    assert all(not torch.equal(draw(0, 5, 1), other) for other in others)


def test_a_stop_file_ends_the_run_after_the_step_that_saw_it_with_a_checkpoint(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    request_stop(run_dir)
    with pytest.raises(Interrupted) as stopped:  # not at the next log step (10): one process reads it at once
        trainer(tiny, run_dir, ["train.max_steps=20", "train.log_every_steps=10"]).fit()
    assert stopped.value.signum == 15 and stopped.value.checkpoint.name == "step_00000001.pt"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == 1
    assert torch.load(stopped.value.checkpoint, weights_only=True)["step"] == 1


ELASTIC_ONE = ["cluster.backend=torch", "cluster.workers=2", "cluster.min_workers=1", "cluster.max_failures=1",
               "train.max_steps=6", "train.log_every_steps=10"]


def test_a_grow_request_ends_the_attempt_after_the_next_step_with_a_checkpoint_and_a_stale_one_is_dropped(
        tiny, tmp_path):
    """The driver's NodeWatch asks an elastic group of 1 (here: restartable, one process) to come back with 2:
    the group checkpoints after the step that read the request and ends the attempt for Ray to restart it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    request_grow(run_dir, 2)
    grower = Trainer(load_recipe(tiny, ["train.eval_every_epochs=0", *ELASTIC_ONE]), run_dir, LocalCollective(),
                     restartable=True)
    with pytest.raises(Preempted, match="the cluster grew: every rank checkpointed at step 1; the group restarts "
                                        "with up to 2 workers"):
        grower.fit()
    assert torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)["step"] == 1
    assert not (run_dir / GROW_FILE).exists()  # taken once
    failed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert failed["event"] == "attempt_failed" and "the cluster grew" in failed["error"]

    request_grow(run_dir, 1)  # no more than the group has: dropped, the run resumes and finishes
    summary = Trainer(load_recipe(tiny, ["train.eval_every_epochs=0", *ELASTIC_ONE]), run_dir, LocalCollective(),
                      resume="auto", restartable=True).fit()
    assert summary["status"] == "finished" and summary["step"] == 6 and not (run_dir / GROW_FILE).exists()


def test_a_grow_request_to_a_fixed_group_is_not_a_leave(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    request_grow(run_dir, 2)
    summary = trainer(tiny, run_dir, ["train.max_steps=3"]).fit()
    assert summary["status"] == "finished" and summary["step"] == 3


def test_channels_last_trains_the_same_weights(tiny, tmp_path):
    runs = {}
    for name, flag in (("nchw", "false"), ("nhwc", "true")):
        trainer(tiny, tmp_path / name, ["train.max_steps=3", f"train.channels_last={flag}"]).fit()
        runs[name] = torch.load(tmp_path / name / "checkpoints" / "step_00000003.pt", weights_only=True)["model"]
    convs = [value for value in runs["nhwc"].values() if value.dim() == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # a real NHWC layout, not a 1-channel no-op
    for key, value in runs["nchw"].items():
        torch.testing.assert_close(runs["nhwc"][key].contiguous(), value, rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_torch_compile_trains_like_eager(tiny, tmp_path):
    common = ["model.name=mlp", "model.kwargs={}", "train.max_steps=2", "train.log_every_steps=1"]
    losses = {}
    for flag in ("false", "true"):
        trainer(tiny, tmp_path / flag, [*common, f"train.compile={flag}"]).fit()
        losses[flag] = [r["loss"] for r in map(json.loads, (tmp_path / flag / "metrics.jsonl").read_text()
                                                .splitlines()) if "loss" in r]
    assert len(losses["true"]) == 2
    assert losses["true"] == pytest.approx(losses["false"], abs=1e-4)
