"""The local dashboard's event files: what a run writes, and a resumed run continuing the same curves."""

import json
import statistics

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.records.tensorboard_tracker import scalars
from bigbatch.trainer.run.loop import Trainer


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return accumulator


def test_a_run_resumed_from_an_earlier_checkpoint_continues_the_same_curves_without_repeating_steps(tiny, tmp_path):
    out = tmp_path / "run"
    first_attempt = ["train.max_steps=7", "train.checkpoint_every_steps=4"]
    Trainer(load_recipe(tiny, first_attempt), out, LocalCollective()).fit()
    assert [e.step for e in events(out).Scalars("train/loss")] == [2, 4, 6, 7]  # log steps, and the last step
    # as after a crash past the checkpoint at step 4: steps 6 and 7 were logged, then lost
    Trainer(load_recipe(tiny), out, LocalCollective(), resume=str(out / "checkpoints" / "step_00000004.pt")).fit()
    board = events(out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    total = [r for r in records if r.get("event") == "start"][-1]["total_steps"]  # the resumed run's plan
    steps = [e.step for e in board.Scalars("train/loss")]
    assert steps == [2, 4, *range(6, total + 1, 2)]  # every log step once, the replayed ones from the resume
    top1 = board.Scalars("eval/top1")
    assert [e.step for e in top1] == sorted({e.step for e in top1})
    assert "recipe/text_summary" in board.Tags()["tensors"]  # the resolved recipe, as text


def test_tags_for_a_record_by_kind_and_worker_count():
    step = {"step": 10, "epoch": 0.5, "loss": 1.5, "lr": 0.1, "time": 1e9, "worker_step_s": [0.2, 0.3]}
    assert scalars(step) == {"train/epoch": 0.5, "train/loss": 1.5, "train/lr": 0.1,
                             "workers/worker_step_s/rank_0": 0.2, "workers/worker_step_s/rank_1": 0.3}
    evaluation = {"step": 20, "epoch": 1.0, "top1": 0.9, "top5": 1.0, "val_loss": 0.3, "examples": 360}
    assert scalars(evaluation) == {"eval/top1": 0.9, "eval/top5": 1.0, "eval/val_loss": 0.3}
    many = [0.001 * (rank % 97) for rank in range(1024)]  # W = 1,024: three curves, not 1,024
    tags = scalars({"step": 1, "worker_wait_s": many})
    assert tags == {"workers/worker_wait_s/min": min(many), "workers/worker_wait_s/max": max(many),
                    "workers/worker_wait_s/median": statistics.median(many)}
