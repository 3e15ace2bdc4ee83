"""An elastic run on packed shards resumed mid-epoch on fewer workers (issue 29, item 1), on real Ray: it keeps
its global batch, 15, which the 2 workers it resumes on share unevenly as 8 and 7 (issue 30), and every
example of the interrupted epoch is trained on exactly once across the resize, counted from the labels each
rank wrote as it trained (one class per example); evaluation on 3 and on 2 workers scores every validation
sample once."""

import json
from collections import Counter

import pytest
import torch

from bigbatch.cluster.launch import launch
from bigbatch.trainer.data.source import TRACE_ENV
from bigbatch.trainer.recipe import load_recipe
from tests.images import write_packed_shards


def trained_labels(run_dir) -> Counter:
    seen = Counter()
    for trace in (run_dir / "trace").glob("labels.rank-*.txt"):
        for line in trace.read_text().splitlines():
            epoch, labels = line.split(":")
            seen.update((int(epoch), int(label)) for label in labels.split())
    return seen


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_shards_run_on_three_workers_resumes_mid_epoch_on_two_reading_each_example_once(
        ray_cluster, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(TRACE_ENV, "1")
    packed = write_packed_shards(tmp_path, 20_000, classes=48, per_class=1, val_per_class=1, size=(48, 64))
    keys = ["cluster.backend=torch", "cluster.workers=3", "cluster.min_workers=2", "cluster.max_failures=1",
            "data.name=shards", f"data.root={packed}", "data.image_size=16", "data.batch_size=5",
            "data.shuffle_buffer=6", "data.loader_workers=2", "train.log_every_steps=1",
            "train.eval_every_epochs=1", "train.epochs=2"]
    run_dir = tmp_path / "run"
    # 48 examples, global batch 3 x 5 = 15: 3 steps an epoch (45 examples). 3 workers of 0.5 CPU stop after
    # step 2 ...
    launch(load_recipe(tiny, [*keys, "cluster.cpus_per_worker=0.5", "train.max_steps=2"]), run_dir)
    # ... and the same run resumes where only 2 workers of 1 CPU fit: 8 and 7 a step, as 4 + 4 and 4 + 3
    summary = launch(load_recipe(tiny, [*keys, "cluster.cpus_per_worker=1.0", "train.max_steps=5"]), run_dir,
                     resume="auto")
    assert summary["step"] == 5 and summary["world_size"] == 2 and summary["global_batch"] == 15
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "loss" in r and "event" not in r}
    assert [steps[s]["world_size"] for s in range(1, 6)] == [3, 3, 2, 2, 2]
    assert {steps[s]["global_batch"] for s in steps} == {15}
    assert all(r["images_per_s_per_worker"] == pytest.approx(r["images_per_s"] / r["world_size"])
               for r in steps.values())
    evaluations = [r for r in records if "top1" in r and "event" not in r]  # at steps 2 (3 workers), 3 and 5
    assert [r["step"] for r in evaluations] == [2, 3, 5] and all(r["examples"] == 48 for r in evaluations)
    assert [steps[s]["accumulation_steps"] for s in (2, 3)] == [1, 2]
    seen = trained_labels(run_dir)
    assert len({label for epoch, label in seen if epoch == 0}) == 45  # the interrupted epoch's 3 x 15 ...
    assert all(count == 1 for (epoch, _), count in seen.items() if epoch == 0)  # ... once each
    assert sum(count for (epoch, _), count in seen.items() if epoch == 1) == 2 * 15  # steps 4-5, 15 each
    state = torch.load(run_dir / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert [(p["world_size"], p["global_batch"]) for p in state["data_reading"]["phases"]] == [(3, 0), (2, 15)]
