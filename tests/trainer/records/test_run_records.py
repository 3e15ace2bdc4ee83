"""What metrics.jsonl tells about a run beyond loss and lr: gradient norm, epoch time, hardware, failure."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.run_files import records


def fit(recipe_path, run_dir, overrides=()) -> dict:
    return Trainer(load_recipe(recipe_path, list(overrides)), run_dir, LocalCollective("cpu")).fit()


def test_logged_grad_norm_is_the_norm_of_the_step_taken_by_plain_sgd(tiny, tmp_path):
    # SGD without momentum or weight decay moves the weights by lr * g: ||w_k - w_(k-1)|| = lr_k * ||g_k||
    fit(tiny, tmp_path, ["optim.momentum=0", "optim.weight_decay=0", "train.max_steps=3",
                         "train.checkpoint_every_steps=1", "train.log_every_steps=1", "train.eval_every_epochs=0"])
    steps = {r["step"]: r for r in records(tmp_path) if "loss" in r}
    for k in (2, 3):
        before, after = (torch.load(tmp_path / "checkpoints" / f"step_{s:08d}.pt", weights_only=True)["model"]
                         for s in (k - 1, k))
        moved = [after[name] - before[name] for name in after if after[name].is_floating_point()
                 and "running_" not in name]
        expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in moved]))
        assert steps[k]["grad_norm"] == pytest.approx(expected.item() / steps[k]["lr"], rel=1e-4)


def test_every_finished_epoch_records_its_time_and_the_summary_names_the_hardware(tiny, tmp_path):
    summary = fit(tiny, tmp_path, ["train.epochs=2", "train.eval_every_epochs=2"])
    epochs = [r for r in records(tmp_path) if "epoch_time_s" in r]
    assert [r["epoch"] for r in epochs] == [1.0, 2.0]
    assert all(r["epoch_time_s"] > 0 for r in epochs)
    assert "top1" not in epochs[0] and "top1" in epochs[1]  # evaluated every 2nd epoch: merged into its record
    hardware = summary["hardware"]
    assert hardware["world_size"] == 1 and hardware["device_type"] == "cpu" and hardware["cpu_count"] >= 1
    start = next(r for r in records(tmp_path) if r.get("event") == "start")
    assert start["hardware"] == hardware
    assert json.loads((tmp_path / "summary.json").read_text())["hardware"] == hardware


def test_a_failed_run_says_so_in_its_summary_and_metrics(tiny, tmp_path):
    with pytest.raises(TrainingFailed):
        fit(tiny, tmp_path, ["optim.base_lr=1e30", "train.max_steps=20"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite loss" in summary["error"]
    assert records(tmp_path)[-1]["event"] == "failed"


def test_throughput_is_reported_per_worker_and_in_model_multiply_adds(tiny, tmp_path):
    # mlp on 8x8 digits: Linear(64 -> 128) and Linear(128 -> 10) are 64*128 + 128*10 multiply-adds per image
    summary = fit(tiny, tmp_path, ["model.name=mlp", "model.kwargs={hidden: 128}", "train.max_steps=4",
                                   "train.log_every_steps=2", "train.eval_every_epochs=0"])
    macs = 64 * 128 + 128 * 10
    assert summary["model_macs_per_image"] == macs
    assert summary["model_macs_per_s"] == pytest.approx(3 * macs * summary["images_per_s"])
    assert summary["images_per_s_per_worker"] == summary["images_per_s"]  # one worker
    steps = [r for r in records(tmp_path) if "loss" in r]
    assert steps and all(r["images_per_s_per_worker"] == r["images_per_s"] for r in steps)
