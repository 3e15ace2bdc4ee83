"""The training loop: exact resume, accumulation, non-finite loss, precision."""

import json

import pytest
import torch

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


def run(recipe_path, run_dir, overrides=(), resume=None) -> dict:
    recipe = load_recipe(recipe_path, list(overrides))
    return Trainer(recipe, run_dir, LocalCollective("cpu"), resume=resume).fit()


def final_model(run_dir, step) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


@pytest.mark.parametrize("model", [
    ["model.name=resnet_small"],  # BatchNorm running stats, momentum buffers
    ["model.name=mlp", "model.kwargs={dropout: 0.3}"],  # dropout: the torch RNG must be restored
    # timm's procedures: the weight average, AGC, RMSProp in TensorFlow's form, Mixup/CutMix until epoch 1
    ["model.name=resnet_small", "train.ema.decay=0.9", "train.ema.warmup=true", "train.clip_grad=0.05",
     "train.clip_mode=agc", "optim.name=rmsproptf", "optim.base_lr=0.016", "train.mixup.alpha=0.2",
     "train.mixup.cutmix_alpha=1.0", "train.mixup.off_epoch=1", "train.label_smoothing=0.1"],
])
def test_resume_mid_epoch_is_bitwise_identical(tiny, tmp_path, model):
    # 44 steps per epoch: 25 is mid-epoch and 50 crosses an epoch boundary after resuming
    common = [*model, "train.epochs=2", "train.eval_every_epochs=0"]
    straight = run(tiny, tmp_path / "a", [*common, "train.max_steps=50"])
    run(tiny, tmp_path / "b", [*common, "train.max_steps=25"])
    resumed = run(tiny, tmp_path / "b", [*common, "train.max_steps=50"], resume="auto")
    assert straight["step"] == resumed["step"] == 50
    for part in ("model", "ema"):
        a, b = (torch.load(d / "checkpoints" / "step_00000050.pt", weights_only=True).get(part)
                for d in (tmp_path / "a", tmp_path / "b"))
        assert (a is None) == (b is None) and (a is not None or part == "ema")
        for key in a or {}:
            assert torch.equal(a[key], b[key]), (part, key)
    assert resumed["run_id"] == json.loads((tmp_path / "b" / "summary.json").read_text())["run_id"]
    steps = [r["step"] for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == sorted(set(steps)), "resumed metrics must not repeat steps"


def test_accumulation_equals_the_larger_batch_without_batchnorm(tiny, tmp_path):
    common = ["model.name=mlp", "model.kwargs={}", "train.max_steps=6", "train.eval_every_epochs=0"]
    run(tiny, tmp_path / "big", [*common, "data.batch_size=32"])
    run(tiny, tmp_path / "acc", [*common, "data.batch_size=16", "train.accumulation_steps=2"])
    a, b = final_model(tmp_path / "big", 6), final_model(tmp_path / "acc", 6)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def test_resume_from_corrupt_newest_falls_back(tiny, tmp_path, capsys):
    common = ["train.checkpoint_every_steps=5", "train.eval_every_epochs=0"]
    run(tiny, tmp_path / "r", [*common, "train.max_steps=12"])
    newest = tmp_path / "r" / "checkpoints" / "step_00000012.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    summary = run(tiny, tmp_path / "r", [*common, "train.max_steps=15"], resume="auto")
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "step_00000012.pt" in err and "truncated" in err
    assert "resumed from" in err and "step_00000010.pt" in err
    assert summary["step"] == 15


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path):
    bad = ["optim.base_lr=1e30", "optim.warmup_epochs=0", "train.checkpoint_every_steps=1"]
    with pytest.raises(TrainingFailed, match=r"non-finite loss at step 2 .*step_00000001\.pt"):
        run(tiny, tmp_path / "nf", bad)
    ckpt = torch.load(tmp_path / "nf" / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert not (tmp_path / "nf" / "checkpoints" / "step_00000002.pt").exists()


def test_nonfinite_skip_counts_and_gives_up_past_the_limit(tiny, tmp_path):
    bad = ["optim.base_lr=1e30", "optim.warmup_epochs=0", "train.on_nonfinite=skip", "train.max_skipped_steps=3"]
    with pytest.raises(TrainingFailed, match="4 steps skipped, more than train.max_skipped_steps=3"):
        run(tiny, tmp_path / "skip", bad)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains(tiny, tmp_path, precision):
    summary = run(tiny, tmp_path / precision, [f"train.precision={precision}", "train.max_steps=3"])
    assert summary["step"] == 3 and summary["top1"] is not None
    ckpt = torch.load(tmp_path / precision / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert ckpt["scaler"] == {} or ckpt["scaler"]["scale"] > 0


def test_checkpoint_contents(tiny, tmp_path):
    run(tiny, tmp_path / "c", ["train.max_steps=4"])
    ckpt = torch.load(tmp_path / "c" / "checkpoints" / "step_00000004.pt", weights_only=True)
    for key in ("model", "optimizer", "scaler", "rng", "step", "epoch", "step_in_epoch", "sampler", "schedule",
                "recipe", "run_id", "best_top1"):
        assert key in ckpt, key
    assert ckpt["step"] == 4 and ckpt["sampler"]["offset"] == 4 * 32
    assert ckpt["recipe"]["optim"]["base_lr"] == 0.2


def test_resume_with_another_global_batch_continues_at_the_same_example(tiny, tmp_path, capsys):
    common = ["train.eval_every_epochs=0", "model.name=mlp", "model.kwargs={}"]
    run(tiny, tmp_path / "r", [*common, "train.max_steps=5", "data.batch_size=32"])  # 5 x 32 = 160 examples
    before = torch.load(tmp_path / "r" / "checkpoints" / "step_00000005.pt", weights_only=True)
    assert before["sampler"] == {"seed": 0, "epoch": 0, "offset": 160}
    summary = run(tiny, tmp_path / "r", [*common, "train.max_steps=12", "data.batch_size=16"], resume="auto")
    assert "example 160 of the epoch -> step 10 (was step 5)" in capsys.readouterr().err
    assert summary["step"] == 12
    after = torch.load(tmp_path / "r" / "checkpoints" / "step_00000012.pt", weights_only=True)
    assert after["sampler"]["offset"] == 12 * 16 and after["global_batch"] == 16


def test_a_half_written_metrics_line_does_not_block_resume(tiny, tmp_path, capsys):
    common = ["train.eval_every_epochs=0", "train.checkpoint_every_steps=4"]
    run(tiny, tmp_path / "r", [*common, "train.max_steps=8"])
    metrics = tmp_path / "r" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 9, "loss": 0.5, "l')  # a crash mid-write: no closing brace, no newline
    summary = run(tiny, tmp_path / "r", [*common, "train.max_steps=12"], resume="auto")
    assert summary["step"] == 12
    assert "metrics.jsonl" in capsys.readouterr().err
    lines = metrics.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole again
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 12


@pytest.mark.parametrize("elastic", [False, True])
def test_a_signal_to_a_worker_stops_a_fixed_group_and_is_a_leave_in_an_elastic_one(tiny, tmp_path, elastic):
    """A spot node's SIGTERM reaches its own worker only: a fixed group stops with a checkpoint (exit 143); in an
    elastic run that Ray restarts, the worker leaves instead: the same checkpoint, then an error Ray retries
    without it. (On Ray, tests/cluster/test_fault_tolerance.py sends the signal to a real worker.)"""
    from signal import SIGTERM

    from bigbatch.trainer.run.loop import Interrupted, Preempted

    group = ["cluster.backend=torch", "cluster.workers=2", "data.batch_size=16",
             *(["cluster.min_workers=1"] if elastic else [])]
    trainer = Trainer(load_recipe(tiny, ["train.max_steps=10", *group]), tmp_path, LocalCollective(),
                      restartable=True)
    trainer.stop.signum, trainer.stop.by_signal = SIGTERM, True  # as the process handler records a signal
    with pytest.raises(Preempted if elastic else Interrupted, match="signal 15"):
        trainer.fit()
    summary = json.loads((tmp_path / "summary.json").read_text())
    # after the step it arrived in (one process: nobody to wait for), not the next log step (2)
    assert summary["step"] == 1 and (tmp_path / "checkpoints" / "step_00000001.pt").is_file()
    assert summary["status"] == ("restarting" if elastic else "interrupted")
