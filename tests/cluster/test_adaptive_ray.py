"""The adaptive batch on Ray: two gloo workers grow their batch under a step-time model whose fixed part
dominates, finish on digits at >= 95 % top-1, record each change with the predicted goodputs that justified it;
the run's checkpoint resumed on one worker re-plans the batch at once and records that the resize caused it."""

import json

import pytest

from bigbatch.cluster.launch import launch
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer

# 2 workers x 16 = G0 32, each worker's micro-batch against the global batch gives the noise scale (DDP's comm
# hook taps the local gradient). A step: 0.1 s + 0.6 ms per example per worker (assumed, not measured).
ADAPTIVE = ["cluster.backend=torch", "cluster.workers=2", "data.batch_size=16", "train.batch_policy=adaptive",
            "train.adaptive.max_batch=256", "train.adaptive.every_steps=4", "train.adaptive.min_readings=3",
            "train.adaptive.assume_step_s=0.1", "train.adaptive.assume_example_s=0.0006", "train.log_every_steps=2",
            "train.epochs=3", "train.checkpoint_every_steps=10", "train.keep_checkpoints=50", "optim.base_lr=0.1",
            "optim.reference_batch=32", "optim.warmup_epochs=0.5"]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_grow_their_batch_finish_and_a_resume_on_one_replans(ray_cluster, tiny, tmp_path):
    summary = launch(load_recipe(tiny, ADAPTIVE), tmp_path / "two")
    assert summary["world_size"] == 2 and summary["top1"] >= 0.95
    history = records(tmp_path / "two")
    changes = [r for r in history if r.get("event") == "batch_change"]
    assert changes and changes[0]["from"] == 32 and max(c["to"] for c in changes) > 32
    for change in changes:  # the goodputs that justified it: the chosen batch's, past the 1.05 margin
        predicted = {int(b): v for b, v in change["predicted_goodput"].items()}
        assert predicted[change["to"]] == max(predicted.values()) >= 1.05 * predicted[change["from"]]
    steps = [r for r in history if "loss" in r]
    assert {r["global_batch"] for r in steps} == {32} | {c["to"] for c in changes}
    assert all(len(r["worker_step_s"]) == 2 for r in steps)

    # one worker resumes the two workers' checkpoint after the first change: the policy looks at once
    after = min(int(p.stem.split("_")[1]) for p in (tmp_path / "two" / "checkpoints").glob("step_*.pt")
                if int(p.stem.split("_")[1]) > changes[0]["step"])
    one = load_recipe(tiny, [*ADAPTIVE, "cluster.workers=1", "cluster.backend=local", "data.batch_size=32"])
    resumed = Trainer(one, tmp_path / "one", LocalCollective("cpu"),
                      resume=str(tmp_path / "two" / "checkpoints" / f"step_{after:08d}.pt")).fit()
    assert resumed["world_size"] == 1
    replans = [r for r in records(tmp_path / "one") if r.get("event") == "batch_change"]
    assert replans[0]["why"].startswith("after a resize (2 -> 1 workers)")
    assert replans[0]["step"] <= after + 2  # the first log step after the resume
