"""wandb from rank 0: an offline run holds the logged keys, resume continues the same run, a broken setup is
not fatal. The run file is read back with wandb's own protobuf records."""

import struct
import time

import pytest

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


def wandb_records(path) -> list:
    """The records of a .wandb file: a 7-byte header (':W&B', 0xBEE1, version), then LevelDB log blocks of
    32 KiB, each record a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) + data."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(raw):
        block_left = 32768 - offset % 32768
        if block_left < 7:  # block trailer
            offset += block_left
            continue
        _, length, kind = struct.unpack("<IHB", raw[offset:offset + 7])
        data = raw[offset + 7:offset + 7 + length]
        offset += 7 + length
        if (kind == 0 and length == 0) or len(data) < length:  # end, or a record still being written
            break
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def settled_records(path, timeout_s: float = 60) -> list:
    """The file's records once wandb's writer process has flushed the run's exit record (it writes after
    `finish()` returns)."""
    deadline = time.time() + timeout_s
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def run(tiny, run_dir, steps, resume=None, track="offline"):
    recipe = load_recipe(tiny, [f"track.wandb={track}", "track.project=bigbatch-tests", f"train.max_steps={steps}",
                                "train.log_every_steps=1", "train.eval_every_epochs=0"])
    return Trainer(recipe, run_dir, LocalCollective(), resume=resume).fit()


def run_files(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def test_an_offline_run_logs_history_and_summary_and_resume_continues_the_same_run(tiny, tmp_path):
    first = run(tiny, tmp_path / "r", 4)
    (path,) = run_files(tmp_path / "r")
    assert path.name == f"run-{first['run_id']}.wandb"  # bigbatch's run id is the wandb run id
    records = settled_records(path)
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 4 and all({"loss", "lr", "images_per_s", "grad_norm"} <= h.keys() for h in steps)
    summary_keys = {item.key for r in records if r.WhichOneof("record_type") == "summary"
                    for item in r.summary.update}
    assert {"top1", "best_top1", "elapsed_s", "world_size", "global_batch", "hardware"} <= summary_keys
    config = {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "run"
              for item in r.run.config.update}
    assert {"optim", "model", "data"} <= config
    resumed = run(tiny, tmp_path / "r", 6, resume="auto")
    assert resumed["run_id"] == first["run_id"]
    assert [p.name for p in run_files(tmp_path / "r")] == [path.name] * 2  # same id: the same wandb run resumed
    another = run(tiny, tmp_path / "new", 2)
    assert another["run_id"] != first["run_id"]


def test_a_broken_wandb_setup_warns_once_and_training_goes_on(tiny, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no netrc: online mode has no API key
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    summary = run(tiny, tmp_path / "r", 3, track="online")
    assert summary["status"] == "finished" and summary["step"] == 3
    err = capfd.readouterr().err
    assert err.count("wandb is off for this run") == 1 and "metrics.jsonl" in err


@pytest.mark.parametrize("env, expected", [({"WANDB_MODE": "offline"}, "offline"),
                                           ({"WANDB_MODE": "", "WANDB_API_KEY": "x" * 40}, "online")])
def test_auto_mode_follows_the_environment(monkeypatch, tmp_path, env, expected):
    from bigbatch.trainer.recipe.schema import TrackConfig
    from bigbatch.trainer.records.wandb_tracker import resolve_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_mode(TrackConfig()) == expected
    assert resolve_mode(TrackConfig(wandb="disabled")) == "disabled"


def test_a_restart_from_an_earlier_checkpoint_logs_the_replayed_steps_against_bigbatch_step(tiny, tmp_path):
    """wandb drops rows at a wandb step it has seen; rows carry bigbatch's step as the chart's x-axis metric
    instead, so a group that resumes from step 2 after logging to step 4 still shows steps 3 and 4 again."""
    recipe = load_recipe(tiny, ["track.wandb=offline", "track.project=bigbatch-tests", "train.max_steps=4",
                                "train.log_every_steps=1", "train.eval_every_epochs=0",
                                "train.checkpoint_every_steps=2", "train.keep_checkpoints=5"])
    Trainer(recipe, tmp_path / "s", LocalCollective()).fit()
    earlier = tmp_path / "s" / "checkpoints" / "step_00000002.pt"
    Trainer(recipe, tmp_path / "s", LocalCollective(), resume=str(earlier)).fit()
    first, second = run_files(tmp_path / "s")
    rows = []
    for path in (first, second):
        history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
                   for r in settled_records(path) if r.WhichOneof("record_type") == "history"]
        rows.append([int(h["step"]) for h in history if "loss" in h])
    assert rows == [[1, 2, 3, 4], [3, 4]]
    defined = {(r.metric.name or r.metric.glob_name, r.metric.step_metric) for r in settled_records(second)
               if r.WhichOneof("record_type") == "metric"}
    assert ("*", "step") in defined


def test_a_resize_is_an_event_in_the_history_at_its_step_and_in_the_summary(tiny, tmp_path):
    from bigbatch.trainer.records.wandb_tracker import WandbTracker

    recipe = load_recipe(tiny, ["track.wandb=offline", "track.project=bigbatch-tests"])
    tracker = WandbTracker(recipe.track, tmp_path, "resizerun", {})
    tracker.mark(3, "resize", "2 -> 1 workers (step 3: a worker left)", 1)
    tracker.finish()
    records = settled_records(run_files(tmp_path)[0])
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["step"], h["events/resize"]) for h in history if "events/resize" in h] == [("3", "1")]
    summary = {item.key or "/".join(item.nested_key): item.value_json for r in records
               if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert "2 -> 1 workers" in summary["events/resize"] and "step 3" in summary["events/resize"]
